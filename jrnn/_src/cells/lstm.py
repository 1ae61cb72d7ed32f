"""Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.).

Equations (x_t input, h/c carry; gate order i, f, g, o as in PyTorch and cuDNN)::

    z   = x_t W_ih + h_{t-1} W_hh + b [+ b_hh]            z: [b, 4h]
    i   = sigmoid(z_i [+ w_ci * c_{t-1}])
    f   = sigmoid(z_f [+ w_cf * c_{t-1}])
    g   = tanh(z_g)
    c_t = f * c_{t-1} + i * g
    o   = sigmoid(z_o [+ w_co * c_t])
    h_t = o * tanh(c_t)            [then h_t = h_t W_hr with proj_size]

Options in brackets: peepholes (Gers & Schmidhuber 2000); ``layer_norm`` normalises each gate's
pre-activation (before the bias) and the cell state before its tanh (Ba et al. 2016);
``proj_size`` projects the output as ``torch.nn.LSTM(proj_size=...)`` does; ``two_biases`` keeps
PyTorch's two bias tensors (``b`` is ``bias_ih``, ``b_hh`` is ``bias_hh``) as separate parameters.
Both enter the input projection (``x W_ih + b + b_hh``, for tokens a gather of rows of
``W_ih + b + b_hh``), so every backend runs the same recurrence and both biases get the same
gradient, as in PyTorch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src.cell import Array, Cell
from jrnn._src.cells import bias as bias_lib


class LSTMParams(NamedTuple):
    """LSTM parameters (PyTorch layout, transposed for ``x @ W``).

    Attributes:
      w_ih: ``[i, 4h]`` input weights, gate order i, f, g, o.
      w_hh: ``[p, 4h]`` recurrent weights (p = proj_size or h).
      b: ``[4h]`` bias: PyTorch's ``bias_ih + bias_hh``, or ``bias_ih`` alone with
        ``two_biases=True``.
      w_peep: ``[3, h]`` peephole weights for i, f, o, or None.
      ln_scale: ``[5, h]`` layer-norm scales (gates i, f, g, o, then the cell), or None.
      ln_bias: ``[h]`` layer-norm bias of the cell state, or None.
      w_hr: ``[h, p]`` output projection, or None.
      b_hh: ``[4h]`` PyTorch's ``bias_hh`` with ``two_biases=True``, else None.
    """

    w_ih: Array
    w_hh: Array
    b: Array
    w_peep: Array | None = None
    ln_scale: Array | None = None
    ln_bias: Array | None = None
    w_hr: Array | None = None
    b_hh: Array | None = None


def _layer_norm(x: Array, scale: Array, eps: float = 1e-5) -> Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale


@cell_lib.cached_factory
def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    peepholes: bool = False,
    layer_norm: bool = False,
    proj_size: int | None = None,
    two_biases: bool = False,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """An LSTM cell.

    Args:
      hidden_size: h, the size of the cell state.
      forget_bias: added to the forget-gate bias at init only.
      peepholes: add the diagonal peephole connections ``w_ci, w_cf, w_co``.
      layer_norm: layer-normalise the gate pre-activations and the cell state.
      proj_size: if set, ``h_t`` is projected to this size (the carry's ``h`` has it too).
      two_biases: keep two bias parameters, ``b`` and ``b_hh``, whose sum is the gate bias,
        as ``torch.nn.LSTM`` does (``bias_ih``, ``bias_hh``). The function is the same;
        training differs, since an optimiser such as Adam moves each tensor by its own step.
        Use it to train exactly like PyTorch (see docs/interop.md).
      dtype: compute dtype of the matmul operands (float32 or bfloat16); accumulation, gate
        math and the carry stay float32.
      param_dtype: dtype of the parameters.

    Returns:
      A :class:`jrnn.Cell` with carry ``(h [b, p], c [b, h])`` and output ``y = h_t``.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.lstm(16, forget_bias=1.0)
      >>> p = cell.init(jax.random.key(0), 4)
      >>> p.w_ih.shape, p.w_hh.shape, p.b.shape
      ((4, 64), (16, 64), (64,))
      >>> jrnn.lstm(16, two_biases=True).init(jax.random.key(0), 4).b_hh.shape
      (64,)
    """
    H = cell_lib.check_positive_int(hidden_size, "hidden_size")
    if proj_size is not None:
        P = cell_lib.check_positive_int(proj_size, "proj_size")
        if P >= H:
            raise ValueError(f"proj_size must be smaller than hidden_size={H}, got {P}")
    else:
        P = H
    two_biases = cell_lib.check_bool(two_biases, "two_biases")
    dtype = cell_lib.check_dtype(dtype, "dtype")
    param_dtype = cell_lib.check_dtype(param_dtype, "param_dtype")

    def bias(params: LSTMParams) -> Array:
        # The gate bias: b, or b + b_hh (PyTorch's bias_ih + bias_hh) with two_biases.
        return bias_lib.bias_sum(params, two_biases, dtype, "jrnn.lstm")

    def init(key: Array, input_size: int) -> LSTMParams:
        input_size = cell_lib.check_positive_int(input_size, "input_size")
        k_ih, k_hh, k_hr = jax.random.split(key, 3)
        b = jnp.zeros((4 * H,), param_dtype).at[H : 2 * H].set(forget_bias)
        return LSTMParams(
            w_ih=cell_lib.lecun_normal(k_ih, (input_size, 4 * H), param_dtype),
            w_hh=cell_lib.orthogonal_blocks(k_hh, P, H, 4, param_dtype),
            b=b,
            w_peep=jnp.zeros((3, H), param_dtype) if peepholes else None,
            ln_scale=jnp.ones((5, H), param_dtype) if layer_norm else None,
            ln_bias=jnp.zeros((H,), param_dtype) if layer_norm else None,
            w_hr=cell_lib.lecun_normal(k_hr, (H, P), param_dtype) if proj_size else None,
            b_hh=jnp.zeros((4 * H,), param_dtype) if two_biases else None,
        )

    def initial_carry(batch_shape) -> tuple[Array, Array]:
        return cell_lib.zeros_carry(batch_shape, P, dtype), cell_lib.zeros_carry(
            batch_shape, H, dtype
        )

    def input_projection(params: LSTMParams, x: Array) -> Array:
        # With layer norm the bias is added after normalisation, in `gates`.
        b = bias(params)
        return cell_lib.project(params.w_ih, None if layer_norm else b, x, dtype)

    def hidden_projection(params: LSTMParams, carry) -> Array:
        return cell_lib.matmul(carry[0], params.w_hh, dtype)

    def gates(params: LSTMParams, carry, xp: Array, hp: Array):
        _, c = carry
        z = xp + hp
        if layer_norm:
            z4 = z.reshape(*z.shape[:-1], 4, H)
            scale = (
                params.ln_scale[:4]
                .astype(cell_lib.acc_dtype(dtype))
                .reshape((1,) * (z.ndim - 1) + (4, H))
            )
            z = _layer_norm(z4, scale).reshape(z.shape)
            z = z + cell_lib.row(bias(params), z)
        zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
        if peepholes:
            wi, wf, wo = (cell_lib.row(w, c) for w in params.w_peep)
            zi = zi + wi * c
            zf = zf + wf * c
        c_new = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        if peepholes:
            zo = zo + wo * c_new
        c_out = c_new
        if layer_norm:
            c_out = _layer_norm(c_new, cell_lib.row(params.ln_scale[4], c_new))
            c_out = c_out + cell_lib.row(params.ln_bias, c_out)
        h_new = jax.nn.sigmoid(zo) * jnp.tanh(c_out)
        if proj_size:
            h_new = cell_lib.matmul(h_new, params.w_hr, dtype)
        return (h_new, c_new), h_new

    return cell_lib.make_cell(
        name="lstm",
        init=init,
        initial_carry=initial_carry,
        input_projection=input_projection,
        hidden_projection=hidden_projection,
        gates=gates,
        hidden_size=H,
        output_size=P,
        options=dict(
            forget_bias=float(forget_bias),
            peepholes=bool(peepholes),
            layer_norm=bool(layer_norm),
            proj_size=proj_size,
            two_biases=two_biases,
            dtype=jnp.dtype(dtype).name,
            param_dtype=jnp.dtype(param_dtype).name,
        ),
    )
