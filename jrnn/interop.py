"""Convert PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dicts to jrnn params and back.

Numpy only: no torch dependency. See docs/interop.md.
"""

from jrnn._src.interop import carries_from_torch, carries_to_torch, from_torch, to_torch

__all__ = ["carries_from_torch", "carries_to_torch", "from_torch", "to_torch"]
