"""One list of every cell and option, for generic tests (in the style of haiku's descriptors).

A new cell (or option) adds one line to ``CELLS`` and is then covered by every generic test:
backend equality (tests/test_backends.py) and whatever else iterates over the registry.
``backend_names()`` lists the backends present in this build, so a backend added later (the
fused scan, the Pallas kernels) is picked up without touching the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

import jrnn
from jrnn._src import backends
from jrnn._src.cell import Cell
from jrnn._src.cells.linear import min_gru, min_lstm

# Sizes of the generic tests: small, so that each case compiles and runs in well under a second.
BATCH, STEPS, HIDDEN, INPUT = 3, 7, 8, 5

# Per compute dtype: (rtol, atol relative to the largest reference value).
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}


class CellSpec(NamedTuple):
    """A registry entry: ``factory(HIDDEN, **kwargs)`` builds the cell.

    ``full``: generic tests run every variant (and token inputs) for this entry; entries that
    only add an option to a family run a reduced set, to keep the suite fast.
    """

    name: str
    factory: Callable[..., Cell]
    kwargs: dict
    full: bool = True

    def make(self, hidden: int = HIDDEN) -> Cell:
        return self.factory(hidden, **self.kwargs)

    @property
    def dtype(self) -> str:
        return jnp.dtype(self.kwargs.get("dtype", jnp.float32)).name

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.dtype]


CELLS: list[CellSpec] = [
    CellSpec("lstm", jrnn.lstm, {}),
    CellSpec("lstm_peepholes", jrnn.lstm, dict(peepholes=True), full=False),
    CellSpec("lstm_layer_norm", jrnn.lstm, dict(layer_norm=True), full=False),
    CellSpec("lstm_proj", jrnn.lstm, dict(proj_size=5), full=False),
    CellSpec(
        "lstm_all_options",
        jrnn.lstm,
        dict(peepholes=True, layer_norm=True, proj_size=3),
        full=False,
    ),
    CellSpec("lstm_bf16", jrnn.lstm, dict(dtype=jnp.bfloat16), full=False),
    CellSpec("lstm_two_biases", jrnn.lstm, dict(two_biases=True), full=False),
    CellSpec("gru", jrnn.gru, {}),
    CellSpec("gru_cho", jrnn.gru, dict(reset_after=False), full=False),
    CellSpec("gru_bf16", jrnn.gru, dict(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16), full=False),
    CellSpec("elman_tanh", jrnn.elman, dict(activation="tanh")),
    CellSpec("elman_relu", jrnn.elman, dict(activation="relu"), full=False),
    CellSpec("elman_two_biases", jrnn.elman, dict(two_biases=True), full=False),
    CellSpec("seed_rnn", jrnn.seed_rnn, dict(output_size=5)),
    CellSpec("min_gru", min_gru, {}),
    CellSpec("min_gru_linear_candidate", min_gru, dict(positive=False), full=False),
    CellSpec("min_lstm", min_lstm, {}),
    CellSpec("min_lstm_bf16", min_lstm, dict(dtype=jnp.bfloat16), full=False),
]

# Backends other than the ground truth, in the order of backends.BACKEND_NAMES.
CANDIDATE_BACKENDS = tuple(n for n in backends.BACKEND_NAMES if n not in ("auto", "reference"))


def backend_names() -> list[str]:
    """The backends present in this build (modules that import)."""
    return [name for name in CANDIDATE_BACKENDS if backends.available(name)]


def support(backend: str, cell: Cell, **features: Any) -> str | None:
    """None if ``backend`` runs ``cell`` with ``features``, else its stated reason."""
    return backends.get(backend).supports(cell, **features)


def support_table() -> dict[str, dict[str, str | None]]:
    """``{backend: {cell name: None or the reason it is unsupported}}`` (no features)."""
    return {b: {s.name: support(b, s.make()) for s in CELLS} for b in backend_names()}
