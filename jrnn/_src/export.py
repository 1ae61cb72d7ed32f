"""Registers jrnn's parameter NamedTuples for ``jax.export`` serialization.

Without this, a function exported with ``jax.export`` that takes or returns jrnn params could not
be serialized (``Exported.serialize``). Registration is by a stable name, so an export made with
one jrnn version deserializes with another that keeps the field names.
"""

from __future__ import annotations

import jax

from jrnn._src.cells.elman import ElmanParams
from jrnn._src.cells.gru import GRUParams
from jrnn._src.cells.linear import MinGRUParams, MinLSTMParams
from jrnn._src.cells.lstm import LSTMParams
from jrnn._src.cells.seed import SeedRNNParams
from jrnn._src.layers import RNNParams

PARAM_TYPES = (
    ElmanParams,
    GRUParams,
    LSTMParams,
    MinGRUParams,
    MinLSTMParams,
    RNNParams,
    SeedRNNParams,
)


def register() -> None:
    """Registers every params type once (idempotent)."""
    for cls in PARAM_TYPES:
        try:
            jax.export.register_namedtuple_serialization(
                cls, serialized_name=f"jrnn.{cls.__name__}"
            )
        except ValueError as e:  # already registered (module reloaded)
            if "Duplicate" not in str(e):
                raise
