"""Multi-layer and bidirectional networks of a cell, as pure functions.

``jrnn.rnn(cell, num_layers, bidirectional, dropout, ...)`` returns a :class:`Layer`
``(init, apply, initial_carries)``. Design points:

* The first layer is separate (its input size differs); layers 2..n have stacked parameters
  (leading axis ``n - 1``). From :data:`SCAN_LAYERS_FROM` layers on they run as one ``lax.scan``
  over layers, so compile time does not grow with depth; shallower stacks call each layer in
  turn, which compiles as fast and runs faster (no stacking of the layers' saved activations
  into the scan's zero-initialised output buffers).
* A bidirectional layer runs both directions in one time loop: the backward direction's inputs
  are flipped in time and both directions are ``vmap``-ed over a leading direction axis of size
  2 (params and carries). Flipping a masked sequence and scanning forward is the same as a
  length-aware reverse scan: padding comes first and leaves the carry untouched.
* Carries are one pytree whose leaves are ``[num_layers, (2,) b..., ...]``.
* Randomness comes only from the ``key`` argument of ``apply``; nothing random is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src import tree
from jrnn._src import unroll as unroll_lib
from jrnn._src.cell import Array, Cell

# Stacks of this many layers or more run layers 2..n as one lax.scan; shallower ones call the
# layers in turn. Measured (LSTM train step, hidden 128, T 64, batch 8): compile 0.83 / 1.01 s
# for 2 / 3 layers called in turn against 0.89 / 1.13 s scanned, 1.10 against 1.01 s at 4;
# the 3-layer seed-size step on the CPU kernel 1092-1098 ms against 1180-1198 ms scanned.
SCAN_LAYERS_FROM = 4


class RNNParams(NamedTuple):
    """Parameters of a :func:`rnn` stack.

    Attributes:
      first: the first layer's cell params (leaves with a leading direction axis of size 2 when
        bidirectional).
      rest: layers 2..n, the cell params with leaves stacked on a leading axis of size
        ``num_layers - 1`` (then the direction axis), or None for one layer.
    """

    first: Any
    rest: Any = None


class Layer(NamedTuple):
    """A stack of recurrent layers: pure ``init`` and ``apply``.

    Attributes:
      init: ``init(key, input_size) -> RNNParams``.
      apply: ``apply(params, xs, carries=None, *, lengths=None, key=None, backend="auto",
        resets=None, time_major=False, unroll=1, deterministic=None) -> (ys, carries)``.
        ``deterministic=None`` (default): training-mode dropout exactly when a ``key`` is given
        (``key=None`` is evaluation); ``True``: evaluation, the key is ignored; ``False``:
        training mode, and a stack with any dropout or zoneout raises ValueError without a
        key instead of silently running deterministic. ``key`` is a ``jax.random.key(seed)``
        or a legacy ``jax.random.PRNGKey(seed)`` (the same seed gives the same masks).
      initial_carries: ``initial_carries(batch_shape) -> carries`` (zeros).
      cell: the cell.
      num_layers: number of layers.
      bidirectional: whether each layer runs both directions.
      output_size: feature size of ``ys``.
    """

    init: Callable[..., RNNParams]
    apply: Callable[..., tuple[Array, Any]]
    initial_carries: Callable[..., Any]
    cell: Cell
    num_layers: int
    bidirectional: bool
    output_size: int


def _check_rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def _keep_mask(key: Array, rate: float, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Inverted-dropout multiplier: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def _regularised_cell(cell: Cell, recurrent_dropout: float, zoneout: float, training: bool) -> Cell:
    """The cell with recurrent (variational) dropout and/or zoneout.

    Its per-step input is ``(xp_t, noise_t)``: ``noise_t`` holds, per carry leaf, the state
    dropout multiplier (shared over time) and the zoneout draw, precomputed from the key.
    """
    if not (recurrent_dropout or zoneout):
        return cell

    def input_projection(params, xs):
        x, noise = xs
        return cell.input_projection(params, x), noise

    def recurrence(params, carry, xp):
        xp_t, (state_mask, zone_u) = xp
        h_in = carry if state_mask is None else jax.tree.map(jnp.multiply, carry, state_mask)
        new, y = cell.gates(params, carry, xp_t, cell.hidden_projection(params, h_in))
        # Cells whose output *is* their first state leaf (lstm, gru, elman, ...) return the very
        # same array object; their output then follows the zoned-out state.
        y_is_state = y is jax.tree.leaves(new)[0]
        if zoneout:
            if training:
                new = jax.tree.map(
                    lambda u, old, n: jnp.where(u < zoneout, old, n), zone_u, carry, new
                )
            else:
                new = jax.tree.map(lambda old, n: zoneout * old + (1.0 - zoneout) * n, carry, new)
            if y_is_state:
                y = jax.tree.leaves(new)[0]
        return new, y

    def step(params, carry, x):
        return recurrence(params, carry, input_projection(params, x))

    return cell._replace(
        step=step,
        input_projection=input_projection,
        recurrence=recurrence,
        name=f"{cell.name}+regularised",
        linear=None,
    )


def rnn(
    cell: Cell,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    *,
    merge: str = "concat",
    variational: bool = False,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    remat: Any = False,
) -> Layer:
    """A multi-layer, optionally bidirectional, recurrent network of ``cell``.

    Args:
      cell: the cell of every layer.
      num_layers: number of stacked layers.
      bidirectional: run each layer forward and backward (length-aware) and merge the two.
      dropout: dropout on the inputs of layers 2..n (not after the last layer, as PyTorch).
      merge: how a bidirectional layer combines its directions: ``"concat"`` (feature size
        2o) or ``"sum"``.
      variational: draw the ``dropout`` and ``input_dropout`` masks once per sequence and share
        them across time steps (Gal & Ghahramani 2016) instead of per step.
      input_dropout: dropout on the first layer's float inputs (tokens: not supported).
      recurrent_dropout: variational dropout on the state fed to the recurrent matmul (one mask
        per sequence and layer).
      zoneout: probability of keeping each unit of the previous carry (Krueger et al. 2017); in
        evaluation the carry is the expectation ``p * old + (1 - p) * new``.
      remat: the checkpointing policy of each layer: False/None/``"none"`` (keep everything),
        True/``"layer"`` (``jax.checkpoint`` per layer: the backward pass recomputes one layer at a
        time), an int k (keep the carry every k steps, recompute chunks of k steps) or
        ``"sqrt"`` (k = ceil(sqrt(t))). The last two bound memory for very long sequences.

    Randomness comes only from ``apply``'s ``key`` (typed or legacy): ``key=None`` means
    evaluation (no dropout, zoneout as its expectation). Pass ``deterministic=False`` to make
    training mode explicit: without a key it then raises instead of silently running without
    dropout; ``deterministic=True`` ignores a key.

    Returns:
      A :class:`Layer`.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> net = jrnn.rnn(jrnn.lstm(16), num_layers=2, bidirectional=True)
      >>> params = net.init(jax.random.key(0), 128)
      >>> ys, carries = net.apply(params, jnp.zeros((4, 10), jnp.int32))
      >>> ys.shape, carries[0].shape
      ((4, 10, 32), (2, 2, 4, 16))
    """
    cell = unroll_lib.check_cell(cell)
    num_layers = cell_lib.check_positive_int(num_layers, "num_layers")
    if merge not in ("concat", "sum"):
        raise ValueError(f"merge must be 'concat' or 'sum', got {merge!r}")
    dropout = _check_rate(dropout, "dropout")
    input_dropout = _check_rate(input_dropout, "input_dropout")
    recurrent_dropout = _check_rate(recurrent_dropout, "recurrent_dropout")
    zoneout = _check_rate(zoneout, "zoneout")
    layer_remat = remat is True or remat == "layer"
    time_remat = None if layer_remat else unroll_lib.check_remat(remat)
    bidirectional = bool(bidirectional)
    dirs = 2 if bidirectional else 1
    out_size = cell.output_size * (2 if bidirectional and merge == "concat" else 1)

    def init_layer(key, in_size):
        if not bidirectional:
            return cell.init(key, in_size)
        return tree.stack([cell.init(k, in_size) for k in jax.random.split(key, 2)])

    stochastic = bool(dropout or input_dropout or recurrent_dropout or zoneout)
    description = _describe_layer(
        cell, num_layers, bidirectional, dropout, merge, input_dropout, recurrent_dropout, zoneout
    )
    expected_params: dict[int, Any] = {}

    def check_params(params: Any) -> None:
        """Raises unless ``params`` are what ``init`` makes (cell, sizes, depth, directions)."""
        first = getattr(params, "first", None)
        size = cell_lib.params_input_size(first)
        if size is not None and size not in expected_params:
            expected_params[size] = jax.eval_shape(lambda: init(jax.random.key(0), size))
        expected = expected_params.get(size)
        if (
            not isinstance(params, RNNParams)
            or expected is None
            or cell_lib.mismatch(params, expected)
        ):
            if expected is None:
                want = cell_lib.describe_tree(jax.eval_shape(lambda: init(jax.random.key(0), 1)))
                want = want.replace("w_ih [1,", "w_ih [input_size,").replace(
                    "w_ih [2, 1,", "w_ih [2, input_size,"
                )
            else:
                want = cell_lib.describe_tree(expected)
            error = ValueError if isinstance(params, RNNParams) else TypeError
            raise error(
                f"params: got {cell_lib.describe_tree(params)} but the layer {description} "
                f"expects {want} (what its init(key, input_size) makes)"
            )
        for leaf in jax.tree.leaves(params):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise TypeError(f"params leaves must be float arrays, got {jnp.result_type(leaf)}")

    def init(key: Array, input_size: int) -> RNNParams:
        input_size = cell_lib.check_positive_int(input_size, "input_size")
        keys = jax.random.split(cell_lib.as_key(key), num_layers)
        first = init_layer(keys[0], input_size)
        rest = None
        if num_layers > 1:
            rest = tree.stack([init_layer(k, out_size) for k in keys[1:]])
        return RNNParams(first, rest)

    def initial_carries(batch_shape) -> Any:
        batch = cell_lib.batch_tuple(batch_shape)
        one = cell.initial_carry(batch)
        lead = (num_layers, dirs) if bidirectional else (num_layers,)
        return jax.tree.map(lambda a: jnp.zeros(lead + a.shape, a.dtype), one)

    def run_layer(p, x_tm, carry0, mask, resets, key, backend, unroll, training, batch):
        """One layer (both directions) on time-major input; returns (y_tm, carry)."""
        steps = jax.tree.leaves(x_tm)[0].shape[0]
        active = cell
        noise = None
        if recurrent_dropout or zoneout:
            active = _regularised_cell(cell, recurrent_dropout, zoneout, training)
            k_state, k_zone = jax.random.split(key) if training else (None, None)
            leaves = cell.initial_carry(batch)
            state_mask = None
            if recurrent_dropout and training:
                ks = jax.random.split(k_state, dirs * len(jax.tree.leaves(leaves)))
                it = iter(ks)
                state_mask = jax.tree.map(
                    lambda a: jnp.stack(
                        [
                            _keep_mask(next(it), recurrent_dropout, a.shape, a.dtype)
                            for _ in range(dirs)
                        ]
                    ),
                    leaves,
                )
            zone_u = None
            if zoneout and training:
                kz = iter(jax.random.split(k_zone, len(jax.tree.leaves(leaves))))
                zone_u = jax.tree.map(
                    lambda a: jax.random.uniform(next(kz), (dirs, steps, *a.shape)), leaves
                )
            noise = (state_mask, zone_u)

        def one_direction(pd, xd, cd, md, rd, nd):
            xs = xd if noise is None else (xd, _time_major_noise(nd, steps))
            carry, ys, _ = unroll_lib.run_time_major(
                active,
                pd,
                xs,
                cd,
                mask=md,
                resets=rd,
                reverse=False,
                unroll=unroll,
                backend=backend,
                remat=time_remat,
            )
            return carry, ys

        if not bidirectional:
            nd = None if noise is None else jax.tree.map(lambda a: a[0], noise)
            carry, ys = one_direction(p, x_tm, carry0, mask, resets, nd)
            return ys, carry
        flip = lambda a: None if a is None else jnp.flip(a, 0)  # noqa: E731
        x2 = jax.tree.map(lambda a: jnp.stack([a, jnp.flip(a, 0)]), x_tm)
        m2 = None if mask is None else jnp.stack([mask, flip(mask)])
        r2 = None
        if resets is not None:
            r2 = jnp.stack([resets, flip(unroll_lib.reverse_resets(resets))])
        carry, ys = jax.vmap(one_direction)(p, x2, carry0, m2, r2, noise)
        y_f, y_b = ys[0], jnp.flip(ys[1], 0)
        y = jnp.concatenate([y_f, y_b], axis=-1) if merge == "concat" else y_f + y_b
        return y, carry

    def apply(
        params: RNNParams,
        xs: Any,
        carries: Any = None,
        *,
        lengths: Any = None,
        key: Array | None = None,
        backend: str = "auto",
        resets: Any = None,
        time_major: bool = False,
        unroll: int = 1,
        deterministic: bool | None = None,
    ):
        """Runs the stack; see :func:`rnn` and :class:`Layer`. Returns ``(ys, carries)``."""
        check_params(params)
        if deterministic is not None:
            deterministic = cell_lib.check_bool(deterministic, "deterministic")
        if key is not None:
            key = cell_lib.as_key(key)
        if deterministic:
            key = None
        elif deterministic is False and key is None and stochastic:
            raise ValueError(
                f"deterministic=False asks for training-mode dropout but key is None: pass "
                f"key=jax.random.key(seed) to {description}.apply (or deterministic=True / "
                f"leave it None for evaluation)"
            )
        backend = unroll_lib.check_backend(backend)
        unroll = cell_lib.check_positive_int(unroll, "unroll")
        first = params.first if not bidirectional else tree.index(params.first, 0)
        xs, tokens, batch, steps = unroll_lib.check_inputs(first, xs, time_major)
        lengths = unroll_lib.check_lengths(lengths, batch, steps)
        resets = unroll_lib.check_resets(resets, batch, steps, time_major)
        expected = initial_carries(batch)
        if carries is None:
            carries = expected
        else:
            carries = unroll_lib.check_like(
                carries,
                expected,
                "carries",
                "initial_carries(batch): [num_layers, (2,) b..., size]",
            )
        if tokens and input_dropout and key is not None:
            raise ValueError("input_dropout needs float inputs; got integer tokens for xs")
        training = key is not None
        keys = jax.random.split(key, 2 * num_layers) if training else None
        mask = unroll_lib.make_mask(lengths, steps)
        if mask is not None and resets is not None:
            resets = resets & mask  # a reset in padding must not move the frozen carry
        x = xs if time_major else jnp.moveaxis(xs, -1 if tokens else -2, 0)

        def drop(x_tm, k, rate):
            if not training or not rate:
                return x_tm
            shape = (1, *x_tm.shape[1:]) if variational else x_tm.shape
            return x_tm * _keep_mask(k, rate, shape, x_tm.dtype)

        def layer(p, x_tm, c0, k_drop, k_layer, rate):
            x_tm = drop(x_tm, k_drop, rate)
            return run_layer(p, x_tm, c0, mask, resets, k_layer, backend, unroll, training, batch)

        if layer_remat:
            layer = jax.checkpoint(layer, static_argnums=(5,))
        k0 = (keys[0], keys[1]) if training else (None, None)
        c_first = tree.index(carries, 0)
        y, carry_first = layer(params.first, x, c_first, *k0, 0.0 if tokens else input_dropout)
        if num_layers > 1:
            rest_keys = keys[2:].reshape(num_layers - 1, 2) if training else None

            def body(x_tm, inputs):
                p, c0, ks = inputs
                kd, kl = (ks[0], ks[1]) if training else (None, None)
                y_tm, c = layer(p, x_tm, c0, kd, kl, dropout)
                return y_tm, c

            c_rest = jax.tree.map(lambda a: a[1:], carries)
            if num_layers >= SCAN_LAYERS_FROM:
                y, carry_rest = jax.lax.scan(body, y, (params.rest, c_rest, rest_keys))
            else:
                outs = []
                for i in range(num_layers - 1):
                    ks = None if rest_keys is None else rest_keys[i]
                    y, c = body(y, (tree.index(params.rest, i), tree.index(c_rest, i), ks))
                    outs.append(c)
                carry_rest = tree.stack(outs)
            out = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), carry_first, carry_rest)
        else:
            out = jax.tree.map(lambda a: a[None], carry_first)
        if not time_major:
            y = jnp.moveaxis(y, 0, -2)
        return y, out

    return Layer(
        init=init,
        apply=apply,
        initial_carries=initial_carries,
        cell=cell,
        num_layers=num_layers,
        bidirectional=bidirectional,
        output_size=out_size,
    )


def _describe_layer(
    cell, num_layers, bidirectional, dropout, merge, input_dropout, recurrent_dropout, zoneout
) -> str:
    """``rnn(lstm(8), num_layers=2, bidirectional=True)``: the call, defaults left out."""
    args = [cell_lib.describe_cell(cell)]
    named = dict(
        num_layers=(num_layers, 1),
        bidirectional=(bidirectional, False),
        dropout=(dropout, 0.0),
        merge=(merge, "concat"),
        input_dropout=(input_dropout, 0.0),
        recurrent_dropout=(recurrent_dropout, 0.0),
        zoneout=(zoneout, 0.0),
    )
    args += [f"{k}={v!r}" for k, (v, default) in named.items() if v != default]
    return f"rnn({', '.join(args)})"


def _time_major_noise(noise, steps):
    """Per-step noise for the regularised cell: the state mask is shared over time."""
    state_mask, zone_u = noise
    if state_mask is not None:
        state_mask = jax.tree.map(lambda a: jnp.broadcast_to(a, (steps, *a.shape)), state_mask)
    return state_mask, zone_u
