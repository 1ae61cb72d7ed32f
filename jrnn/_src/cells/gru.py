"""Gated recurrent unit (Cho et al. 2014), PyTorch/cuDNN "reset-after" form by default.

Equations (gate order r, z, n as in PyTorch)::

    r   = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z   = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n   = tanh(x W_in + b_in + r * (h W_hn + b_hn))          reset_after=True (PyTorch, cuDNN)
    n   = tanh(x W_in + b_in + (r * h) W_hn + b_hn)          reset_after=False (Cho et al.)
    h_t = (1 - z) * n + z * h_{t-1}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src.cell import Array, Cell


class GRUParams(NamedTuple):
    """GRU parameters (PyTorch layout, transposed for ``x @ W``).

    Attributes:
      w_ih: ``[i, 3h]`` input weights, gate order r, z, n.
      w_hh: ``[h, 3h]`` recurrent weights.
      b_ih: ``[3h]`` input bias.
      b_hh: ``[3h]`` recurrent bias.
    """

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array


@cell_lib.cached_factory
def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """A GRU cell.

    Args:
      hidden_size: h.
      reset_after: apply the reset gate after the recurrent matmul (PyTorch, cuDNN); False gives
        the original Cho et al. form, which multiplies ``h`` by ``r`` before the matmul.
      dtype: compute dtype of the matmul operands; accumulation and the carry stay float32.
      param_dtype: dtype of the parameters.

    Returns:
      A :class:`jrnn.Cell` with carry ``h [b, h]`` and output ``y = h_t``.

    Example:
      >>> import jax, jrnn
      >>> p = jrnn.gru(8).init(jax.random.key(0), 3)
      >>> p.w_ih.shape, p.w_hh.shape, p.b_ih.shape, p.b_hh.shape
      ((3, 24), (8, 24), (24,), (24,))
    """
    H = cell_lib.check_positive_int(hidden_size, "hidden_size")
    dtype = cell_lib.check_dtype(dtype, "dtype")
    param_dtype = cell_lib.check_dtype(param_dtype, "param_dtype")

    def init(key: Array, input_size: int) -> GRUParams:
        input_size = cell_lib.check_positive_int(input_size, "input_size")
        k_ih, k_hh = jax.random.split(key)
        return GRUParams(
            w_ih=cell_lib.lecun_normal(k_ih, (input_size, 3 * H), param_dtype),
            w_hh=cell_lib.orthogonal_blocks(k_hh, H, H, 3, param_dtype),
            b_ih=jnp.zeros((3 * H,), param_dtype),
            b_hh=jnp.zeros((3 * H,), param_dtype),
        )

    def initial_carry(batch_shape) -> Array:
        return cell_lib.zeros_carry(batch_shape, H, dtype)

    def input_projection(params: GRUParams, x: Array) -> Array:
        return cell_lib.project(params.w_ih, params.b_ih, x, dtype)

    def hidden_projection(params: GRUParams, h: Array) -> Array:
        if reset_after:
            hp = cell_lib.matmul(h, params.w_hh, dtype)
            return hp + cell_lib.row(params.b_hh, hp)
        # Cho et al.: only r and z see h directly; n sees r * h, computed in `gates`.
        w_rz = params.w_hh[:, : 2 * H]
        hp = cell_lib.matmul(h, w_rz, dtype)
        return hp + cell_lib.row(params.b_hh[: 2 * H], hp)

    def gates(params: GRUParams, h: Array, xp: Array, hp: Array):
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        if reset_after:
            hr, hz, hn = jnp.split(hp, 3, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
        else:
            hr, hz = jnp.split(hp, 2, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            hn = cell_lib.matmul(r * h, params.w_hh[:, 2 * H :], dtype)
            n = jnp.tanh(xn + hn + cell_lib.row(params.b_hh[2 * H :], hn))
        h_new = n + z * (h - n)
        return h_new, h_new

    return cell_lib.make_cell(
        name="gru",
        init=init,
        initial_carry=initial_carry,
        input_projection=input_projection,
        hidden_projection=hidden_projection,
        gates=gates,
        hidden_size=H,
        output_size=H,
        options=dict(
            reset_after=bool(reset_after),
            dtype=jnp.dtype(dtype).name,
            param_dtype=jnp.dtype(param_dtype).name,
        ),
    )
