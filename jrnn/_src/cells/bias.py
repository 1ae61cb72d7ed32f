"""The two-bias option of the LSTM and Elman cells (PyTorch's ``bias_ih`` and ``bias_hh``).

PyTorch's ``nn.LSTM`` and ``nn.RNN`` train two bias tensors whose sum is the bias the cell
sees. The function is the same as with one bias, but training is not: an optimiser that
normalises each tensor's step (Adam) moves the sum by two steps per update. With
``two_biases=True`` a cell keeps both, ``params.b`` (``bias_ih``) and ``params.b_hh``
(``bias_hh``), and adds their sum in the input projection: ``x W_ih + (b + b_hh)``, or for tokens
a gather of rows of ``W_ih + (b + b_hh)``. The recurrence, and so every backend and kernel, is
unchanged, and both biases receive the same gradient, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

from jrnn._src import cell as cell_lib
from jrnn._src.cell import Array


def bias_sum(params: Any, two_biases: bool, dtype: Any, cell_name: str) -> Array:
    """The bias a cell adds: ``params.b``, or ``b + b_hh`` (in the accumulation dtype).

    Args:
      params: the cell's params, with fields ``b`` and ``b_hh`` (None for one bias).
      two_biases: the cell's option.
      dtype: the cell's compute dtype (the sum is formed in its accumulation dtype).
      cell_name: for error messages, e.g. ``"jrnn.lstm"``.

    Raises:
      ValueError: if ``params.b_hh`` is None for a two-bias cell, or set for a one-bias cell
        (it would be silently ignored).
    """
    if two_biases:
        if params.b_hh is None:
            raise ValueError(
                f"{cell_name}(..., two_biases=True) needs params.b_hh, got None: build the params "
                "with this cell's init, or jrnn.interop.from_torch with this cell"
            )
        acc = cell_lib.acc_dtype(dtype)
        return params.b.astype(acc) + params.b_hh.astype(acc)
    if params.b_hh is not None:
        raise ValueError(
            f"params.b_hh is set but the {cell_name} cell has one bias: build it with "
            "two_biases=True to use these params (or fold b_hh into b)"
        )
    return params.b
