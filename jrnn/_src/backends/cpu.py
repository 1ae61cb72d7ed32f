"""The ``"cpu"`` backend: the whole time loop in one C++ kernel called through XLA's FFI.

XLA:CPU runs ``lax.scan``'s per-step dot as a separate GEMM that re-packs ``W_hh`` and syncs
its threads every step, and cannot fuse the gate math into it. This backend runs the time loop
of one layer and direction inside one custom call (``cpu_kernel/rnn_kernel.cc``):

* forward: ``W_hh`` is packed once per call into panels (for every row k, the gate columns of
  V hidden units side by side); a step's work items are the panels: ``h_{t-1}`` times the panel
  with a register-blocked micro-kernel, the gates applied to the accumulators in registers, the
  panel's units of ``h_t`` written. Threads claim items in order; a step starts once the previous
  one is done (no ``[t, b, g]`` round trip through memory, no per-thread barrier). With
  gradients, it also saves the activated gates and the carry entering every step.
* backward (``jax.custom_vjp``): a second call runs the reverse loop, one dependent
  ``dz_t W_hh^T`` per step with ``W_hh^T`` packed once, and returns ``dz`` (the cotangent of
  ``xp``); ``dW_hh`` is then one ``[h, t b] x [t b, g]`` einsum.

Cells: the LSTM (without peepholes, layer norm or projection), the GRU (reset-after), Elman
(tanh, relu) and the lecture's seed cell, in float32; everything else is declined by
``supports`` with a reason. Lengths, resets, reverse, an initial carry and every-step carries
follow the backend contract exactly; under ``vmap`` (bidirectional layers) the kernel runs the
stacked problems one after the other.

The kernel is compiled on first use (see :mod:`jrnn._src.backends.cpu_kernel`); without a
working C++ compiler the backend warns once and runs ``"xla"``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jrnn._src.backends import cpu_kernel, xla

_CELL_IDS = {"lstm": 0, "gru": 1, "seed_rnn": 4}
_ELMAN_IDS = {"tanh": 2, "relu": 3}


def _cell_id(cell) -> tuple[int | None, str | None]:
    """``(kernel cell id, None)`` or ``(None, reason)``."""
    name = cell.name
    if "+" in name:
        return None, (
            f"cell {name!r} overrides recurrence (recurrent dropout or zoneout); use 'xla'"
        )
    for key in ("dtype", "param_dtype"):
        dt = cell.option(key, "float32")
        if dt != "float32":
            return None, f"the cpu kernel computes in float32 only, got {key}={dt}"
    if name == "lstm":
        for opt in ("peepholes", "layer_norm", "proj_size"):
            if cell.option(opt):
                return None, f"the cpu kernel runs the plain LSTM, not {opt}={cell.option(opt)!r}"
        return _CELL_IDS[name], None
    if name == "gru":
        if not cell.option("reset_after", True):
            return None, "the cpu kernel runs the reset-after GRU only (reset_after=True)"
        return _CELL_IDS[name], None
    if name == "elman":
        act = cell.option("activation", "tanh")
        if act not in _ELMAN_IDS:
            return None, f"the cpu kernel has no Elman activation {act!r}"
        return _ELMAN_IDS[act], None
    if name == "seed_rnn":
        return _CELL_IDS[name], None
    return None, f"the cpu kernel has no cell {name!r} (it runs lstm, gru, elman, seed_rnn)"


def supports(cell, **features) -> str | None:
    """Plain LSTM, reset-after GRU, Elman and the seed cell in float32, on the CPU platform;
    every feature (tokens, lengths, resets, reverse, return_carries) is supported."""
    del features
    if jax.default_backend() != "cpu":
        return f"the cpu kernel runs on the CPU platform only, not {jax.default_backend()!r}"
    return _cell_id(cell)[1]


def _empty():
    return jax.ShapeDtypeStruct((0,), jnp.float32)


def _fwd_call(cell_id, extra, reverse, save, carries, w, bh, xp, h0, c0, m8, r8):
    T, B, _ = xp.shape
    H = w.shape[0]
    HC = c0.shape[-1]
    out = extra if cell_id == 4 else H
    S = {0: 4 * H, 1: 4 * H, 4: extra + H}.get(cell_id, H)
    f32 = jnp.float32
    shapes = [
        jax.ShapeDtypeStruct((T, B, out), f32),  # ys
        jax.ShapeDtypeStruct((B, H), f32),  # hT
        jax.ShapeDtypeStruct((B, HC), f32),  # cT
        jax.ShapeDtypeStruct((T, B, H), f32) if carries else _empty(),  # hs
        jax.ShapeDtypeStruct((T, B, HC), f32) if carries else _empty(),  # cs
        jax.ShapeDtypeStruct((T, B, H) if save else (0,), f32),  # hin
        jax.ShapeDtypeStruct((T, B, HC) if save else (0,), f32),  # cin
        jax.ShapeDtypeStruct((T, B, S), f32) if save else _empty(),  # saved gates
    ]
    call = jax.ffi.ffi_call("jrnn_rnn_fwd", shapes, vmap_method="broadcast_all")
    return call(
        xp,
        w,
        bh,
        h0,
        c0,
        m8,
        r8,
        cell=np.int32(cell_id),
        extra=np.int64(extra),
        reverse=bool(reverse),
    )


def _make(cell_id: int, extra: int, reverse: bool, return_carries: bool):
    """The custom-VJP loop ``(w, bh, xp, h0, c0, mask, resets) -> (hT, cT, ys, hs, cs)``."""
    gru = cell_id == 1

    def forward(w, bh, xp, h0, c0, m8, r8, save):
        ys, hT, cT, hs, cs, hin, cin, sv = _fwd_call(
            cell_id, extra, reverse, save, return_carries, w, bh, xp, h0, c0, m8, r8
        )
        if not return_carries:
            hs = cs = None
        return (hT, cT, ys, hs, cs), (hin, cin, sv)

    @jax.custom_vjp
    def loop(w, bh, xp, h0, c0, m8, r8):
        return forward(w, bh, xp, h0, c0, m8, r8, save=False)[0]

    def loop_fwd(w, bh, xp, h0, c0, m8, r8):
        out, saved = forward(w, bh, xp, h0, c0, m8, r8, save=True)
        return out, (w, bh, m8, r8, saved)

    def loop_bwd(res, cts):
        w, bh, m8, r8, (hin, cin, sv) = res
        dhT, dcT, dys, dhs, dcs = cts
        T, B = m8.shape
        GW = w.shape[1]
        if dhs is None:
            dhs, dcs = jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32)
        shapes = [
            jax.ShapeDtypeStruct((T, B, GW), jnp.float32),  # dxp
            jax.ShapeDtypeStruct((T, B, GW) if gru else (0,), jnp.float32),  # dhp
            jax.ShapeDtypeStruct(dhT.shape, jnp.float32),  # dh0
            jax.ShapeDtypeStruct(dcT.shape, jnp.float32),  # dc0
        ]
        call = jax.ffi.ffi_call("jrnn_rnn_bwd", shapes, vmap_method="broadcast_all")
        dxp, dhp, dh0, dc0 = call(
            w,
            sv,
            hin,
            cin,
            m8,
            r8,
            dys,
            dhs,
            dcs,
            dhT,
            dcT,
            cell=np.int32(cell_id),
            extra=np.int64(extra),
            reverse=bool(reverse),
        )
        dz = dhp if gru else dxp
        # dW_hh: one [h, t b] x [t b, g] GEMM over the carries entering every step.
        dw = jnp.einsum("tbh,tbg->hg", hin, dz, precision=jax.lax.Precision.HIGHEST)
        dbh = jnp.sum(dhp, axis=(0, 1)) if bh.shape[0] else jnp.zeros_like(bh)
        return dw, dbh, dxp, dh0, dc0, None, None

    loop.defvjp(loop_fwd, loop_bwd)
    return loop


def run(cell, params, xp, carry0, *, mask, resets, reverse, unroll, return_carries):
    """Runs ``cell`` over the leading time axis of ``xp`` in the C++ kernel.

    Args:
      cell: a :class:`jrnn.Cell` that :func:`supports` accepts.
      params: the cell's params.
      xp: ``[t, b..., g]`` projected inputs.
      carry0: the initial carry, ``[b..., ...]`` leaves.
      mask: ``[t, b...]`` bool (False = padding) or None.
      resets: ``[t, b...]`` bool (True = restart from ``carry0``) or None.
      reverse: process the time axis from last to first.
      unroll: ignored (the kernel's loop is not a scan).
      return_carries: also return every step's carry.

    Returns:
      ``(carry, ys [t, b..., o], carries [t, b..., ...] or None)``.
    """
    cell_id, reason = _cell_id(cell)
    if reason is not None:
        raise NotImplementedError(f"backend='cpu' does not support this call: {reason}")
    if not hasattr(xp, "shape"):
        raise TypeError(
            f"backend='cpu' needs the projected inputs as one array, got {type(xp).__name__}"
        )
    dtypes = {a.dtype for a in (xp, params.w_hh, *jax.tree.leaves(carry0))}
    if dtypes != {jnp.dtype(jnp.float32)}:
        raise NotImplementedError(
            f"backend='cpu' computes in float32 only, got dtypes {sorted(map(str, dtypes))}"
        )
    if not cpu_kernel.load():
        return xla.run(
            cell,
            params,
            xp,
            carry0,
            mask=mask,
            resets=resets,
            reverse=reverse,
            unroll=unroll,
            return_carries=return_carries,
        )
    lstm = cell_id == 0
    T, GW = xp.shape[0], xp.shape[-1]
    batch = tuple(xp.shape[1:-1])
    B = math.prod(batch)
    H = cell.hidden_size
    extra = cell.output_size if cell_id == 4 else 0
    h0, c0 = carry0 if lstm else (carry0, None)
    h0 = h0.reshape(B, H)
    c0 = c0.reshape(B, H) if lstm else jnp.zeros((B, 0), jnp.float32)
    if mask is None:
        m8 = jnp.ones((T, B), jnp.uint8)
    else:
        m8 = mask.reshape(T, B).astype(jnp.uint8)
    if resets is None:
        r8 = jnp.zeros((T, B), jnp.uint8)
    else:
        r8 = resets.reshape(T, B).astype(jnp.uint8)
    bh = params.b_hh if cell_id == 1 else jnp.zeros((0,), jnp.float32)
    loop = _make(cell_id, extra, bool(reverse), bool(return_carries))
    hT, cT, ys, hs, cs = loop(params.w_hh, bh, xp.reshape(T, B, GW), h0, c0, m8, r8)
    ys = ys.reshape(T, *batch, ys.shape[-1])
    unflat = lambda a: a.reshape(*batch, H)  # noqa: E731
    carry = (unflat(hT), unflat(cT)) if lstm else unflat(hT)
    carries = None
    if return_carries:
        steps = lambda a: a.reshape(T, *batch, H)  # noqa: E731
        carries = (steps(hs), steps(cs)) if lstm else steps(hs)
    return carry, ys, carries
