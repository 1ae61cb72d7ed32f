"""Time-loop backends behind ``jrnn.unroll(..., backend=...)``.

Every backend implements one signature over time-major, already projected inputs::

    run(cell, params, xp, carry0, *, mask, resets, reverse, unroll, return_carries)
        -> (carry, ys, carries or None)

    xp      [t, b..., g]  pytree of per-step inputs of ``cell.recurrence``
    mask    [t, b...] bool or None: False = padding (carry frozen, y exactly zero)
    resets  [t, b...] bool or None: True = restart from ``carry0`` before this step
    ys      [t, b..., o]; carries: every step's carry, [t, b..., ...], when asked

and declares what it supports with ``supports(cell, **features) -> str | None`` (None when
supported, else the reason). ``"auto"`` picks the first supporting backend of the platform's
preference list; an explicit backend that does not support a combination raises
NotImplementedError with that reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

BACKEND_NAMES = ("auto", "reference", "xla", "fused", "pallas", "associative", "cpu")


class Backend(NamedTuple):
    """A time-loop implementation: ``run`` and its ``supports`` predicate."""

    name: str
    run: Callable
    supports: Callable


_MODULES = {
    "xla": "jrnn._src.backends.xla",
    "fused": "jrnn._src.backends.fused",
    "pallas": "jrnn._src.backends.pallas",
    "associative": "jrnn._src.backends.associative",
    "cpu": "jrnn._src.backends.cpu",
}

# Preference order of "auto" per platform, from docs/backends.md's measurements.
AUTO_ORDER = {
    # Measured (docs/benchmarks.md): on CPU "xla" beats "fused" on 1-layer train steps and the
    # associative scan loses on gradients; the Pallas interpreter is no fast path.
    "cpu": ("xla",),
    # Not measured (no accelerator so far): the associative scan is plain XLA (no kernel that
    # might not compile) with O(log t) depth and only takes cells linear in the carry; the
    # Pallas kernels are not picked until their compile and speed are measured.
    "gpu": ("associative", "xla"),
    "tpu": ("associative", "xla"),
}


def get(name: str) -> Backend:
    """Returns the backend called ``name`` (not "auto" nor "reference")."""
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    module = importlib.import_module(_MODULES[name])
    return Backend(name, module.run, module.supports)


def available(name: str) -> bool:
    """Whether the backend's module exists in this build."""
    try:
        get(name)
    except (ImportError, AttributeError):
        return False
    return True
