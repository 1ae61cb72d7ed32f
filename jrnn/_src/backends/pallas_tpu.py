"""Pallas TPU (Mosaic) kernels: the whole time loop of a cell in one ``pallas_call``.

Forward kernel, grid ``(batch blocks [parallel], time chunks [arbitrary])``::

    W_hh [h, g]          one single-buffered VMEM block for every grid step: copied once
    xp   [tc, bb, g]     chunk (tix(j), i): double-buffered by the Pallas pipeline
    carry (bb, h)        an output block whose index does not change along the time axis: it
                         stays in VMEM across chunks and carries the state between them
    per step s of the chunk (a fori_loop):
        hp = h @ W_hh [+ b_hh]                 MXU, operands in the cell dtype, f32 accumulate
        carry, y = cell.gates(carry, xp_s, hp) the cell's own equations
        masked steps keep the carry and write y = 0; resets restart from carry0 first

Backward kernel, same grid with time reversed: per step it reloads the saved carry entering
the step, recomputes ``hp`` and the gates, takes ``jax.vjp`` of ``cell.gates`` (the equations
are never restated here) and emits ``dxp`` (= ``dhp`` unless the cell is a GRU, which also
emits ``dhp``), carrying ``dcarry`` across steps: ``dh_{t-1} = dh_direct + dhp @ W_hh^T``.

Block shapes follow Mosaic's rule: the last two dims of every block are divisible by
(8, 128) or equal to the array's. Batch blocks are the full batch (<= 128) or a multiple of 8;
the hidden/gate dims are never split (``W_hh`` and ``h`` are whole in VMEM).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jrnn._src.backends import tpu_vmem

_F32 = jnp.float32
# The backward kernel takes every step's ``h @ W_hh [+ b_hh]`` precomputed (see backward).
PRECOMPUTED_HP = True


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def dims(spec) -> tpu_vmem.Dims:
    """The widths of ``spec`` (after padding h to 128 lanes) the VMEM model needs."""
    spec = _Lanes(spec).spec
    return tpu_vmem.Dims(
        hidden=spec.hidden,
        width=spec.width,
        output=spec.output,
        num_carry=spec.num_carry,
        itemsize=jnp.dtype(spec.dtype).itemsize,
        has_bias=spec.has_bias,
        hp_is_xp=spec.hp_is_xp,
    )


def layout_plan(spec, steps: int, batch: int, *, block_batch=None, block_time=None):
    """The :class:`tpu_vmem.Plan` of a call: the VMEM model's, or the requested blocks.

    When nothing fits, the reason (a str) is returned unless blocks are requested.
    """
    gen = tpu_vmem.generation()
    d = dims(spec)
    found = tpu_vmem.plan(d, steps, batch, gen)
    if block_batch is None and block_time is None:
        return found
    bb = (
        int(block_batch)
        if block_batch is not None
        else (found.bb if isinstance(found, tpu_vmem.Plan) else min(batch, 8))
    )
    tc = (
        int(block_time)
        if block_time is not None
        else (found.tc if isinstance(found, tpu_vmem.Plan) else 1)
    )
    return tpu_vmem.Plan(
        bb,
        _round_up(batch, bb),
        tc,
        _round_up(steps, tc),
        tpu_vmem.forward_bytes(d, tc, bb),
        tpu_vmem.backward_bytes(d, tc, bb),
        gen,
    )


def pad(arrays, steps: int, batch: int, t_axis=0, b_axis=1):
    """Zero-pads the time and batch axes of each array (None passes through)."""
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        widths = [(0, 0)] * a.ndim
        if t_axis is not None:
            widths[t_axis] = (0, steps - a.shape[t_axis])
        widths[b_axis] = (0, batch - a.shape[b_axis])
        out.append(jnp.pad(a, widths) if any(w[1] for w in widths) else a)
    return out


def pad_mask(maskf, steps: int, batch: int, t: int, b: int):
    """The float mask padded in time with zeros (padding steps are no-ops); ones if None."""
    if maskf is None:
        if steps == t:
            return None
        maskf = jnp.ones((t, b, 1), _F32)
    return pad([maskf], steps, batch)[0]


def hidden(spec, h, w, bias):
    """``h @ W_hh [+ b_hh]``, operands in the cell dtype, float32 accumulation."""
    hp = jnp.dot(h.astype(spec.dtype), w, preferred_element_type=_F32)
    return hp if bias is None else hp + bias


def hidden_t(spec, dhp, w):
    """``dhp @ W_hh^T`` (the transposed matmul, no transpose materialised)."""
    return lax.dot_general(
        dhp.astype(spec.dtype), w, (((1,), (1,)), ((), ())), preferred_element_type=_F32
    )


def _take(refs: list, n: int) -> list:
    out = refs[:n]
    del refs[:n]
    return out


def _forward_kernel(*refs, spec, tc, reverse, has_bias, has_mask, has_reset, emit):
    nc = spec.num_carry
    refs = list(refs)
    w_ref, *rest = _take(refs, 2 if has_bias else 1)
    b_ref = rest[0] if has_bias else None
    (xp_ref,) = _take(refs, 1)
    c0_refs = _take(refs, nc)
    m_ref = _take(refs, 1)[0] if has_mask else None
    r_ref = _take(refs, 1)[0] if has_reset else None
    carry_refs = _take(refs, nc)
    (ys_ref,) = _take(refs, 1)
    cs_refs = _take(refs, nc) if emit else []

    @pl.when(pl.program_id(1) == 0)
    def _init():
        for dst, src in zip(carry_refs, c0_refs, strict=True):
            dst[...] = src[...]

    def step(s, carry):
        t = tc - 1 - s if reverse else s
        if r_ref is not None:
            r = r_ref[t] > 0
            carry = tuple(jnp.where(r, c0[...], c) for c0, c in zip(c0_refs, carry, strict=True))
        hp = hidden(spec, carry[0], w_ref[...], None if b_ref is None else b_ref[...])
        new, y = spec.gates(carry, xp_ref[t], hp)
        if m_ref is not None:
            m = m_ref[t] > 0
            new = tuple(jnp.where(m, n, c) for n, c in zip(new, carry, strict=True))
            y = jnp.where(m, y, 0.0)
        ys_ref[t] = y.astype(ys_ref.dtype)
        for ref, n in zip(cs_refs, new if emit else (), strict=True):
            ref[t] = n
        return new

    carry = lax.fori_loop(0, tc, step, tuple(r[...] for r in carry_refs))
    for ref, c in zip(carry_refs, carry, strict=True):
        ref[...] = c


def _backward_kernel(*refs, spec, tc, reverse, has_mask, has_reset, has_dcs):
    nc = spec.num_carry
    refs = list(refs)
    (w_ref,) = _take(refs, 1)  # b_hh is inside the precomputed hp
    xp_ref, hp_ref = _take(refs, 2)
    prev_refs = _take(refs, nc)
    (dys_ref,) = _take(refs, 1)
    dcs_refs = _take(refs, nc) if has_dcs else []
    m_ref = _take(refs, 1)[0] if has_mask else None
    r_ref = _take(refs, 1)[0] if has_reset else None
    dT_refs = _take(refs, nc)
    (dxp_ref,) = _take(refs, 1)
    dhp_ref = None if spec.hp_is_xp else _take(refs, 1)[0]
    dc_refs = _take(refs, nc)
    acc_refs = _take(refs, nc) if has_reset else []

    @pl.when(pl.program_id(1) == 0)
    def _init():
        for dst, src in zip(dc_refs, dT_refs, strict=True):
            dst[...] = src[...]
        for dst in acc_refs:
            dst[...] = jnp.zeros(dst.shape, dst.dtype)

    def step(s, state):
        dcarry, acc = state
        # Backward visits steps in the opposite order of the forward.
        t = s if reverse else tc - 1 - s
        dnew = dcarry
        if has_dcs:
            dnew = tuple(d + r[t] for d, r in zip(dcarry, dcs_refs, strict=True))
        carry = tuple(r[t] for r in prev_refs)
        _, vjp = jax.vjp(spec.gates, carry, xp_ref[t], hp_ref[t])
        dc_in, dx, dh = vjp((dnew, dys_ref[t]))
        dc_in = (dc_in[0] + hidden_t(spec, dh, w_ref[...]), *dc_in[1:])
        if m_ref is not None:
            m = m_ref[t] > 0
            dc_in = tuple(jnp.where(m, a, b) for a, b in zip(dc_in, dnew, strict=True))
            dx = jnp.where(m, dx, 0.0)
            dh = jnp.where(m, dh, 0.0)
        if r_ref is not None:
            r = r_ref[t] > 0
            acc = tuple(a + jnp.where(r, d, 0.0) for a, d in zip(acc, dc_in, strict=True))
            dc_in = tuple(jnp.where(r, 0.0, d) for d in dc_in)
        dxp_ref[t] = dx
        if dhp_ref is not None:
            dhp_ref[t] = dh
        return dc_in, acc

    state = (tuple(r[...] for r in dc_refs), tuple(r[...] for r in acc_refs))
    dcarry, acc = lax.fori_loop(0, tc, step, state)
    for ref, v in zip(dc_refs, dcarry, strict=True):
        ref[...] = v
    for ref, v in zip(acc_refs, acc, strict=True):
        ref[...] = v


def _compiler_params(model_bytes: int, gen: str | None):
    return pltpu.CompilerParams(
        dimension_semantics=("parallel", "arbitrary"),
        vmem_limit_bytes=tpu_vmem.vmem_limit(model_bytes, gen),
    )


class _Layout:
    """Block sizes (from the VMEM model), grid and BlockSpecs shared by both kernels."""

    def __init__(self, spec, steps, batch, *, block_batch, block_time, reverse, interpret):
        found = layout_plan(spec, steps, batch, block_batch=block_batch, block_time=block_time)
        if isinstance(found, str):
            if not interpret and tpu_vmem.generation() is not None:
                # A TPU is attached (or targeted): fail now with the reason, not in Mosaic.
                raise NotImplementedError(f"backend='pallas' does not fit this call: {found}")
            # Interpreted, or lowered for an unknown TPU from a CPU host: the smallest blocks.
            found = layout_plan(spec, steps, batch, block_batch=min(batch, 8), block_time=1)
        self.plan = found
        self.bb, self.bp, self.tc, self.tp = found.bb, found.bp, found.tc, found.tp
        self.nb, self.nt = self.bp // self.bb, self.tp // self.tc
        nt = self.nt
        self.tix = (lambda j: nt - 1 - j) if reverse else (lambda j: j)
        self.spec = spec

    def params(self, backward: bool):
        p = self.plan
        return _compiler_params(p.backward_bytes if backward else p.forward_bytes, p.generation)

    def whole(self, shape):
        # Same block at every grid step: one VMEM buffer, filled once.
        return pl.BlockSpec(shape, lambda i, j: (0,) * len(shape), pipeline_mode=pl.Buffered(1))

    def row(self, width):
        return pl.BlockSpec((self.bb, width), lambda i, j: (i, 0))

    def chunk(self, width):
        return pl.BlockSpec((self.tc, self.bb, width), lambda i, j: (self.tix(j), i, 0))


def _forward(
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
    block_time: int | None = None,
):
    """Forward kernel. Returns ``(carry tuple [b, h], ys [t, b, o], carries tuple or None)``."""
    T, B, G = xp.shape
    H, out, nc = spec.hidden, spec.output, spec.num_carry
    lay = _Layout(
        spec,
        T,
        B,
        block_batch=block_batch,
        block_time=block_time,
        reverse=reverse,
        interpret=interpret,
    )
    maskf = pad_mask(maskf, lay.tp, lay.bp, T, B)
    xp, resetf = pad([xp, resetf], lay.tp, lay.bp)
    carry0 = pad(carry0, 0, lay.bp, t_axis=None, b_axis=0)
    inputs, specs = [w], [lay.whole(w.shape)]
    if bias is not None:
        inputs.append(bias)
        specs.append(lay.whole(bias.shape))
    inputs.append(xp)
    specs.append(lay.chunk(G))
    inputs += list(carry0)
    specs += [lay.row(H)] * nc
    for extra in (maskf, resetf):
        if extra is not None:
            inputs.append(extra)
            specs.append(lay.chunk(1))
    out_shape = [jax.ShapeDtypeStruct((lay.bp, H), _F32)] * nc
    out_specs = [lay.row(H)] * nc
    out_shape.append(jax.ShapeDtypeStruct((lay.tp, lay.bp, out), _F32))
    out_specs.append(lay.chunk(out))
    if emit_carries:
        out_shape += [jax.ShapeDtypeStruct((lay.tp, lay.bp, H), _F32)] * nc
        out_specs += [lay.chunk(H)] * nc
    kernel = functools.partial(
        _forward_kernel,
        spec=spec,
        tc=lay.tc,
        reverse=reverse,
        has_bias=bias is not None,
        has_mask=maskf is not None,
        has_reset=resetf is not None,
        emit=emit_carries,
    )
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(lay.nb, lay.nt),
        in_specs=specs,
        out_specs=out_specs,
        compiler_params=lay.params(backward=False),
        interpret=interpret,
        name=f"jrnn_{spec.name}_forward",
    )(*inputs)
    carry = tuple(c[:B] for c in outs[:nc])
    ys = outs[nc][:T, :B]
    carries = tuple(c[:T, :B] for c in outs[nc + 1 :]) if emit_carries else None
    return carry, ys, carries


def _backward(
    spec,
    w,
    bias,
    xp,
    hp,
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
    block_time: int | None = None,
):
    """The backward kernel on lane-padded arrays (see :func:`backward`)."""
    T, B, G = xp.shape
    H, out, nc = spec.hidden, spec.output, spec.num_carry
    # The backward walks time the other way round: its chunk order is the forward's reversed.
    lay = _Layout(
        spec,
        T,
        B,
        block_batch=block_batch,
        block_time=block_time,
        reverse=not reverse,
        interpret=interpret,
    )
    maskf = pad_mask(maskf, lay.tp, lay.bp, T, B)
    xp, hp, resetf, dys = pad([xp, hp, resetf, dys], lay.tp, lay.bp)
    prev = pad(prev, lay.tp, lay.bp)
    dcarries = None if dcarries is None else pad(dcarries, lay.tp, lay.bp)
    dcarry = pad(dcarry, 0, lay.bp, t_axis=None, b_axis=0)
    del bias  # inside hp
    inputs, specs = [w], [lay.whole(w.shape)]
    inputs += [xp, hp, *prev, dys]
    specs += [lay.chunk(G)] * 2 + [lay.chunk(H)] * nc + [lay.chunk(out)]
    if dcarries is not None:
        inputs += list(dcarries)
        specs += [lay.chunk(H)] * nc
    for extra in (maskf, resetf):
        if extra is not None:
            inputs.append(extra)
            specs.append(lay.chunk(1))
    inputs += list(dcarry)
    specs += [lay.row(H)] * nc
    out_shape = [jax.ShapeDtypeStruct((lay.tp, lay.bp, G), _F32)]
    out_specs = [lay.chunk(G)]
    if not spec.hp_is_xp:
        out_shape.append(jax.ShapeDtypeStruct((lay.tp, lay.bp, G), _F32))
        out_specs.append(lay.chunk(G))
    n_acc = nc * (2 if resetf is not None else 1)
    out_shape += [jax.ShapeDtypeStruct((lay.bp, H), _F32)] * n_acc
    out_specs += [lay.row(H)] * n_acc
    kernel = functools.partial(
        _backward_kernel,
        spec=spec,
        tc=lay.tc,
        reverse=reverse,
        has_mask=maskf is not None,
        has_reset=resetf is not None,
        has_dcs=dcarries is not None,
    )
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(lay.nb, lay.nt),
        in_specs=specs,
        out_specs=out_specs,
        compiler_params=lay.params(backward=True),
        interpret=interpret,
        name=f"jrnn_{spec.name}_backward",
    )(*inputs)
    dxp = outs[0][:T, :B]
    k = 1
    dhp = None
    if not spec.hp_is_xp:
        dhp, k = outs[1][:T, :B], 2
    dc0 = tuple(d[:B] for d in outs[k : k + nc])
    if resetf is not None:
        dc0 = tuple(d + a[:B] for d, a in zip(dc0, outs[k + nc :], strict=True))
    return dxp, dhp, dc0


# ------------------------------------------------------------------ hidden padded to 128 lanes

_PADDED = ("lstm", "gru", "elman")  # gates split xp/hp into equal blocks of h


class _Lanes:
    """Pads h to a multiple of 128 lanes (each gate block of ``xp``/``W_hh`` separately).

    Padded lanes stay exactly zero: their inputs, weights and initial carry are zero, and the
    cells' gates map a zero pre-activation and zero state to a zero state (LSTM: c = 0.5 c +
    0.5 tanh 0, h = 0.5 tanh c; GRU: h = 0.5 tanh 0 + 0.5 h; elman: tanh/relu 0). No real lane
    reads a padded one (the padded rows of W_hh are zero), so values and gradients are those
    of the unpadded cell. seed_rnn (gate blocks of two sizes) is not padded.
    """

    def __init__(self, spec):
        H = spec.hidden
        self.on = spec.name in _PADDED and H % tpu_vmem.LANES != 0
        self.H, self.k = H, spec.width // H
        self.Hp = tpu_vmem.lanes(H) if self.on else H
        self.spec = (
            spec._replace(hidden=self.Hp, width=self.k * self.Hp, output=self.Hp)
            if self.on
            else spec
        )

    def hid(self, a):
        if not self.on or a is None:
            return a
        widths = [(0, 0)] * (a.ndim - 1) + [(0, self.Hp - self.H)]
        return jnp.pad(a, widths)

    def gates(self, a):
        if not self.on or a is None:
            return a
        blocks = a.reshape(*a.shape[:-1], self.k, self.H)
        return self.hid(blocks).reshape(*a.shape[:-1], self.k * self.Hp)

    def weights(self, w):
        if not self.on:
            return w
        return jnp.pad(self.gates(w), ((0, self.Hp - self.H), (0, 0)))

    def unhid(self, a):
        return a if not self.on or a is None else a[..., : self.H]

    def ungates(self, a):
        if not self.on or a is None:
            return a
        blocks = a.reshape(*a.shape[:-1], self.k, self.Hp)[..., : self.H]
        return blocks.reshape(*a.shape[:-1], self.k * self.H)


def forward(spec, w, bias, xp, carry0, maskf, resetf, **kw):
    """Forward kernel. Returns ``(carry tuple [b, h], ys [t, b, o], carries tuple or None)``.

    ``kw``: ``reverse``, ``emit_carries``, ``interpret``, ``block_batch``, ``block_time``.
    """
    ln = _Lanes(spec)
    carry, ys, carries = _forward(
        ln.spec,
        ln.weights(w),
        ln.gates(bias),
        ln.gates(xp),
        tuple(ln.hid(c) for c in carry0),
        maskf,
        resetf,
        **kw,
    )
    carry = tuple(ln.unhid(c) for c in carry)
    carries = None if carries is None else tuple(ln.unhid(c) for c in carries)
    return carry, ln.unhid(ys), carries


def backward(spec, w, bias, xp, hp, prev, maskf, resetf, dys, dcarries, dcarry, **kw):
    """Backward kernel. Returns ``(dxp [t, b, g], dhp [t, b, g] or None, dcarry0 tuple)``.

    ``hp`` ``[t, b, g]`` is ``prev h @ W_hh [+ b_hh]`` for every step, computed before the
    kernel as one matmul, so that each step of the reverse loop has one dependent matmul
    (``dhp @ W_hh^T``). ``prev`` holds the carry entering every step (after resets), ``dys``
    the output cotangents, ``dcarries`` those of the returned carries (or None), ``dcarry``
    that of the final carry. ``kw``: ``reverse``, ``interpret``, ``block_batch``,
    ``block_time``.
    """
    ln = _Lanes(spec)
    dxp, dhp, dc0 = _backward(
        ln.spec,
        ln.weights(w),
        None,
        ln.gates(xp),
        ln.gates(hp),
        tuple(ln.hid(c) for c in prev),
        maskf,
        resetf,
        ln.hid(dys),
        None if dcarries is None else tuple(ln.hid(c) for c in dcarries),
        tuple(ln.hid(c) for c in dcarry),
        **kw,
    )
    return ln.ungates(dxp), ln.ungates(dhp), tuple(ln.unhid(c) for c in dc0)
