"""jrnn: recurrent neural networks in JAX.

Cells are pure functions over parameter pytrees; ``unroll`` runs them over time on one of
several backends; ``rnn`` stacks them into multi-layer and bidirectional networks.
``import jrnn`` does not import flax: the NNX wrappers live in ``jrnn.flax``.
"""

from jrnn import interop
from jrnn._src.cell import Cell
from jrnn._src.cells.elman import ElmanParams, elman
from jrnn._src.cells.gru import GRUParams, gru
from jrnn._src.cells.linear import MinGRUParams, MinLSTMParams, min_gru, min_lstm
from jrnn._src.cells.lstm import LSTMParams, lstm
from jrnn._src.cells.seed import SeedRNNParams, seed_rnn
from jrnn._src.export import register as _register_export
from jrnn._src.layers import Layer, RNNParams, rnn
from jrnn._src.unroll import unroll

__version__ = "0.1.0"

_register_export()

__all__ = [
    "Cell",
    "ElmanParams",
    "GRUParams",
    "Layer",
    "LSTMParams",
    "MinGRUParams",
    "MinLSTMParams",
    "RNNParams",
    "SeedRNNParams",
    "elman",
    "gru",
    "interop",
    "lstm",
    "min_gru",
    "min_lstm",
    "rnn",
    "seed_rnn",
    "unroll",
]
