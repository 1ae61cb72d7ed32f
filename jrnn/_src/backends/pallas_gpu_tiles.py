"""Shared pieces of the Pallas GPU (Triton) kernels: padding, per-tile gate math, precision.

Triton kernels cannot slice values, so the gate vector ``[.., g]`` is never split inside a
kernel: each gate is read from its own column block of a ref. Every gate segment of ``xp`` /
``W_hh``'s columns is zero-padded to the tile width; a padded unit sees zero inputs and zero
weights, stays exactly zero and never feeds a real unit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

F32 = jnp.float32
MIN_TILE = 16  # Triton's tensor-core dot needs M, N, K >= 16

# precision name -> the lax precision of float32 dots. In Pallas' Triton lowering (jax 0.10)
# Precision.DEFAULT/HIGH become tt.dot input_precision=TF32 (tensor cores, 10-bit mantissa)
# and Precision.HIGHEST becomes IEEE (FMA units, no tensor cores).
PRECISIONS = {"tf32": lax.Precision.DEFAULT, "highest": lax.Precision.HIGHEST}
_CONFIG_NAMES = {
    None: "tf32",
    "default": "tf32",
    "fastest": "tf32",
    "bfloat16": "tf32",
    "tensorfloat32": "tf32",
    "high": "tf32",
    "bfloat16_3x": "highest",
    "float32": "highest",
    "highest": "highest",
}


def resolve_precision(precision) -> str:
    """``"tf32"`` or ``"highest"``: the float32 matmul precision of the GPU kernels.

    ``precision=None`` follows ``jax.default_matmul_precision`` (unset: TF32, which is also
    XLA's default for float32 dots on Ampere and later GPUs); ``"tf32"`` / ``"highest"``, or a
    ``jax.lax.Precision``, choose explicitly. bfloat16 cells multiply in bfloat16 either way.
    """
    if precision is None:
        cfg = jax.config.jax_default_matmul_precision
        name = _CONFIG_NAMES.get(None if cfg is None else str(cfg).lower())
        if name is None:
            raise ValueError(f"unknown jax_default_matmul_precision {cfg!r}")
        return name
    if isinstance(precision, lax.Precision):
        return "highest" if precision == lax.Precision.HIGHEST else "tf32"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {tuple(PRECISIONS)}, a jax.lax.Precision or None, "
            f"got {precision!r}"
        )
    return precision


def dot(spec, a, b, precision: str, trans_b: bool = False):
    """``a @ b`` (or ``a @ b.T``): operands in the cell dtype, float32 accumulation."""
    prec = PRECISIONS[precision] if spec.dtype == F32 else None
    dims = (((1,), (1 if trans_b else 0,)), ((), ()))
    return lax.dot_general(
        a.astype(spec.dtype), b, dims, precision=prec, preferred_element_type=F32
    )


def pow2_at_most(n: int) -> int:
    return 1 << (max(int(n), 1).bit_length() - 1)


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def segments(spec) -> list[tuple[int, int]]:
    """``(offset, width)`` of the gate segments of ``xp``/``W_hh``'s columns."""
    H = spec.hidden
    if spec.name == "seed_rnn":
        return [(0, spec.output), (spec.output, H)]
    return [(q * H, H) for q in range(spec.width // H)]


def pad_cols(a, segs, widths):
    """Zero-pads each column segment of ``a``'s last axis to its padded width."""
    if all(w == pw for (_, w), pw in zip(segs, widths, strict=True)):
        return a
    parts = []
    for (off, w), pw in zip(segs, widths, strict=True):
        part = a[..., off : off + w]
        parts.append(jnp.pad(part, [(0, 0)] * (a.ndim - 1) + [(0, pw - w)]))
    return jnp.concatenate(parts, axis=-1)


def unpad_cols(a, segs, widths):
    """The inverse of :func:`pad_cols`."""
    if all(w == pw for (_, w), pw in zip(segs, widths, strict=True)):
        return a
    parts, off_p = [], 0
    for (_, w), pw in zip(segs, widths, strict=True):
        parts.append(a[..., off_p : off_p + w])
        off_p += pw
    return jnp.concatenate(parts, axis=-1)


def pad_last(a, width):
    """Zero-pads the last axis to ``width``."""
    if a.shape[-1] == width:
        return a
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])])


def pad_axis(a, axis, size):
    """Zero-pads ``axis`` to ``size`` (None passes through)."""
    if a is None or a.shape[axis] == size:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return jnp.pad(a, widths)


def pointwise(spec, xs, hs, carry):
    """One hidden tile's update from per-gate tiles (no slicing).

    Args:
      spec: the kernel spec.
      xs: tuple of ``[bb, bh]`` input-side pre-activations, one per gate.
      hs: the recurrent side ``h @ W_hh [+ b_hh]``, same structure.
      carry: tuple of the carry leaves' ``[bb, bh]`` tiles.

    Returns:
      ``(new carry tiles, y tile)``. seed_rnn's gates are ``(y, h)``: ``y = relu(.)``,
      ``h = tanh(.)`` (the output segment may be wider or narrower than the hidden one).
    """
    sig = jax.nn.sigmoid
    if spec.name == "lstm":
        zi, zf, zg, zo = (x + h for x, h in zip(xs, hs, strict=True))
        c = sig(zf) * carry[1] + sig(zi) * jnp.tanh(zg)
        h = sig(zo) * jnp.tanh(c)
        return (h, c), h
    if spec.name == "gru":
        r = sig(xs[0] + hs[0])
        z = sig(xs[1] + hs[1])
        n = jnp.tanh(xs[2] + r * hs[2])
        h = n + z * (carry[0] - n)
        return (h,), h
    if spec.name == "elman":
        z = xs[0] + hs[0]
        h = jax.nn.relu(z) if spec.activation == "relu" else jnp.tanh(z)
        return (h,), h
    if spec.name == "seed_rnn":
        return (jnp.tanh(xs[1] + hs[1]),), jax.nn.relu(xs[0] + hs[0])
    raise ValueError(f"no tile update for cell {spec.name!r}")
