"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"``, no pmap.

The global batch is split along its leading dimension over every device of the mesh; the
parameters are either replicated (``"replicated"``, the default) or sharded FSDP-style
(``"fsdp"``: the largest axis of each big array that the device count divides is split over
``"data"``). Either way the train step is one ``jax.jit`` program and XLA inserts the gradient
all-reduce (or reduce-scatter / all-gather for FSDP).

Multi-host: every process builds the same mesh over all ``jax.devices()`` and feeds only its own
rows of the global batch; :func:`shard_batch` assembles them with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
PARAM_SHARDINGS = ("replicated", "fsdp")


def initialize_distributed(**kwargs: Any) -> None:
    """Starts JAX's multi-process runtime (``jax.distributed.initialize``), once.

    On a TPU pod slice, SLURM or Open MPI the coordinator, process count and process id are
    detected from the environment; elsewhere pass ``coordinator_address``, ``num_processes``
    and ``process_id`` (forwarded unchanged). Call it before any other JAX call. A second call
    is a no-op.

    Args:
      **kwargs: forwarded to ``jax.distributed.initialize``.

    Example:
      >>> from jrnn import train
      >>> train.initialize_distributed()  # doctest: +SKIP
    """
    if _distributed_initialized():
        return
    jax.distributed.initialize(**kwargs)


def _distributed_initialized() -> bool:
    try:
        from jax._src import distributed

        return distributed.global_state.client is not None
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return False


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all hosts).

    Args:
      devices: the devices to use, in order; None for ``jax.devices()``.

    Returns:
      A ``jax.sharding.Mesh`` of shape ``{"data": len(devices)}``.

    Example:
      >>> from jrnn import train
      >>> mesh = train.make_mesh()
      >>> mesh.axis_names
      ('data',)
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device, got an empty sequence")
    for d in devices:
        if not isinstance(d, jax.Device):
            raise TypeError(f"devices must be jax.Device objects, got {type(d).__name__}")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def check_mesh(mesh: Any) -> Mesh:
    """Returns ``mesh`` (or a new default mesh for None) after checking it has a data axis."""
    if mesh is None:
        return make_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see make_mesh), got {type(mesh)}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named 'data', got axes {mesh.axis_names}")
    return mesh


def data_size(mesh: Mesh) -> int:
    """Number of devices along the mesh's ``"data"`` axis."""
    return int(mesh.shape[DATA_AXIS])


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """Raises a ValueError unless the global ``batch_size`` divides evenly over the mesh."""
    n = data_size(mesh)
    if batch_size % n:
        raise ValueError(
            f"{name}={batch_size} is not divisible by the {n} devices of the 'data' mesh axis; "
            f"use a global batch size that is a multiple of {n} "
            f"(e.g. {n * max(1, batch_size // n)})"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis split over ``"data"``, the others whole (a scalar is replicated)."""
    if ndim == 0:
        return replicated(mesh)
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def fsdp_spec(shape: Sequence[int], num_shards: int, min_size: int = 2**14) -> PartitionSpec:
    """FSDP rule for one array: split its largest axis divisible by ``num_shards`` over "data".

    Arrays with fewer than ``min_size`` elements, and arrays no axis of which ``num_shards``
    divides, stay replicated. The rule looks only at the shape, so optimizer moments get the
    same sharding as their parameters.
    """
    shape = tuple(int(d) for d in shape)
    if num_shards <= 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    order = sorted(range(len(shape)), key=lambda a: (-shape[a], a))
    for axis in order:
        if shape[axis] % num_shards == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(
    tree: Any, mesh: Mesh, param_sharding: str = "replicated", min_size: int = 2**14
) -> Any:
    """Shardings for a pytree of parameters or optimizer state (same structure as ``tree``).

    Args:
      tree: a pytree of arrays (or ``jax.ShapeDtypeStruct``).
      mesh: the mesh.
      param_sharding: ``"replicated"`` or ``"fsdp"``.
      min_size: for ``"fsdp"``, arrays smaller than this many elements stay replicated.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``tree``.
    """
    if param_sharding not in PARAM_SHARDINGS:
        raise ValueError(f"param_sharding must be one of {PARAM_SHARDINGS}, got {param_sharding!r}")
    n = data_size(mesh)

    def one(x):
        if param_sharding == "replicated" or not hasattr(x, "shape"):
            return replicated(mesh)
        return NamedSharding(mesh, fsdp_spec(x.shape, n, min_size))

    return jax.tree.map(one, tree)


def shard_batch(batch: Any, mesh: Mesh | None = None) -> Any:
    """Places a batch on the mesh, leading axis split over ``"data"``.

    Single process: ``batch`` is the global batch. Several processes: ``batch`` is this
    process's rows only (from a data iterator called with ``shard_index=jax.process_index(),
    shard_count=jax.process_count()``) and the global array is assembled with
    ``jax.make_array_from_process_local_data``; the global batch is ``process_count`` times
    the local one.

    Args:
      batch: a pytree (usually a dict) of arrays with leading dimension b (local rows);
        0-d leaves are replicated.
      mesh: the mesh; None for :func:`make_mesh`'s default.

    Returns:
      The same pytree of ``jax.Array`` sharded over the mesh.

    Raises:
      ValueError: if the leaves disagree on b or the global b is not divisible by the number
        of devices.

    Example:
      >>> import numpy as np
      >>> from jrnn import train
      >>> mesh = train.make_mesh()
      >>> x = train.shard_batch({"x": np.zeros((8, 3), np.float32)}, mesh)["x"]
      >>> x.shape
      (8, 3)
    """
    mesh = check_mesh(mesh)
    leaves = jax.tree.leaves(batch)
    sizes = {int(np.shape(x)[0]) for x in leaves if np.ndim(x) > 0}
    if len(sizes) > 1:
        raise ValueError(
            f"batch leaves must share their leading (batch) dimension, got sizes {sorted(sizes)}"
        )
    nproc = jax.process_count()
    if sizes:
        check_batch_size(sizes.pop() * nproc, mesh, name="global batch size")

    def put(x):
        if isinstance(x, jax.Array) and x.is_fully_addressable is False:
            return x  # already a global array
        sharding = batch_sharding(mesh, np.ndim(x))
        if nproc == 1:
            return jax.device_put(x, sharding)
        if np.ndim(x) == 0:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x), ())
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, batch)


def process_rows(batch: Any) -> Any:
    """This process's rows of a global batch (for data sources without shard arguments).

    Process ``i`` of ``n`` keeps rows ``[i * b, (i + 1) * b)`` of every leaf, ``b = B // n``:
    the layout :func:`shard_batch` expects. With one process the batch comes back unchanged.

    Args:
      batch: a pytree of arrays with the global batch ``B`` as leading dimension (0-d leaves
        are kept whole).

    Returns:
      The same pytree holding this process's rows.

    Example:
      >>> import numpy as np
      >>> from jrnn import train
      >>> train.process_rows({"x": np.arange(4)})["x"].tolist()  # one process: all rows
      [0, 1, 2, 3]
    """
    n, i = jax.process_count(), jax.process_index()
    if n == 1:
        return batch

    def rows(x):
        if np.ndim(x) == 0:
            return x
        b = np.shape(x)[0]
        if b % n:
            raise ValueError(f"global batch size={b} is not divisible by the {n} processes")
        return x[i * (b // n) : (i + 1) * (b // n)]

    return jax.tree.map(rows, batch)


def carry_placer(init_carry: Callable[[int], Any] | None, mesh: Mesh) -> Callable[[int], Any]:
    """``init_carry`` whose arrays are placed on the mesh, batch axis split over "data".

    The batch axis of a carry leaf is its first axis of size b (jrnn.rnn carries are
    ``[layers, (2,) b, h]``); leaves without one are replicated.
    """

    def make(b: int) -> Any:
        if init_carry is None:
            return None

        def put(x):
            shape = np.shape(x)
            spec = [None] * len(shape)
            if b in shape and b % data_size(mesh) == 0:
                spec[shape.index(b)] = DATA_AXIS
            sharding = NamedSharding(mesh, PartitionSpec(*spec))
            if jax.process_count() == 1:
                return jax.device_put(x, sharding)
            return jax.make_array_from_callback(shape, sharding, lambda idx: np.asarray(x)[idx])

        return jax.tree.map(put, init_carry(b))

    return make


def describe_sharding(tree: Any) -> str:
    """One line per leaf: its path, shape and ``PartitionSpec`` (to check what is sharded)."""
    lines = []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        sharding = getattr(x, "sharding", None)
        spec = getattr(sharding, "spec", sharding)
        lines.append(f"{jax.tree_util.keystr(path)}: {tuple(np.shape(x))} {spec}")
    return "\n".join(lines)
