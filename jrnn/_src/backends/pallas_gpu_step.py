"""Pallas GPU (Triton) step kernel: one ``pallas_call`` per time step, spread over the GPU.

The time loop is an XLA ``lax.scan`` around the kernel (on a GPU, XLA runs the loop's
kernels from one command buffer). One step is a grid of ``(batch blocks, hidden blocks)``
programs; program ``(i, j)`` owns rows ``i*bb : +bb`` and hidden units ``j*bh : +bh`` and
computes *all* gates of those units, so the gate math is the matmul's epilogue::

    for k in range(P // bk):                     a fori_loop (not unrolled in Python)
        a = h[rows, k*bk : +bk]                  (carry0 there instead where a reset is due)
        acc_q += a @ W_hh[k*bk : +bk, q*P + j*bh : +bh]     for every gate q, f32 accumulate
    z_q = xp_t[rows, q*P + j*bh : +bh] + acc_q [+ b_hh]
    h', c' = pointwise(z, c[rows, cols]);  masked rows keep the old carry and emit y = 0

``P`` is the hidden size padded to the tile; every gate segment of ``W_hh``/``xp`` is padded
to ``P`` (seed_rnn's output segment too). Each program reads the ``P x (gates * bh)`` column
block of ``W_hh`` it needs (from L2 after the first step), so one step reads ``W_hh`` once per
batch block.

The backward is XLA: the recurrent pre-activations of every step, ``h_{t-1} @ W_hh`` for all
t, are one large matmul before the loop; then a reverse ``lax.scan`` whose step is
``jax.vjp`` of the cell's own ``gates`` (fused elementwise) and the one dependent matmul
``dh_{t-1} = dh_direct + dG_t @ W_hh^T``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jrnn._src.backends.pallas_gpu_tiles import (
    F32,
    MIN_TILE,
    PRECISIONS,
    dot,
    pad_axis,
    pad_cols,
    pad_last,
    pointwise,
    pow2_at_most,
    round_up,
    segments,
)

# Enough programs per step to cover the SMs of an A100 (108) or H100/H200 (132).
TARGET_PROGRAMS = 128
MAX_BLOCK_BATCH = 32
BLOCK_K = 32


class StepPlan:
    """Static tiling of the step kernel.

    Attributes:
      bb: batch rows per program (a power of two, 16 to ``MAX_BLOCK_BATCH``).
      bp: the batch padded to a multiple of ``bb``.
      bh: hidden units per program (a power of two >= 16): the largest of 64, 32, 16 that
        still gives ``TARGET_PROGRAMS`` programs per step, else 16.
      bk: the K tile of the in-kernel loop over ``h``'s columns.
      P: the padded width of every gate segment and of the carry (a multiple of bh and bk).
      nq: number of gate segments.
    """

    def __init__(self, spec, batch, *, block_batch=None, block_hidden=None, block_k=None):
        self.spec = spec
        self.segs = segments(spec)
        self.nq = len(self.segs)
        bb = block_batch or min(max(pow2_at_most(max(batch, 1) * 2 - 1), MIN_TILE), MAX_BLOCK_BATCH)
        self.bb = max(pow2_at_most(bb), MIN_TILE)
        self.bp = round_up(max(batch, 1), self.bb)
        nb = self.bp // self.bb
        width = max(spec.hidden, spec.output)
        if block_hidden:
            bh = max(pow2_at_most(block_hidden), MIN_TILE)
        else:
            bh = next(
                (c for c in (64, 32) if nb * (round_up(width, c) // c) >= TARGET_PROGRAMS),
                MIN_TILE,
            )
        self.bh = bh
        self.bk = max(pow2_at_most(block_k or BLOCK_K), MIN_TILE)
        self.P = round_up(width, max(self.bh, self.bk))
        self.widths = [self.P] * self.nq
        self.grid = (nb, self.P // self.bh)


def _step_kernel(*refs, plan, precision, has_bias, has_mask, has_reset):
    spec, bb, bh, bk, P, nc = plan.spec, plan.bb, plan.bh, plan.bk, plan.P, plan.spec.num_carry
    refs = list(refs)
    w_ref = refs.pop(0)
    b_ref = refs.pop(0) if has_bias else None
    xp_ref = refs.pop(0)
    h_refs = [refs.pop(0) for _ in range(nc)]
    c0_refs = [refs.pop(0) for _ in range(nc)] if has_reset else []
    m_ref = refs.pop(0) if has_mask else None
    r_ref = refs.pop(0) if has_reset else None
    new_refs = [refs.pop(0) for _ in range(nc)]
    y_ref = refs.pop(0)
    j = pl.program_id(1)
    rows = pl.ds(pl.multiple_of(pl.program_id(0) * bb, bb), bb)
    cols = pl.ds(pl.multiple_of(j * bh, bh), bh)
    reset = None if r_ref is None else r_ref[rows, pl.ds(0, 1)] > 0

    def carry_tile(leaf, idx):
        v = h_refs[leaf][rows, idx]
        return v if reset is None else jnp.where(reset, c0_refs[leaf][rows, idx], v)

    def gate_cols(q):
        return pl.ds(pl.multiple_of(q * P + j * bh, bh), bh)

    def body(k, accs):
        a = carry_tile(0, pl.ds(pl.multiple_of(k * bk, bk), bk))
        kk = pl.ds(pl.multiple_of(k * bk, bk), bk)
        return tuple(
            acc + dot(spec, a, w_ref[kk, gate_cols(q)], precision) for q, acc in enumerate(accs)
        )

    zero = jnp.zeros((bb, bh), F32)
    hs = lax.fori_loop(0, P // bk, body, (zero,) * plan.nq)
    if b_ref is not None:
        hs = tuple(h + b_ref[pl.ds(0, 1), gate_cols(q)] for q, h in enumerate(hs))
    xs = tuple(xp_ref[rows, gate_cols(q)] for q in range(plan.nq))
    old = tuple(carry_tile(leaf, cols) for leaf in range(nc))
    new, y = pointwise(spec, xs, hs, old)
    if m_ref is not None:
        m = m_ref[rows, pl.ds(0, 1)] > 0
        new = tuple(jnp.where(m, a, b) for a, b in zip(new, old, strict=True))
        y = jnp.where(m, y, 0.0)
    for ref, tile in zip(new_refs, new, strict=True):
        ref[rows, cols] = tile
    y_ref[rows, cols] = y


def _step_call(plan, *, precision, has_bias, has_mask, has_reset, interpret, num_warps, name):
    nc = plan.spec.num_carry
    kernel = functools.partial(
        _step_kernel,
        plan=plan,
        precision=precision,
        has_bias=has_bias,
        has_mask=has_mask,
        has_reset=has_reset,
    )
    out_shape = [jax.ShapeDtypeStruct((plan.bp, plan.P), F32)] * (nc + 1)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=plan.grid,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=2),
        interpret=interpret,
        name=name,
    )


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
    precision: str = "tf32",
    block_batch: int | None = None,
    block_hidden: int | None = None,
    block_k: int | None = None,
    num_warps: int = 4,
):
    """Step-kernel forward; the contract of ``pallas_gpu.forward``."""
    T, B, _ = xp.shape
    H = spec.hidden
    plan = StepPlan(spec, B, block_batch=block_batch, block_hidden=block_hidden, block_k=block_k)
    w = pad_axis(pad_cols(w, plan.segs, plan.widths), 0, plan.P)
    bias = None if bias is None else pad_cols(bias, plan.segs, plan.widths)
    xp = pad_axis(pad_cols(xp, plan.segs, plan.widths), 1, plan.bp)
    maskf, resetf = (pad_axis(a, 1, plan.bp) for a in (maskf, resetf))
    c0 = tuple(pad_axis(pad_last(c, plan.P), 0, plan.bp) for c in carry0)
    call = _step_call(
        plan,
        precision=precision,
        has_bias=bias is not None,
        has_mask=maskf is not None,
        has_reset=resetf is not None,
        interpret=interpret,
        num_warps=num_warps,
        name=f"jrnn_{spec.name}_step_gpu",
    )

    def step(carry, inputs):
        xp_t, m_t, r_t = inputs
        args = [w, *([bias] if bias is not None else []), xp_t, *carry]
        args += [*(c0 if r_t is not None else ()), *(a for a in (m_t, r_t) if a is not None)]
        *new, y = call(*args)
        return tuple(new), (y, tuple(new) if emit_carries else None)

    carry, (ys, carries) = lax.scan(step, c0, (xp, maskf, resetf), reverse=reverse)
    carry = tuple(c[:B, :H] for c in carry)
    ys = ys[:, :B, : spec.output]
    carries = tuple(c[:, :B, :H] for c in carries) if emit_carries else None
    return carry, ys, carries


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
    precision: str = "tf32",
    **unused,
):
    """XLA backward of the step kernel; the contract of ``pallas_gpu.backward``.

    One matmul for every step's ``h_{t-1} @ W_hh`` up front, then a reverse scan with one
    dependent matmul per step (``dG_t @ W_hh^T``).
    """
    del unused  # tiling keywords of the forward kernel
    prev = tuple(p[: xp.shape[0]] for p in prev)  # at T = 0 the caller's prev has carry0 only
    prec = PRECISIONS[precision] if spec.dtype == F32 else None
    hp_all = jnp.einsum(
        "tbh,hg->tbg",
        prev[0].astype(spec.dtype),
        w,
        precision=prec,
        preferred_element_type=F32,
    )
    if bias is not None:
        hp_all = hp_all + bias[None]

    def step(state, inputs):
        dc, acc = state
        xp_t, hp_t, prev_t, dy_t, dcs_t, m_t, r_t = inputs
        if dcs_t is not None:
            dc = tuple(a + b for a, b in zip(dc, dcs_t, strict=True))
        _, vjp = jax.vjp(lambda x, h, c: spec.gates(c, x, h), xp_t, hp_t, prev_t)
        dx, dh, direct = vjp((dc, dy_t))
        if m_t is not None:
            dx, dh = jnp.where(m_t > 0, dx, 0.0), jnp.where(m_t > 0, dh, 0.0)
        dh_prev = direct[0] + dot(spec, dh, w, precision, trans_b=True)
        new = (dh_prev, *direct[1:])
        if m_t is not None:
            new = tuple(jnp.where(m_t > 0, a, b) for a, b in zip(new, dc, strict=True))
        if r_t is not None:
            acc = tuple(a + jnp.where(r_t > 0, b, 0.0) for a, b in zip(acc, new, strict=True))
            new = tuple(jnp.where(r_t > 0, 0.0, b) for b in new)
        return (new, acc), (dx, None if spec.hp_is_xp else dh)

    acc0 = tuple(jnp.zeros_like(d) for d in dcarry)
    inputs = (xp, hp_all, tuple(prev), dys, dcarries, maskf, resetf)
    (dc, acc), (dxp, dhp) = lax.scan(step, (tuple(dcarry), acc0), inputs, reverse=not reverse)
    return dxp, dhp, tuple(a + b for a, b in zip(dc, acc, strict=True))
