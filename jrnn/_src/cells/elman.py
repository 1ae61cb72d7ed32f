"""Elman network (simple RNN), as ``torch.nn.RNN``::

h_t = act(x_t W_ih + h_{t-1} W_hh + b [+ b_hh])         act = tanh or relu

``two_biases`` keeps PyTorch's two bias tensors (``b`` is ``bias_ih``, ``b_hh`` is ``bias_hh``) as
separate parameters; both enter the input projection, so the recurrence is unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src.cell import Array, Cell
from jrnn._src.cells import bias as bias_lib

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


class ElmanParams(NamedTuple):
    """Elman parameters.

    Attributes:
      w_ih: ``[i, h]``.
      w_hh: ``[h, h]``.
      b: ``[h]``: PyTorch's ``bias_ih + bias_hh``, or ``bias_ih`` alone with ``two_biases``.
      b_hh: ``[h]`` PyTorch's ``bias_hh`` with ``two_biases=True``, else None.
    """

    w_ih: Array
    w_hh: Array
    b: Array
    b_hh: Array | None = None


@cell_lib.cached_factory
def elman(
    hidden_size: int,
    *,
    activation: str = "tanh",
    two_biases: bool = False,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """An Elman (simple) RNN cell.

    Args:
      hidden_size: h.
      activation: ``"tanh"`` or ``"relu"``.
      two_biases: keep two bias parameters, ``b`` and ``b_hh``, whose sum is the bias, as
        ``torch.nn.RNN`` does (``bias_ih``, ``bias_hh``): the same function, trained like
        PyTorch.
      dtype: compute dtype of the matmul operands.
      param_dtype: dtype of the parameters.

    Returns:
      A :class:`jrnn.Cell` with carry ``h [b, h]`` and output ``y = h_t``.

    Example:
      >>> import jax, jrnn
      >>> jrnn.elman(8, activation="relu").init(jax.random.key(0), 3).w_hh.shape
      (8, 8)
      >>> jrnn.elman(8, two_biases=True).init(jax.random.key(0), 3).b_hh.shape
      (8,)
    """
    H = cell_lib.check_positive_int(hidden_size, "hidden_size")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    act = _ACTIVATIONS[activation]
    two_biases = cell_lib.check_bool(two_biases, "two_biases")
    dtype = cell_lib.check_dtype(dtype, "dtype")
    param_dtype = cell_lib.check_dtype(param_dtype, "param_dtype")

    def init(key: Array, input_size: int) -> ElmanParams:
        input_size = cell_lib.check_positive_int(input_size, "input_size")
        k_ih, k_hh = jax.random.split(key)
        return ElmanParams(
            w_ih=cell_lib.lecun_normal(k_ih, (input_size, H), param_dtype),
            w_hh=cell_lib.orthogonal_blocks(k_hh, H, H, 1, param_dtype),
            b=jnp.zeros((H,), param_dtype),
            b_hh=jnp.zeros((H,), param_dtype) if two_biases else None,
        )

    def initial_carry(batch_shape) -> Array:
        return cell_lib.zeros_carry(batch_shape, H, dtype)

    def input_projection(params: ElmanParams, x: Array) -> Array:
        # Both biases enter here (a gather of rows of W_ih + b + b_hh for tokens).
        b = bias_lib.bias_sum(params, two_biases, dtype, "jrnn.elman")
        return cell_lib.project(params.w_ih, b, x, dtype)

    def hidden_projection(params: ElmanParams, h: Array) -> Array:
        return cell_lib.matmul(h, params.w_hh, dtype)

    def gates(params: ElmanParams, h: Array, xp: Array, hp: Array):
        del params, h
        h_new = act(xp + hp)
        return h_new, h_new

    return cell_lib.make_cell(
        name="elman",
        init=init,
        initial_carry=initial_carry,
        input_projection=input_projection,
        hidden_projection=hidden_projection,
        gates=gates,
        hidden_size=H,
        output_size=H,
        options=dict(
            activation=activation,
            two_biases=two_biases,
            dtype=jnp.dtype(dtype).name,
            param_dtype=jnp.dtype(param_dtype).name,
        ),
    )
