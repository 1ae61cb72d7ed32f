"""Time-loop backends behind ``jrnn.unroll(..., backend=...)``.

Every backend implements one signature over time-major, already projected inputs::

    run(cell, params, xp, carry0, *, mask, resets, reverse, unroll, return_carries)
        -> (carry, ys, carries or None)

    xp      [t, b..., g]  pytree of per-step inputs of ``cell.recurrence``
    mask    [t, b...] bool or None: False = padding (carry frozen, y exactly zero)
    resets  [t, b...] bool or None: True = restart from ``carry0`` before this step
    ys      [t, b..., o]; carries: every step's carry, [t, b..., ...], when asked

and declares what it supports with ``supports(cell, **features) -> str | None`` (None when
supported, else the reason). ``"auto"`` picks, for each platform, the first backend of that
platform's preference list that supports the call (and, for the Pallas kernels, whose size
model says it fits), and switches between the picks with ``jax.lax.platform_dependent``: the
choice is made for the platform the function is lowered for, not the host that traces it. An
explicit backend that does not support a combination raises NotImplementedError with that
reason.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from typing import NamedTuple

import jax

BACKEND_NAMES = ("auto", "reference", "xla", "fused", "pallas", "associative", "cpu")


class Backend(NamedTuple):
    """A time-loop implementation: ``run`` and its ``supports`` predicate.

    ``run_tokens`` (optional, same signature as ``run`` with integer tokens ``[t, b...]`` in
    place of ``xp``) runs token inputs without materialising their ``[t, b..., g]`` projection;
    :func:`run_inputs` uses it when the backend has one.
    """

    name: str
    run: Callable
    supports: Callable
    run_tokens: Callable | None = None


_MODULES = {
    "xla": "jrnn._src.backends.xla",
    "fused": "jrnn._src.backends.fused",
    "pallas": "jrnn._src.backends.pallas",
    "associative": "jrnn._src.backends.associative",
    "cpu": "jrnn._src.backends.cpu",
}

# Preference order of "auto" per platform, from docs/backends.md's measurements.
AUTO_ORDER = {
    # Measured (docs/benchmarks.md): the C++ kernel ("cpu") beats "xla" on every measured CPU
    # row; where it is unavailable (no compiler, JRNN_CPU_KERNEL=0) or declines the call
    # (cell, dtype), "xla", which beats "fused" on 1-layer train steps; the associative scan
    # loses on gradients and the Pallas interpreter is no fast path.
    "cpu": ("cpu", "xla"),
    # Not measured (no GPU so far): the associative scan is plain XLA with O(log t) depth and
    # only takes cells linear in the carry. The GPU kernel's choice goes here (add "pallas"
    # and a `gpu_fits(cell, steps, batch)` in pallas.py: `fits` below already calls it).
    "gpu": ("associative", "xla"),
    # TPU: the Pallas kernel keeps W_hh in VMEM and the whole time loop in one kernel, where
    # XLA's loop reloads W_hh from HBM every step; compiled (not timed) by libtpu for v4, v5e,
    # v5p and v6e (docs/backends.md). Picked only where its VMEM model says it fits.
    "tpu": ("associative", "pallas", "xla"),
}
# The platforms "auto" decides for, and the lax.platform_dependent keyword of each.
PLATFORMS = {"cpu": ("cpu",), "gpu": ("cuda", "rocm"), "tpu": ("tpu",)}


def get(name: str) -> Backend:
    """Returns the backend called ``name`` (not "auto" nor "reference")."""
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    module = importlib.import_module(_MODULES[name])
    return Backend(name, module.run, module.supports, getattr(module, "run_tokens", None))


def run_inputs(backend: Backend, cell, params, xs, carry0, *, tokens: bool, **kw):
    """``backend`` over time-major inputs ``xs``: token inputs through its ``run_tokens`` when
    it has one, everything else projected by ``cell.input_projection`` and given to ``run``."""
    if tokens and backend.run_tokens is not None:
        return backend.run_tokens(cell, params, xs, carry0, **kw)
    return backend.run(cell, params, cell.input_projection(params, xs), carry0, **kw)


def available(name: str) -> bool:
    """Whether the backend's module exists in this build."""
    try:
        get(name)
    except (ImportError, AttributeError):
        return False
    return True


def _backend_for(name: str, platform: str) -> Backend:
    """Backend ``name`` as lowered for ``platform`` (Pallas: that platform's kernel)."""
    b = get(name)
    if name == "pallas" and platform in ("tpu", "gpu"):
        b = b._replace(run=functools.partial(b.run, kernel=platform, interpret=False))
    return b


def fits(name: str, platform: str, cell, steps: int, batch: int) -> str | None:
    """None if backend ``name``'s size model accepts ``steps`` x ``batch`` on ``platform``."""
    if name != "pallas":
        return None
    module = importlib.import_module(_MODULES["pallas"])
    check = getattr(module, f"{platform}_fits", None)
    return None if check is None else check(cell, steps, batch)


def choose(platform: str, cell, steps: int, batch: int, **features) -> str:
    """The backend "auto" runs on ``platform`` for this call (a name from ``AUTO_ORDER``)."""
    for name in AUTO_ORDER.get(platform, ("xla",)):
        if not available(name) or get(name).supports(cell, **features) is not None:
            continue
        if fits(name, platform, cell, steps, batch) is None:
            return name
    return "xla"


def auto(cell, default_platform: str, **features) -> Backend:
    """The ``"auto"`` backend: per target platform, :func:`choose`'s pick.

    Its ``run`` switches with ``jax.lax.platform_dependent`` between the picks when they
    differ, so a function traced on a CPU host and lowered for TPU runs the TPU pick;
    ``default_platform`` (the default backend) covers platforms not named here.
    """

    def dispatch(cell, params, xs, carry0, tokens, mask, resets, **kw):
        leaf = jax.tree.leaves(xs)[0]  # xp may be a pytree (e.g. inputs plus dropout masks)
        steps = leaf.shape[0]
        batch = math.prod(leaf.shape[1:] if tokens else leaf.shape[1:-1])
        picks = {p: choose(p, cell, steps, batch, **features) for p in PLATFORMS}
        for p, name in picks.items():  # a backend may also decline the arrays (dtypes)
            accepts = getattr(importlib.import_module(_MODULES[name]), "accepts", None)
            if accepts is not None and not accepts(params, xs, carry0, tokens=tokens):
                picks[p] = "xla"

        def branch(platform):
            b = _backend_for(picks[platform], platform)
            if tokens:  # raw tokens: the pick's run_tokens, or its run of their projection
                return lambda params, xs, carry0, mask, resets: run_inputs(
                    b, cell, params, xs, carry0, tokens=True, mask=mask, resets=resets, **kw
                )
            return lambda params, xs, carry0, mask, resets: b.run(
                cell, params, xs, carry0, mask=mask, resets=resets, **kw
            )

        default = default_platform if default_platform in PLATFORMS else "cpu"
        if len({(picks[p], p if picks[p] == "pallas" else "") for p in PLATFORMS}) == 1:
            return branch(default)(params, xs, carry0, mask, resets)
        branches = {key: branch(p) for p, keys in PLATFORMS.items() for key in keys}
        return jax.lax.platform_dependent(
            params, xs, carry0, mask, resets, default=branch(default), **branches
        )

    def run(cell, params, xp, carry0, **kw):
        return dispatch(cell, params, xp, carry0, False, **kw)

    def run_tokens(cell, params, tokens, carry0, **kw):
        return dispatch(cell, params, tokens, carry0, True, **kw)

    return Backend("auto", run, lambda cell, **features: None, run_tokens)
