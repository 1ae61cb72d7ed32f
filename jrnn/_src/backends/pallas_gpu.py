"""Pallas GPU kernels (Triton backend): which kernel, at which precision, on which GPU.

Two kernel designs, picked per call by :func:`choose_mode` (see docs/pallas.md):

=============  ===========================================================================
``"step"``     ``pallas_gpu_step``: one kernel per time step over a grid of (batch blocks x
               hidden blocks), every program computing all gates of its hidden units; the
               time loop is an XLA scan; the backward is an XLA reverse scan with one
               dependent matmul per step. Spreads one step over the whole GPU.
``"persistent"``  ``pallas_gpu_persistent``: the whole time loop inside one kernel, one
               program per batch block, ``h`` in registers. No per-step launches, but only
               ``batch / bb`` SMs busy: used for small hidden sizes only.
=============  ===========================================================================

Rule (``mode="auto"``): persistent when the hidden size (and seed_rnn's output size) is at
most ``persistent_max_hidden`` (128), else step. At <= 128 units the step kernel has at most 8
hidden blocks, so it cannot fill the GPU either, and the persistent kernel saves the per-step
launch and the round trip of ``h`` through memory; above it the persistent kernel's
Python-unrolled tiles grow its trace and its registers quadratically. The threshold is a
reasoned default, not a measured one: ``jrnn/bench/gpu_check.py`` times both.

Float32 matmuls run as TF32 on tensor cores by default (XLA's own default for float32 dots
on Ampere and later); ``precision="highest"`` (or ``jax.default_matmul_precision("float32")``)
asks for IEEE float32. bfloat16 cells multiply in bfloat16 with float32 accumulation.

Why Triton and not Mosaic GPU (jax 0.10.2): ``pl.pallas_call`` on Mosaic GPU is deprecated in
favour of ``plgpu.kernel``, does not lower ``jnp.dot`` (it needs explicit ``wgmma`` on 64-row
warpgroup tiles, Hopper and later). Triton through XLA needs compute capability >= 8.0:
:func:`supports_device` declines older GPUs (Colab's free T4 is 7.5).
"""

from __future__ import annotations

from typing import Any

import jax

from jrnn._src.backends import pallas_gpu_persistent, pallas_gpu_step
from jrnn._src.backends.pallas_gpu_persistent import _Plan  # noqa: F401  (tests, bench)
from jrnn._src.backends.pallas_gpu_tiles import pointwise, resolve_precision  # noqa: F401

MIN_COMPUTE_CAPABILITY = (8, 0)
PERSISTENT_MAX_HIDDEN = 128
MODES = ("auto", "step", "persistent")


def _capability(text) -> tuple[int, int] | None:
    try:
        major, minor = str(text).strip().split(".")[:2]
        return int(major), int(minor.rstrip("abf") or 0)
    except (ValueError, AttributeError):
        return None


def supports_device(device) -> str | None:
    """None if the Triton kernels can run on ``device``, else the reason.

    Args:
      device: a ``jax.Device`` or a description with ``platform``, ``device_kind`` and (for
        CUDA) ``compute_capability`` (a string like ``"8.0"``), e.g. a
        ``types.SimpleNamespace`` in tests. Non-GPU platforms are not judged here (None).

    Example:
      >>> import types
      >>> t4 = types.SimpleNamespace(platform="gpu", device_kind="Tesla T4",
      ...                            compute_capability="7.5")
      >>> supports_device(t4).split(":")[0]
      'Tesla T4 has compute capability 7.5'
    """
    platform = str(getattr(device, "platform", "")).lower()
    if platform not in ("gpu", "cuda", "rocm"):
        return None
    kind = getattr(device, "device_kind", "this GPU")
    if platform == "rocm" or "amd" in str(kind).lower():
        return f"{kind}: jrnn's Pallas GPU kernels are built and tested for CUDA only"
    cap = _capability(getattr(device, "compute_capability", None))
    if cap is None:
        return f"{kind}: unknown CUDA compute capability; Triton kernels need >= 8.0"
    if cap < MIN_COMPUTE_CAPABILITY:
        return (
            f"{kind} has compute capability {cap[0]}.{cap[1]}: XLA runs Pallas Triton kernels "
            "on compute capability >= 8.0 (A100, L4, H100 and later) only; use "
            "backend='fused' or 'xla'"
        )
    return None


def local_gpu_reason() -> str | None:
    """:func:`supports_device` of this process's first GPU, or None when there is none."""
    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        return None
    return supports_device(devices[0]) if devices else None


def choose_mode(spec, mode: str = "auto", persistent_max_hidden: int = PERSISTENT_MAX_HIDDEN):
    """``"persistent"`` or ``"step"`` for a kernel spec (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    small = max(spec.hidden, spec.output) <= persistent_max_hidden
    return "persistent" if small else "step"


_STEP_KW = ("block_batch", "block_hidden", "block_k", "num_warps")
_PERSISTENT_KW = ("block_batch", "block_hidden", "hold_bytes", "num_warps")


def _route(spec, xp, interpret, mode, persistent_max_hidden, precision, kw):
    if 0 in xp.shape[:2]:
        mode = "step"  # T = 0 or batch 0: the XLA scan returns the empty results, no kernel runs
    if not interpret:
        reason = local_gpu_reason()
        if reason is not None:
            raise NotImplementedError(f"backend='pallas' cannot run on this GPU: {reason}")
    mode = choose_mode(spec, mode, persistent_max_hidden)
    module, names = (
        (pallas_gpu_step, _STEP_KW) if mode == "step" else (pallas_gpu_persistent, _PERSISTENT_KW)
    )
    unknown = set(kw) - set(_STEP_KW) - set(_PERSISTENT_KW)
    if unknown:
        raise TypeError(f"unknown GPU kernel keywords {sorted(unknown)}")
    chosen = {k: v for k, v in kw.items() if k in names and v is not None}
    return module, dict(chosen, precision=resolve_precision(precision), interpret=interpret)


def forward(
    spec,
    w,
    bias,
    xp,
    carry0,
    maskf,
    resetf,
    *,
    reverse: bool,
    emit_carries: bool,
    interpret: Any = False,
    mode: str = "auto",
    precision: Any = None,
    persistent_max_hidden: int = PERSISTENT_MAX_HIDDEN,
    **kw,
):
    """Forward kernel; same contract as :func:`jrnn._src.backends.pallas_tpu.forward`.

    ``mode`` picks the kernel (``"auto"``, ``"step"``, ``"persistent"``), ``precision`` the
    float32 matmul precision (``"tf32"``, ``"highest"``, None = jax's default). ``kw``:
    tiling (``block_batch``, ``block_hidden``, ``block_k``, ``hold_bytes``, ``num_warps``);
    each kernel takes the ones it knows.
    """
    module, opts = _route(spec, xp, interpret, mode, persistent_max_hidden, precision, kw)
    return module.forward(
        spec, w, bias, xp, carry0, maskf, resetf, reverse=reverse, emit_carries=emit_carries, **opts
    )


def backward(
    spec,
    w,
    bias,
    xp,
    prev,
    maskf,
    resetf,
    dys,
    dcarries,
    dcarry,
    *,
    reverse: bool,
    interpret: Any = False,
    mode: str = "auto",
    precision: Any = None,
    persistent_max_hidden: int = PERSISTENT_MAX_HIDDEN,
    **kw,
):
    """Backward; same contract as :func:`jrnn._src.backends.pallas_tpu.backward`."""
    module, opts = _route(spec, xp, interpret, mode, persistent_max_hidden, precision, kw)
    return module.backward(
        spec, w, bias, xp, prev, maskf, resetf, dys, dcarries, dcarry, reverse=reverse, **opts
    )
