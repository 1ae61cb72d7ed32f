"""The lecture's basic RNN cell: a relu output and a separate tanh state.

Equations (the 2017 lecture's ``basic_rnn_cell``, with an optional bias)::

    y_t = relu(x_t A_u + s_{t-1} B_u [+ b_u])        y: [b, o]
    s_t = tanh(x_t A_v + s_{t-1} B_v [+ b_v])        s: [b, h]

Stored as ``w_ih = [A_u | A_v]`` ``[i, o + h]``, ``w_hh = [B_u | B_v]`` ``[h, o + h]``,
``b = [b_u | b_v]`` ``[o + h]``. Note that ``y_t`` reads the *previous* state, as in the lecture.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src.cell import Array, Cell


class SeedRNNParams(NamedTuple):
    """Parameters of the lecture's cell.

    Attributes:
      w_ih: ``[i, o + h]``, the lecture's ``[A_u | A_v]``.
      w_hh: ``[h, o + h]``, the lecture's ``[B_u | B_v]``.
      b: ``[o + h]`` bias (zeros; the lecture has none).
    """

    w_ih: Array
    w_hh: Array
    b: Array


@cell_lib.cached_factory
def seed_rnn(
    hidden_size: int,
    output_size: int | None = None,
    *,
    init: str = "default",
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The lecture's basic RNN cell (relu output, tanh state).

    Args:
      hidden_size: h, the state size.
      output_size: o, the output size (default h).
      init: ``"default"`` (LeCun-normal input weights, orthogonal recurrent weights) or
        ``"lecture"`` (every weight uniform in [-1, 1], as the lecture did; it saturates the
        tanh for any realistic size and is offered for reproduction only).
      dtype: compute dtype of the matmul operands.
      param_dtype: dtype of the parameters.

    Returns:
      A :class:`jrnn.Cell` with carry ``s [b, h]`` and output ``y [b, o]``.

    Example:
      >>> import jax, jrnn
      >>> cell = jrnn.seed_rnn(8, output_size=5)
      >>> cell.init(jax.random.key(0), 3).w_ih.shape
      (3, 13)
    """
    H = cell_lib.check_positive_int(hidden_size, "hidden_size")
    out_size = H if output_size is None else cell_lib.check_positive_int(output_size, "output_size")
    if init not in ("default", "lecture"):
        raise ValueError(f"init must be 'default' or 'lecture', got {init!r}")
    init_kind = init
    dtype = cell_lib.check_dtype(dtype, "dtype")
    param_dtype = cell_lib.check_dtype(param_dtype, "param_dtype")

    def init_fn(key: Array, input_size: int) -> SeedRNNParams:
        input_size = cell_lib.check_positive_int(input_size, "input_size")
        k_ih, k_hh = jax.random.split(key)
        if init_kind == "lecture":
            w_ih = cell_lib.uniform(k_ih, (input_size, out_size + H), 1.0, param_dtype)
            w_hh = cell_lib.uniform(k_hh, (H, out_size + H), 1.0, param_dtype)
        else:
            w_ih = cell_lib.lecun_normal(k_ih, (input_size, out_size + H), param_dtype)
            k_u, k_v = jax.random.split(k_hh)
            w_hh = jnp.concatenate(
                [
                    cell_lib.lecun_normal(k_u, (H, out_size), param_dtype),
                    cell_lib.orthogonal_blocks(k_v, H, H, 1, param_dtype),
                ],
                axis=-1,
            )
        return SeedRNNParams(w_ih=w_ih, w_hh=w_hh, b=jnp.zeros((out_size + H,), param_dtype))

    def initial_carry(batch_shape) -> Array:
        return cell_lib.zeros_carry(batch_shape, H, dtype)

    def input_projection(params: SeedRNNParams, x: Array) -> Array:
        return cell_lib.project(params.w_ih, params.b, x, dtype)

    def hidden_projection(params: SeedRNNParams, s: Array) -> Array:
        return cell_lib.matmul(s, params.w_hh, dtype)

    def gates(params: SeedRNNParams, s: Array, xp: Array, hp: Array):
        del params, s
        z = xp + hp
        y = jax.nn.relu(z[..., :out_size])
        s_new = jnp.tanh(z[..., out_size:])
        return s_new, y

    return cell_lib.make_cell(
        name="seed_rnn",
        init=init_fn,
        initial_carry=initial_carry,
        input_projection=input_projection,
        hidden_projection=hidden_projection,
        gates=gates,
        hidden_size=H,
        output_size=out_size,
        options=dict(
            init=init_kind, dtype=jnp.dtype(dtype).name, param_dtype=jnp.dtype(param_dtype).name
        ),
    )
