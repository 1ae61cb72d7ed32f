"""Flax NNX modules holding jrnn params: a cell (:class:`RNNCell`) and a layer stack (:class:`RNN`).

The modules are thin: each keeps the pure params NamedTuple of ``cell.init`` (or of
``jrnn.rnn(...).init``) with every array wrapped in an ``nnx.Param`` (same structure, same field
names), and its ``__call__`` is the pure function applied to those params.
``module.params_tree()`` gives the pure params back and ``Module.from_params(...)`` wraps existing
ones, so a model moves between the functional and the module world without copying code::

    rnn = jrnn.flax.RNN(jrnn.lstm(64), 128, num_layers=2, rngs=nnx.Rngs(0))
    ys, carries = rnn(tokens, lengths=lengths)
    layer = jrnn.rnn(jrnn.lstm(64), num_layers=2)
    ys2, _ = layer.apply(rnn.params_tree(), tokens, lengths=lengths)   # the same values

Dropout follows NNX's mode switch: a module is built in training mode (``deterministic=False``,
as ``nnx.Dropout``); ``model.eval()`` / ``model.train()`` (or ``nnx.view(model,
deterministic=...)``) switch it. In training mode the dropout key is the ``key=`` argument of
the call if given, else the next key of the module's ``"dropout"`` rng stream (forked from the
``rngs`` given at construction; only stored when some dropout rate is non-zero). Nothing random
is stored in params or carries. Importing this module imports flax; ``import jrnn`` does not.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jrnn
from jrnn._src import cell as cell_lib
from jrnn._src import unroll as unroll_lib
from jrnn._src.cell import Array, Cell, check_positive_int
from jrnn._src.layers import RNNParams

__all__ = [
    "CELL_NAMES",
    "RNN",
    "RNNCell",
    "check_tokens",
    "dropout",
    "make_cell",
    "to_arrays",
    "to_params",
]

CELL_NAMES = ("lstm", "gru", "elman", "seed_rnn", "min_gru", "min_lstm")
"""The cell names ``make_cell`` accepts (each a factory in ``jrnn``)."""


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def to_params(tree: Any) -> Any:
    """Wraps every array leaf of a pure params pytree in an ``nnx.Param`` (structure kept).

    Example:
      >>> import jax, jrnn, jrnn.flax
      >>> p = jrnn.gru(4).init(jax.random.key(0), 3)
      >>> type(jrnn.flax.to_params(p).w_ih).__name__
      'Param'
    """
    return jax.tree.map(nnx.Param, tree)


def to_arrays(tree: Any) -> Any:
    """The inverse of :func:`to_params`: every ``nnx.Variable`` replaced by its array value.

    Example:
      >>> import jax, jrnn, jrnn.flax
      >>> p = jrnn.gru(4).init(jax.random.key(0), 3)
      >>> bool((jrnn.flax.to_arrays(jrnn.flax.to_params(p)).w_hh == p.w_hh).all())
      True
    """
    return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=_is_variable)


def make_cell(spec: Any, hidden_size: int, *, dtype: Any = None, **kwargs: Any) -> Cell:
    """A :class:`jrnn.Cell` from a name, a dict of factory arguments, or a Cell.

    Args:
      spec: ``"lstm" | "gru" | "elman" | "seed_rnn" | "min_gru" | "min_lstm"`` (the factory of
        that name, called as ``jrnn.<name>(hidden_size, dtype=dtype, **kwargs)``); a mapping
        ``{"name": "lstm", **factory_kwargs}`` (e.g. ``{"name": "lstm", "layer_norm": True}``);
        or a ready :class:`jrnn.Cell`, returned as is (``hidden_size``/``dtype`` ignored).
      hidden_size: h.
      dtype: compute dtype passed to the factory (e.g. ``jnp.bfloat16``); None keeps its default.
      **kwargs: more factory arguments.

    Returns:
      The cell.

    Raises:
      ValueError: unknown name, or a cell family this jrnn version does not have.

    Example:
      >>> import jrnn.flax
      >>> jrnn.flax.make_cell({"name": "gru", "reset_after": False}, 8).hidden_size
      8
    """
    if isinstance(spec, Cell):
        return spec
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"a cell spec mapping needs a 'name' key, got keys {sorted(spec)}")
        name = spec.pop("name")
        kwargs = {**spec, **kwargs}
    elif isinstance(spec, str):
        name = spec
    else:
        raise TypeError(
            f"cell must be a name {CELL_NAMES}, a mapping with 'name', or a jrnn.Cell, "
            f"got {type(spec).__name__}"
        )
    if name not in CELL_NAMES:
        raise ValueError(f"cell must be one of {CELL_NAMES}, got {name!r}")
    factory = getattr(jrnn, name, None)
    if factory is None:
        raise ValueError(
            f"cell {name!r} is not available in this jrnn version (it needs "
            "jrnn._src.cells.linear); use one of 'lstm', 'gru', 'elman', 'seed_rnn'"
        )
    if dtype is not None and "dtype" in inspect.signature(factory).parameters:
        kwargs.setdefault("dtype", dtype)
    return factory(hidden_size, **kwargs)


def check_tokens(tokens: Any, vocab_size: int, name: str = "tokens") -> Array:
    """Integer tokens ``[b..., t]`` in ``[0, vocab_size)``; checked on values when concrete.

    Under ``jit`` (traced values) an out-of-range token cannot be checked here; the row gather
    of the input weights then gives NaN (never a silent zero vector).
    """
    if not hasattr(tokens, "dtype"):
        tokens = np.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.dtype == jnp.bool_:
        raise TypeError(
            f"{name} must be integer token ids in [0, {vocab_size}), got dtype {tokens.dtype}"
        )
    try:
        values = np.asarray(tokens)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        values = None
    if values is not None and values.size and (values.min() < 0 or values.max() >= vocab_size):
        raise ValueError(
            f"{name} must lie in [0, {vocab_size}) (the vocabulary), got values in "
            f"[{values.min()}, {values.max()}]; map bytes >= 128 first (jrnn.data.to_ascii)"
        )
    return jnp.asarray(tokens)


class RNNCell(nnx.Module):
    """One :class:`jrnn.Cell` with its params as ``nnx.Param``.

    ``module(carry, x)`` (alias ``module.step``) equals ``cell.step(params, carry, x)``.

    Args:
      cell: the cell (e.g. ``jrnn.lstm(64)``).
      input_size: i (one-hot depth for integer tokens).
      rngs: ``nnx.Rngs``; the ``params`` stream initialises the weights.
      params: existing pure params to wrap instead of initialising (``rngs`` then optional).

    Attributes:
      cell: the cell.
      input_size: i.
      params: ``cell.init``'s NamedTuple with ``nnx.Param`` leaves.

    Example:
      >>> import jax.numpy as jnp, jrnn, jrnn.flax
      >>> from flax import nnx
      >>> m = jrnn.flax.RNNCell(jrnn.lstm(8), 3, rngs=nnx.Rngs(0))
      >>> carry, y = m(m.initial_carry(2), jnp.ones((2, 3)))
      >>> y.shape
      (2, 8)
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        *,
        rngs: nnx.Rngs | None = None,
        params: Any = None,
    ):
        self.cell = unroll_lib.check_cell(cell)
        self.input_size = check_positive_int(input_size, "input_size")
        if params is None:
            if rngs is None:
                raise ValueError("RNNCell needs rngs=nnx.Rngs(...) (or params=) to initialise")
            params = self.cell.init(rngs.params(), self.input_size)
        else:
            expected = jax.eval_shape(
                lambda k: self.cell.init(k, self.input_size), jax.random.key(0)
            )
            what = f"the cell {cell_lib.describe_cell(self.cell)} with input_size {input_size}"
            _check_like(params, expected, "params", what)
        self.params = nnx.data(to_params(params))

    @classmethod
    def from_params(cls, cell: Cell, params: Any) -> RNNCell:
        """Wraps existing pure ``params`` of ``cell`` (input size read from ``w_ih``)."""
        return cls(cell, unroll_lib.input_size(params), params=params)

    def params_tree(self) -> Any:
        """The pure params NamedTuple (arrays), as ``cell.init`` returns it."""
        return to_arrays(self.params)

    def initial_carry(self, batch_shape: Any) -> Any:
        """``cell.initial_carry(batch_shape)``: float32 zeros."""
        return self.cell.initial_carry(batch_shape)

    def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
        """One step: ``cell.step(params, carry, x) -> (carry, y)``."""
        return self.cell.step(self.params_tree(), carry, x)

    def step(self, carry: Any, x: Array) -> tuple[Any, Array]:
        """Alias of ``__call__``."""
        return self(carry, x)

    def unroll(self, xs: Any, carry: Any = None, **kwargs: Any):
        """``jrnn.unroll(cell, params, xs, carry, **kwargs) -> (carry, ys)``."""
        return jrnn.unroll(self.cell, self.params_tree(), xs, carry, **kwargs)


class RNN(nnx.Module):
    """A :func:`jrnn.rnn` stack (multi-layer, optionally bidirectional) with ``nnx.Param`` params.

    ``module(xs, carries, lengths=..., key=...)`` equals ``layer.apply(params, xs, carries,
    lengths=..., key=...)`` with ``layer = jrnn.rnn(cell, num_layers, bidirectional, dropout,
    **layer_kwargs)``; in evaluation mode (``module.eval()``) the key is not used.

    Args:
      cell: the cell of every layer.
      input_size: i of the first layer (one-hot depth for integer tokens).
      num_layers: stacked layers.
      bidirectional: run both directions (outputs concatenated unless ``merge="sum"``).
      dropout: inter-layer dropout (on the inputs of layers 2..n, as PyTorch).
      rngs: ``nnx.Rngs``; ``params`` initialises the weights, ``dropout`` (falling back to
        ``default``) seeds the module's dropout stream when a dropout rate is non-zero.
      params: existing :class:`jrnn.RNNParams` to wrap instead of initialising.
      deterministic: start in evaluation mode (default: training mode, as ``nnx.Dropout``).
      backend: default backend of ``__call__`` (``"auto" | "xla" | "reference" | ...``).
      **layer_kwargs: more :func:`jrnn.rnn` options (``merge``, ``variational``,
        ``input_dropout``, ``recurrent_dropout``, ``zoneout``, ``remat``).

    Attributes:
      layer: the pure :class:`jrnn.Layer`.
      params: ``RNNParams`` with ``nnx.Param`` leaves (``first``; ``rest`` stacked).
      output_size: feature size of the outputs.

    Example:
      >>> import jax.numpy as jnp, jrnn, jrnn.flax
      >>> from flax import nnx
      >>> m = jrnn.flax.RNN(jrnn.gru(8), 128, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
      >>> ys, carries = m(jnp.zeros((2, 5), jnp.int32), lengths=jnp.array([5, 3]))
      >>> ys.shape, carries.shape
      ((2, 5, 16), (2, 2, 2, 8))
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs | None = None,
        params: RNNParams | None = None,
        deterministic: bool = False,
        backend: str = "auto",
        **layer_kwargs: Any,
    ):
        self.layer = jrnn.rnn(cell, num_layers, bidirectional, dropout, **layer_kwargs)
        self.input_size = check_positive_int(input_size, "input_size")
        self.backend = unroll_lib.check_backend(backend)
        self.deterministic = bool(deterministic)
        rates = [dropout] + [
            layer_kwargs.get(k, 0.0) for k in ("input_dropout", "recurrent_dropout", "zoneout")
        ]
        self.stochastic = any(float(r) > 0.0 for r in rates)
        if params is None:
            if rngs is None:
                raise ValueError("RNN needs rngs=nnx.Rngs(...) (or params=) to initialise")
            params = self.layer.init(rngs.params(), self.input_size)
        else:
            if not isinstance(params, RNNParams):
                raise TypeError(f"params must be jrnn.RNNParams, got {type(params).__name__}")
            expected = jax.eval_shape(
                lambda k: self.layer.init(k, self.input_size), jax.random.key(0)
            )
            what = (
                f"jrnn.rnn({cell_lib.describe_cell(cell)}, num_layers={num_layers}, "
                f"bidirectional={bool(bidirectional)}) with input_size {input_size}"
            )
            _check_like(params, expected, "params", what)
        self.params = nnx.data(to_params(params))
        if self.stochastic and rngs is not None:
            self.rngs = rngs.dropout.fork()
        else:
            self.rngs = nnx.data(None)

    @classmethod
    def from_params(
        cls,
        cell: Cell,
        params: RNNParams,
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs | None = None,
        **kwargs: Any,
    ) -> RNN:
        """Wraps existing :class:`jrnn.RNNParams`; input size, depth and directions are read
        from their shapes (``first.w_ih`` is ``[(2,) i, g]``, ``rest`` leads with n - 1)."""
        if not isinstance(params, RNNParams):
            raise TypeError(f"params must be jrnn.RNNParams, got {type(params).__name__}")
        w = params.first.w_ih
        bidirectional = w.ndim == 3
        num_layers = 1 if params.rest is None else 1 + int(params.rest.w_ih.shape[0])
        return cls(
            cell,
            int(w.shape[-2]),
            num_layers,
            bidirectional,
            dropout,
            rngs=rngs,
            params=params,
            **kwargs,
        )

    @property
    def output_size(self) -> int:
        """Feature size of the outputs (2 * cell output size when bidirectional and concat)."""
        return self.layer.output_size

    def params_tree(self) -> RNNParams:
        """The pure :class:`jrnn.RNNParams` (arrays), as ``layer.init`` returns it."""
        return to_arrays(self.params)

    def initial_carries(self, batch_shape: Any) -> Any:
        """Zero carries, leaves ``[num_layers, (2,) b..., size]``."""
        return self.layer.initial_carries(batch_shape)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = bool(deterministic)

    def dropout_key(self, key: Array | None, deterministic: bool | None) -> Array | None:
        """The key for this call's dropout, or None when the call is deterministic."""
        det = self.deterministic if deterministic is None else bool(deterministic)
        if det or not self.stochastic:
            return None
        if key is not None:
            return key
        if self.rngs is None:
            raise ValueError(
                "training-mode dropout needs randomness: pass key=..., build the module with "
                "rngs=nnx.Rngs(...), or switch to evaluation with model.eval()"
            )
        return self.rngs()

    def __call__(
        self,
        xs: Any,
        carries: Any = None,
        *,
        lengths: Any = None,
        key: Array | None = None,
        deterministic: bool | None = None,
        backend: str | None = None,
        resets: Any = None,
        time_major: bool = False,
        unroll: int = 1,
    ) -> tuple[Array, Any]:
        """Runs the stack: ``layer.apply(params, xs, carries, ...) -> (ys, carries)``.

        Args:
          xs: float ``[b..., t, i]`` or integer tokens ``[b..., t]``.
          carries: initial carries (leaves ``[num_layers, (2,) b..., size]``); zeros if None.
          lengths: int ``[b...]``, exact masking as in :func:`jrnn.unroll`.
          key: dropout key for this call (training mode only); default: the module's stream.
          deterministic: overrides the module's mode for this call.
          backend: overrides the module's backend.
          resets: bool ``[b..., t]`` packed-sequence restarts.
          time_major: time axis first.
          unroll: scan unroll factor.

        Returns:
          ``(ys [b..., t, output_size], carries)``.
        """
        return self.layer.apply(
            self.params_tree(),
            xs,
            carries,
            lengths=lengths,
            key=self.dropout_key(key, deterministic),
            backend=self.backend if backend is None else backend,
            resets=resets,
            time_major=time_major,
            unroll=unroll,
        )


def _check_like(params: Any, expected: Any, name: str, what: str) -> None:
    """Raises unless ``params`` has the structure and shapes of ``expected``; ``what`` names
    the cell or layer in the message."""
    params = jax.tree.map(
        lambda v: v.get_value() if _is_variable(v) else v, params, is_leaf=_is_variable
    )
    if cell_lib.mismatch(params, expected):
        raise ValueError(
            f"{name}: got {cell_lib.describe_tree(params)} but {what} expects "
            f"{cell_lib.describe_tree(expected)}"
        )


def dropout(x: Array, rate: float, key: Array | None) -> Array:
    """Inverted dropout of ``x`` with ``rate``; the identity when ``key`` is None or rate is 0.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn.flax
      >>> jrnn.flax.dropout(jnp.ones(3), 0.5, None).tolist()
      [1.0, 1.0, 1.0]
    """
    if key is None or not rate:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
