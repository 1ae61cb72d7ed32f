"""Persistent Pallas GPU (Triton) kernels: the whole time loop of a cell in one ``pallas_call``.

Used for small hidden sizes (see ``pallas_gpu.choose_mode``). Grid ``(batch blocks,)``; each
program owns ``bb`` rows (a power of two >= 16) for all time steps. The hidden dim is split
into ``nh`` blocks of ``bh`` (a power of two >= 16) unrolled in Python, so ``h`` and ``c`` live
in registers as ``nh`` tiles of ``[bb, bh]``::

    for each step t (a fori_loop), for each hidden block j, for each gate q:
        z_qj = xp[t, :, q*H + j*bh : +bh] + sum_k h_k @ W_hh[k*bh : +bh, q*H + j*bh : +bh]
    h'_j, c'_j = pointwise(z_.j, c_j)

``W_hh`` tiles are loaded once before the loop (kept in registers) when the whole matrix is
at most ``hold_bytes``; otherwise they are re-read (L2-resident) every step. The Python
unrolling is why this kernel is only used while ``nh`` is small: its trace grows as ``nh^2``.
The backward kernel takes ``jax.vjp`` of the same tile functions.
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
    dot,
    pad_axis,
    pad_cols,
    pad_last,
    pointwise,
    pow2_at_most,
    round_up,
    segments,
    unpad_cols,
)

_F32 = F32


class _Plan:
    """Static tiling of one call: padded sizes, tiles and the column of every (gate, tile)."""

    def __init__(
        self, spec, batch, *, block_batch, block_hidden, hold_bytes, itemsize, precision="highest"
    ):
        self.spec = spec
        self.precision = precision
        self.segs = segments(spec)
        self.hp = round_up(spec.hidden, MIN_TILE)
        if spec.name == "seed_rnn":
            self.op = round_up(spec.output, MIN_TILE)
            self.widths = [self.op, self.hp]
        else:
            self.op = self.hp
            self.widths = [self.hp] * len(self.segs)
        bh = pow2_at_most(block_hidden or 128)
        while self.hp % bh or self.op % bh:
            bh //= 2
        self.bh = bh
        self.nh, self.no = self.hp // bh, self.op // bh
        self.offsets = [sum(self.widths[:q]) for q in range(len(self.widths))]
        self.gp = sum(self.widths)
        bb = block_batch or min(max(pow2_at_most(batch), MIN_TILE), 64)
        self.bb = max(pow2_at_most(bb), MIN_TILE)
        self.bp = round_up(batch, self.bb)
        self.hold = self.hp * self.gp * itemsize <= hold_bytes

    def col(self, q, j):
        return self.offsets[q] + j * self.bh


def _weights(plan, w_ref):
    """``tile(k, col) -> W_hh[k*bh:+bh, col:+bh]``, loaded up front when it fits."""
    bh = plan.bh

    def load(k, col):
        return w_ref[pl.ds(k * bh, bh), pl.ds(col, bh)]

    if not plan.hold:
        return load
    cols = sorted({plan.col(q, j) for q in range(len(plan.widths)) for j in range(plan.nh)})
    held = {(k, c): load(k, c) for k in range(plan.nh) for c in cols}
    return lambda k, col: held[(k, col)]


def _gate_tiles(plan, t, rows, xp_ref, b_ref, h_tiles, wt, q, j):
    """``(x tile, h-side tile)`` of gate ``q`` at hidden tile ``j`` for step ``t``."""
    spec, bh, col = plan.spec, plan.bh, plan.col(q, j)
    x = xp_ref[t, rows, pl.ds(col, bh)]
    h = dot(spec, h_tiles[0], wt(0, col), plan.precision)
    for k in range(1, plan.nh):
        h = h + dot(spec, h_tiles[k], wt(k, col), plan.precision)
    if b_ref is not None:
        h = h + b_ref[pl.ds(0, 1), pl.ds(col, bh)]
    return x, h


def _step_tiles(plan, t, rows, xp_ref, b_ref, h_tiles, wt):
    """All gate tiles of a step: ``xs[j]``, ``hs[j]`` tuples per gate (and seed's y tiles)."""
    nq = len(plan.widths)
    if plan.spec.name == "seed_rnn":
        y = [_gate_tiles(plan, t, rows, xp_ref, b_ref, h_tiles, wt, 0, j) for j in range(plan.no)]
        s = [_gate_tiles(plan, t, rows, xp_ref, b_ref, h_tiles, wt, 1, j) for j in range(plan.nh)]
        return y, s
    tiles = []
    for j in range(plan.nh):
        pairs = [_gate_tiles(plan, t, rows, xp_ref, b_ref, h_tiles, wt, q, j) for q in range(nq)]
        tiles.append((tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)))
    return None, tiles


def _forward_kernel(*refs, plan, steps, reverse, has_bias, has_mask, has_reset, emit):
    spec, bh, bb, nc = plan.spec, plan.bh, plan.bb, plan.spec.num_carry
    refs = list(refs)
    w_ref = refs.pop(0)
    b_ref = refs.pop(0) if has_bias else None
    xp_ref = refs.pop(0)
    c0_refs = [refs.pop(0) for _ in range(nc)]
    m_ref = refs.pop(0) if has_mask else None
    r_ref = refs.pop(0) if has_reset else None
    out_refs = [refs.pop(0) for _ in range(nc)]
    ys_ref = refs.pop(0)
    cs_refs = [refs.pop(0) for _ in range(nc)] if emit else []
    rows = pl.ds(pl.multiple_of(pl.program_id(0) * bb, bb), bb)
    wt = _weights(plan, w_ref)

    def tiles_of(ref, t=None):
        idx = () if t is None else (t,)
        return tuple(ref[(*idx, rows, pl.ds(j * bh, bh))] for j in range(plan.nh))

    def step(s, carry):
        t = steps - 1 - s if reverse else s
        if r_ref is not None:
            r = r_ref[t, rows, pl.ds(0, 1)] > 0
            carry = tuple(
                tuple(jnp.where(r, a, b) for a, b in zip(tiles_of(c0), leaf, strict=True))
                for c0, leaf in zip(c0_refs, carry, strict=True)
            )
        y_parts, parts = _step_tiles(plan, t, rows, xp_ref, b_ref, carry[0], wt)
        if spec.name == "seed_rnn":
            new = (tuple(jnp.tanh(x + h) for x, h in parts),)
            ys = [jax.nn.relu(x + h) for x, h in y_parts]
        else:
            outs = [
                pointwise(spec, xs, hs, tuple(leaf[j] for leaf in carry))
                for j, (xs, hs) in enumerate(parts)
            ]
            new = tuple(tuple(o[0][i] for o in outs) for i in range(nc))
            ys = [o[1] for o in outs]
        if m_ref is not None:
            m = m_ref[t, rows, pl.ds(0, 1)] > 0
            new = tuple(
                tuple(jnp.where(m, a, b) for a, b in zip(n, c, strict=True))
                for n, c in zip(new, carry, strict=True)
            )
            ys = [jnp.where(m, y, 0.0) for y in ys]
        for j, y in enumerate(ys):
            ys_ref[t, rows, pl.ds(j * bh, bh)] = y
        for ref, leaf in zip(cs_refs, new if emit else (), strict=True):
            for j, tile in enumerate(leaf):
                ref[t, rows, pl.ds(j * bh, bh)] = tile
        return new

    carry = lax.fori_loop(0, steps, step, tuple(tiles_of(r) for r in c0_refs))
    for ref, leaf in zip(out_refs, carry, strict=True):
        for j, tile in enumerate(leaf):
            ref[rows, pl.ds(j * bh, bh)] = tile


def _backward_kernel(*refs, plan, steps, reverse, has_bias, has_mask, has_reset, has_dcs):
    spec, bh, bb, nc, nh = plan.spec, plan.bh, plan.bb, plan.spec.num_carry, plan.nh
    refs = list(refs)
    w_ref = refs.pop(0)
    b_ref = refs.pop(0) if has_bias else None
    xp_ref = refs.pop(0)
    prev_refs = [refs.pop(0) for _ in range(nc)]
    dys_ref = refs.pop(0)
    dcs_refs = [refs.pop(0) for _ in range(nc)] if has_dcs else []
    m_ref = refs.pop(0) if has_mask else None
    r_ref = refs.pop(0) if has_reset else None
    dT_refs = [refs.pop(0) for _ in range(nc)]
    dxp_ref = refs.pop(0)
    dhp_ref = None if spec.hp_is_xp else refs.pop(0)
    dc_refs = [refs.pop(0) for _ in range(nc)]
    rows = pl.ds(pl.multiple_of(pl.program_id(0) * bb, bb), bb)
    wt = _weights(plan, w_ref)
    zero = jnp.zeros((bb, bh), _F32)

    def tiles_of(ref, t=None, n=nh):
        idx = () if t is None else (t,)
        return tuple(ref[(*idx, rows, pl.ds(j * bh, bh))] for j in range(n))

    def step(s, state):
        dcarry, acc = state
        t = s if reverse else steps - 1 - s
        if has_dcs:
            dcarry = tuple(
                tuple(a + b for a, b in zip(d, tiles_of(r, t), strict=True))
                for d, r in zip(dcarry, dcs_refs, strict=True)
            )
        carry = tuple(tiles_of(r, t) for r in prev_refs)
        y_parts, parts = _step_tiles(plan, t, rows, xp_ref, b_ref, carry[0], wt)
        dy = tiles_of(dys_ref, t, plan.no)
        direct = [[zero] * nh for _ in range(nc)]
        grads = []  # (gate, tile, dx, dh)
        if spec.name == "seed_rnn":
            for j, (x, h) in enumerate(y_parts):
                _, vjp = jax.vjp(lambda a, b: jax.nn.relu(a + b), x, h)
                grads.append((0, j, *vjp(dy[j])))
            for j, (x, h) in enumerate(parts):
                _, vjp = jax.vjp(lambda a, b: jnp.tanh(a + b), x, h)
                grads.append((1, j, *vjp(dcarry[0][j])))
        else:
            for j, (xs, hs) in enumerate(parts):
                cj = tuple(leaf[j] for leaf in carry)
                _, vjp = jax.vjp(functools.partial(pointwise, spec), xs, hs, cj)
                dxs, dhs, dcj = vjp((tuple(d[j] for d in dcarry), dy[j]))
                for i in range(nc):
                    direct[i][j] = dcj[i]
                grads += [(q, j, dxs[q], dhs[q]) for q in range(len(dxs))]
        dh_prev = list(direct[0])
        for q, j, dx, dh in grads:
            if m_ref is not None:
                m = m_ref[t, rows, pl.ds(0, 1)] > 0
                dx, dh = jnp.where(m, dx, 0.0), jnp.where(m, dh, 0.0)
            col = plan.col(q, j)
            dxp_ref[t, rows, pl.ds(col, bh)] = dx
            if dhp_ref is not None:
                dhp_ref[t, rows, pl.ds(col, bh)] = dh
            for k in range(nh):
                dh_prev[k] = dh_prev[k] + dot(spec, dh, wt(k, col), plan.precision, True)
        new = (tuple(dh_prev), *(tuple(d) for d in direct[1:]))
        if m_ref is not None:
            m = m_ref[t, rows, pl.ds(0, 1)] > 0
            new = tuple(
                tuple(jnp.where(m, a, b) for a, b in zip(n, d, strict=True))
                for n, d in zip(new, dcarry, strict=True)
            )
        if r_ref is not None:
            r = r_ref[t, rows, pl.ds(0, 1)] > 0
            acc = tuple(
                tuple(a + jnp.where(r, b, 0.0) for a, b in zip(al, nl, strict=True))
                for al, nl in zip(acc, new, strict=True)
            )
            new = tuple(tuple(jnp.where(r, 0.0, b) for b in nl) for nl in new)
        return new, acc

    init = tuple(tiles_of(r) for r in dT_refs)
    acc0 = tuple((zero,) * nh for _ in range(nc))
    dcarry, acc = lax.fori_loop(0, steps, step, (init, acc0))
    for ref, leaf, aleaf in zip(dc_refs, dcarry, acc, strict=True):
        for j, (tile, a) in enumerate(zip(leaf, aleaf, strict=True)):
            ref[rows, pl.ds(j * bh, bh)] = tile + a


def _prepare(spec, w, bias, batch, block_batch, block_hidden, hold_bytes, precision):
    plan = _Plan(
        spec,
        batch,
        block_batch=block_batch,
        block_hidden=block_hidden,
        hold_bytes=hold_bytes,
        itemsize=jnp.dtype(w.dtype).itemsize,
        precision=precision,
    )
    w = pad_cols(w, plan.segs, plan.widths)
    w = jnp.pad(w, [(0, plan.hp - w.shape[0]), (0, 0)]) if w.shape[0] != plan.hp else w
    if bias is not None:
        bias = pad_cols(bias, plan.segs, plan.widths)
    return plan, w, bias


def _call(kernel, plan, out_shape, interpret, name, num_warps):
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(plan.bp // plan.bb,),
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
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
    block_batch: int | None = None,
    block_hidden: int | None = None,
    hold_bytes: int = 48 * 1024,
    num_warps: int = 4,
    precision: str = "tf32",
):
    """Persistent forward kernel; the contract of ``pallas_gpu.forward``."""
    T, B, _ = xp.shape
    H, nc = spec.hidden, spec.num_carry
    plan, w, bias = _prepare(spec, w, bias, B, block_batch, block_hidden, hold_bytes, precision)
    xp = pad_cols(xp, plan.segs, plan.widths)
    xp, maskf, resetf = [pad_axis(a, 1, plan.bp) for a in [xp, maskf, resetf]]
    carry0 = [pad_last(c, plan.hp) for c in [pad_axis(a, 0, plan.bp) for a in carry0]]
    inputs = [w, *([bias] if bias is not None else []), xp, *carry0]
    inputs += [a for a in (maskf, resetf) if a is not None]
    out_shape = [jax.ShapeDtypeStruct((plan.bp, plan.hp), _F32)] * nc
    out_shape.append(jax.ShapeDtypeStruct((T, plan.bp, plan.op), _F32))
    if emit_carries:
        out_shape += [jax.ShapeDtypeStruct((T, plan.bp, plan.hp), _F32)] * nc
    kernel = functools.partial(
        _forward_kernel,
        plan=plan,
        steps=T,
        reverse=reverse,
        has_bias=bias is not None,
        has_mask=maskf is not None,
        has_reset=resetf is not None,
        emit=emit_carries,
    )
    outs = _call(kernel, plan, out_shape, interpret, f"jrnn_{spec.name}_forward_gpu", num_warps)(
        *inputs
    )
    carry = tuple(c[:B, :H] for c in outs[:nc])
    ys = outs[nc][:, :B, : spec.output]
    carries = tuple(c[:, :B, :H] for c in outs[nc + 1 :]) if emit_carries else None
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
    interpret: Any = False,
    block_batch: int | None = None,
    block_hidden: int | None = None,
    hold_bytes: int = 48 * 1024,
    num_warps: int = 4,
    precision: str = "tf32",
):
    """Persistent backward kernel; the contract of ``pallas_gpu.backward``."""
    T, B, _ = xp.shape
    nc = spec.num_carry
    plan, w, bias = _prepare(spec, w, bias, B, block_batch, block_hidden, hold_bytes, precision)
    xp = pad_cols(xp, plan.segs, plan.widths)
    dys = pad_last(dys, plan.op)
    prev = [pad_last(p, plan.hp) for p in prev]
    xp, dys, maskf, resetf = [pad_axis(a, 1, plan.bp) for a in [xp, dys, maskf, resetf]]
    prev = [pad_axis(a, 1, plan.bp) for a in prev]
    inputs = [w, *([bias] if bias is not None else []), xp, *prev, dys]
    if dcarries is not None:
        inputs += [pad_axis(a, 1, plan.bp) for a in [pad_last(d, plan.hp) for d in dcarries]]
    inputs += [a for a in (maskf, resetf) if a is not None]
    inputs += [pad_last(c, plan.hp) for c in [pad_axis(a, 0, plan.bp) for a in dcarry]]
    out_shape = [jax.ShapeDtypeStruct((T, plan.bp, plan.gp), _F32)]
    if not spec.hp_is_xp:
        out_shape.append(jax.ShapeDtypeStruct((T, plan.bp, plan.gp), _F32))
    out_shape += [jax.ShapeDtypeStruct((plan.bp, plan.hp), _F32)] * nc
    kernel = functools.partial(
        _backward_kernel,
        plan=plan,
        steps=T,
        reverse=reverse,
        has_bias=bias is not None,
        has_mask=maskf is not None,
        has_reset=resetf is not None,
        has_dcs=dcarries is not None,
    )
    outs = _call(kernel, plan, out_shape, interpret, f"jrnn_{spec.name}_backward_gpu", num_warps)(
        *inputs
    )
    dxp = unpad_cols(outs[0][:, :B], plan.segs, plan.widths)
    k = 1
    dhp = None
    if not spec.hp_is_xp:
        dhp, k = unpad_cols(outs[1][:, :B], plan.segs, plan.widths), 2
    dc0 = tuple(d[:B, : spec.hidden] for d in outs[k : k + nc])
    return dxp, dhp, dc0
