"""Cells linear in their carry: minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?").

Their gates read only the input, so the carry update is an affine map of the previous carry,
``h_t = a_t * h_{t-1} + b_t`` with ``a_t, b_t`` computed from ``x_t`` alone, and a sequence can be
run with a parallel (associative) scan as well as with a time loop.

Equations (``k`` gate pre-activations, ``q`` candidate pre-activation; all from one matmul)::

    minGRU    z   = sigmoid(x W_z + b_z)                 [k_z, q] = x W_ih + b   W_ih: [i, 2h]
              h~  = g(x W_h + b_h)
              h_t = (1 - z) * h_{t-1} + z * h~
    minLSTM   f   = sigmoid(x W_f + b_f)                 [k_f, k_i, q] = x W_ih + b   W_ih: [i, 3h]
              i   = sigmoid(x W_i + b_i)
              h~  = g(x W_h + b_h)
              f', i' = f / (f + i), i / (f + i)
              h_t = f' * h_{t-1} + i' * h~

``g`` is the paper's positive candidate map of its log-space version,
``g(q) = q + 0.5`` for ``q >= 0`` and ``sigmoid(q)`` otherwise (``positive=True``, the default,
which keeps ``h`` positive when ``h_0 >= 0``); ``positive=False`` uses ``g(q) = q`` (the paper's
plain version).

Numerical stability (the paper's log-space formulation): the decay is carried as a logarithm,
``log a = log(1 - z) = -softplus(k_z)`` for minGRU and ``log a = log f' = -softplus(d)`` with
``d = log i - log f = softplus(-k_f) - softplus(-k_i)`` for minLSTM, so ``1 - sigmoid(k)`` never
cancels catastrophically, ``f + i`` is never formed (both may underflow), and a decay of
``exp(-100)`` is represented exactly. The weight of the candidate, ``1 - a``, is computed the same
way (``z = sigmoid(k_z)``, resp. ``i' = sigmoid(d)``). The paper's log-space *values* (``log h``,
needed by its cumulative-sum scan) are unnecessary here: the associative scan combines ``(a, b)``
pairs with products and sums only, never dividing by a cumulative product.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src.cell import Array, Cell


class MinGRUParams(NamedTuple):
    """minGRU parameters (``x @ W`` layout).

    Attributes:
      w_ih: ``[i, 2h]`` input weights, column blocks z (update gate), h~ (candidate).
      b: ``[2h]`` bias, same blocks.
    """

    w_ih: Array
    b: Array


class MinLSTMParams(NamedTuple):
    """minLSTM parameters (``x @ W`` layout).

    Attributes:
      w_ih: ``[i, 3h]`` input weights, column blocks f (forget), i (input), h~ (candidate).
      b: ``[3h]`` bias, same blocks.
    """

    w_ih: Array
    b: Array


def _candidate(q: Array, positive: bool) -> Array:
    """The paper's ``g``: ``q + 0.5`` for ``q >= 0``, ``sigmoid(q)`` below (or identity)."""
    if not positive:
        return q
    return jnp.where(q >= 0, jax.nn.relu(q) + 0.5, jax.nn.sigmoid(q))


def _min_cell(
    name: str,
    blocks: int,
    coefficients,
    params_type,
    hidden_size: int,
    positive: bool,
    dtype: Any,
    param_dtype: Any,
    gate_bias: float,
    gate_bias_name: str,
) -> Cell:
    H = cell_lib.check_positive_int(hidden_size, "hidden_size")
    dtype = cell_lib.check_dtype(dtype, "dtype")
    param_dtype = cell_lib.check_dtype(param_dtype, "param_dtype")
    positive = bool(positive)

    def init(key: Array, input_size: int):
        input_size = cell_lib.check_positive_int(input_size, "input_size")
        b = jnp.zeros((blocks * H,), param_dtype)
        if gate_bias:
            b = b.at[:H].set(gate_bias)
        return params_type(
            w_ih=cell_lib.lecun_normal(key, (input_size, blocks * H), param_dtype), b=b
        )

    def initial_carry(batch_shape) -> Array:
        return cell_lib.zeros_carry(batch_shape, H, dtype)

    def input_projection(params, x: Array) -> Array:
        return cell_lib.project(params.w_ih, params.b, x, dtype)

    def hidden_projection(params, h: Array) -> None:
        # The gates read only the input: there is no recurrent matmul.
        del params, h
        return None

    def linear(params, xp: Array) -> tuple[Array, Array]:
        del params
        *gate_pre, q = jnp.split(xp, blocks, axis=-1)
        log_a, w = coefficients(*gate_pre)
        return log_a, w * _candidate(q, positive)

    def gates(params, h: Array, xp: Array, hp: None):
        del hp
        log_a, b = linear(params, xp)
        h_new = jnp.exp(log_a) * h + b
        return h_new, h_new

    return cell_lib.make_cell(
        name=name,
        init=init,
        initial_carry=initial_carry,
        input_projection=input_projection,
        hidden_projection=hidden_projection,
        gates=gates,
        hidden_size=H,
        output_size=H,
        options=dict(
            positive=positive,
            **{gate_bias_name: float(gate_bias)},
            dtype=jnp.dtype(dtype).name,
            param_dtype=jnp.dtype(param_dtype).name,
        ),
        linear=linear,
    )


def _min_gru_coefficients(k_z: Array) -> tuple[Array, Array]:
    # log(1 - sigmoid(k)) = -softplus(k); the candidate weight is z = sigmoid(k).
    return -jax.nn.softplus(k_z), jax.nn.sigmoid(k_z)


def _min_lstm_coefficients(k_f: Array, k_i: Array) -> tuple[Array, Array]:
    # With d = log i - log f (log sigmoid(k) = -softplus(-k)): f' = f / (f + i) = sigmoid(-d),
    # so log f' = -softplus(d), and i' = 1 - f' = sigmoid(d).
    d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
    return -jax.nn.softplus(d), jax.nn.sigmoid(d)


@cell_lib.cached_factory
def min_gru(
    hidden_size: int,
    *,
    positive: bool = True,
    gate_bias: float = 0.0,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """minGRU (Feng et al. 2024): a GRU whose gates read only the input.

    ``z = sigmoid(x W_z + b_z)``, ``h~ = g(x W_h + b_h)``, ``h_t = (1 - z) * h_{t-1} + z * h~``,
    with ``g(q) = q + 0.5`` for ``q >= 0``, ``sigmoid(q)`` otherwise (``positive=True``) or
    ``g(q) = q``. Linear in the carry: ``cell.linear(params, xp)`` returns
    ``(log(1 - z), z * h~)``, and ``backend="associative"`` runs it as a parallel scan.

    Args:
      hidden_size: h.
      positive: use the paper's positive candidate ``g`` (its log-space version); False uses
        the raw linear candidate.
      gate_bias: initial bias of the update gate ``z`` (negative values favour remembering).
      dtype: compute dtype of the input matmul operands; the gate math and carry are float32.
      param_dtype: dtype of the parameters.

    Returns:
      A :class:`jrnn.Cell` with carry ``h [b, h]``, output ``y = h_t`` and ``linear`` set.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.min_gru(8)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> params.w_ih.shape, params.b.shape
      ((3, 16), (16,))
      >>> xs = jnp.ones((2, 100, 3))
      >>> h1, ys1 = jrnn.unroll(cell, params, xs, backend="xla")
      >>> h2, ys2 = jrnn.unroll(cell, params, xs, backend="associative")
      >>> bool(jnp.allclose(ys1, ys2, atol=1e-5))
      True
    """
    return _min_cell(
        "min_gru",
        2,
        _min_gru_coefficients,
        MinGRUParams,
        hidden_size,
        positive,
        dtype,
        param_dtype,
        gate_bias,
        "gate_bias",
    )


@cell_lib.cached_factory
def min_lstm(
    hidden_size: int,
    *,
    positive: bool = True,
    forget_bias: float = 0.0,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """minLSTM (Feng et al. 2024): an LSTM whose gates read only the input, normalised.

    ``f = sigmoid(x W_f + b_f)``, ``i = sigmoid(x W_i + b_i)``, ``h~ = g(x W_h + b_h)``,
    ``h_t = f / (f + i) * h_{t-1} + i / (f + i) * h~`` (``g`` as in :func:`min_gru`). Linear in
    the carry: ``cell.linear(params, xp)`` returns ``(log(f / (f + i)), i / (f + i) * h~)``,
    computed in log space without forming ``f + i``.

    Args:
      hidden_size: h.
      positive: use the paper's positive candidate ``g``; False uses the raw linear candidate.
      forget_bias: initial bias of the forget gate ``f`` (positive values favour remembering).
      dtype: compute dtype of the input matmul operands; the gate math and carry are float32.
      param_dtype: dtype of the parameters.

    Returns:
      A :class:`jrnn.Cell` with carry ``h [b, h]``, output ``y = h_t`` and ``linear`` set.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.min_lstm(8)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> params.w_ih.shape
      (3, 24)
      >>> carry, y = cell.step(params, cell.initial_carry(2), jnp.ones((2, 3)))
      >>> y.shape
      (2, 8)
    """
    return _min_cell(
        "min_lstm",
        3,
        _min_lstm_coefficients,
        MinLSTMParams,
        hidden_size,
        positive,
        dtype,
        param_dtype,
        forget_bias,
        "forget_bias",
    )
