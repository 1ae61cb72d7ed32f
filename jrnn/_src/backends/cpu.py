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

import functools
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.interpreters import batching, mlir

from jrnn._src import cell as cell_lib
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


def _array_problem(params, carry0, xp=None) -> Exception | None:
    """The error for arrays the kernel cannot take (``xp`` None: token inputs), or None."""
    if xp is not None and not hasattr(xp, "shape"):
        return TypeError(
            f"backend='cpu' needs the projected inputs as one array, got {type(xp).__name__}"
        )
    leaves = (params.w_hh, *jax.tree.leaves(carry0), *([] if xp is None else [xp]))
    dtypes = {a.dtype for a in leaves}
    if dtypes != {jnp.dtype(jnp.float32)}:
        return NotImplementedError(
            f"backend='cpu' computes in float32 only, got dtypes {sorted(map(str, dtypes))}"
        )
    return None


def accepts(params, xs, carry0, *, tokens: bool) -> bool:
    """Whether ``"auto"`` may run this call here: the kernel is available (asked quietly) and
    the arrays are float32 (``"auto"`` runs ``"xla"`` otherwise; an explicit ``"cpu"`` raises)."""
    if not cpu_kernel.load(warn=False):
        return False
    return _array_problem(params, carry0, None if tokens else xs) is None


def _fwd_shapes(cell_id, extra, save, carries, w, c0, m8, lead=()):
    """The forward call's result shapes (``lead``: leading batch dims of every operand)."""
    T, B = m8.shape[-2:]
    H = w.shape[-2]
    HC = c0.shape[-1]
    out = extra if cell_id == 4 else H
    S = {0: 4 * H, 1: 4 * H, 4: extra + H}.get(cell_id, H)

    def shape(*dims):
        return jax.ShapeDtypeStruct((*lead, *dims), jnp.float32)

    return [
        shape(T, B, out),  # ys
        shape(B, H),  # hT
        shape(B, HC),  # cT
        shape(T, B, H) if carries else shape(0),  # hs
        shape(T, B, HC) if carries else shape(0),  # cs
        shape(T, B, H) if save else shape(0),  # hin
        shape(T, B, HC) if save else shape(0),  # cin
        shape(T, B, S) if save else shape(0),  # saved gates
    ]


def _fwd_call(cell_id, extra, reverse, save, carries, w, bh, xp, idx, h0, c0, m8, r8, lead=()):
    shapes = _fwd_shapes(cell_id, extra, save, carries, w, c0, m8, lead)
    call = jax.ffi.ffi_call("jrnn_rnn_fwd", shapes, vmap_method="broadcast_all")
    attrs = dict(cell=np.int32(cell_id), extra=np.int64(extra), reverse=bool(reverse))
    return call(xp, idx, w, bh, h0, c0, m8, r8, **attrs)


# The forward without gradients (inference, and what jax.export serialises) is one primitive
# whose lowering picks the implementation: the kernel's custom call, or, when the module is
# lowered for jax.export (whose artifacts must not depend on jrnn's kernel being registered
# where they are loaded) or for another platform, the same loop as plain XLA ("xla" backend).
# Operands: w, bh, x, idx, h0, c0, m8, r8, then the cell's params leaves (for the XLA loop).
_fwd_p = jax.extend.core.Primitive("jrnn_cpu_forward")
_fwd_p.multiple_results = True


def _kernel_impl(w, bh, x, idx, h0, c0, m8, r8, *leaves, nb, spec, **_):
    cell_id, extra, reverse, carries, _ = spec
    lead = m8.shape[:nb]
    return _fwd_call(cell_id, extra, reverse, False, carries, w, bh, x, idx, h0, c0, m8, r8, lead)


def _xla_impl(w, bh, x, idx, h0, c0, m8, r8, *leaves, nb, spec, cell, treedef):
    cell_id, _, reverse, carries, tokens = spec
    lstm = cell_id == 0

    def one(w, bh, x, idx, h0, c0, m8, r8, *leaves):
        params = jax.tree.unflatten(treedef, leaves)
        xp = x[idx] if tokens else x
        carry0 = (h0, c0) if lstm else h0
        kw = dict(reverse=reverse, unroll=1, return_carries=carries)
        carry, ys, steps = xla.run(
            cell, params, xp, carry0, mask=m8.astype(bool), resets=r8.astype(bool), **kw
        )
        hT, cT = carry if lstm else (carry, c0)
        empty = jnp.zeros((0,), jnp.float32)
        if not carries:
            hs = cs = empty
        elif lstm:
            hs, cs = steps
        else:
            hs, cs = steps, jnp.zeros((*steps.shape[:-1], 0), jnp.float32)
        return [ys, hT, cT, hs, cs, empty, empty, empty]

    for _ in range(nb):
        one = jax.vmap(one)
    return one(w, bh, x, idx, h0, c0, m8, r8, *leaves)


def _fwd_abstract(w, bh, x, idx, h0, c0, m8, r8, *leaves, nb, spec, **_):
    cell_id, extra, _, carries, _ = spec
    shapes = _fwd_shapes(cell_id, extra, False, carries, w, c0, m8, m8.shape[:nb])
    return [jax.core.ShapedArray(s.shape, s.dtype) for s in shapes]


def _fwd_lowering(ctx, *args, **params):
    mc = ctx.module_context
    portable = mc.lowering_parameters.for_export or tuple(mc.platforms) != ("cpu",)
    impl = _xla_impl if portable else _kernel_impl
    return mlir.lower_fun(functools.partial(impl, **params), multiple_results=True)(ctx, *args)


def _fwd_batch(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    moved = [
        jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args, dims, strict=True)
    ]
    out = _fwd_p.bind(*moved, **{**params, "nb": params["nb"] + 1})
    return out, [0] * len(out)


_fwd_p.def_impl(_kernel_impl)
_fwd_p.def_abstract_eval(_fwd_abstract)
mlir.register_lowering(_fwd_p, _fwd_lowering)
batching.primitive_batchers[_fwd_p] = _fwd_batch


def _make(
    cell, treedef, cell_id: int, extra: int, reverse: bool, return_carries: bool, tokens: bool
):
    """The custom-VJP loop ``(w, bh, xp, h0, c0, mask, resets, idx) -> (hT, cT, ys, hs, cs)``.

    With ``tokens``, ``xp`` is the projection table ``[rows, g]`` and ``idx`` ``[t, b]`` the row
    of every step (the kernel reads the rows itself; its backward adds each step's ``dz`` into
    the table's gradient). Otherwise ``xp`` is ``[t, b, g]`` and ``idx`` is empty.
    """
    gru = cell_id == 1

    def forward(w, bh, xp, h0, c0, m8, r8, idx, leaves, save):
        if save:  # under differentiation: the kernel (gradients are not exportable)
            outs = _fwd_call(
                cell_id, extra, reverse, True, return_carries, w, bh, xp, idx, h0, c0, m8, r8
            )
        else:
            outs = _fwd_p.bind(
                w, bh, xp, idx, h0, c0, m8, r8, *leaves,
                nb=0, spec=(cell_id, extra, bool(reverse), bool(return_carries), tokens),
                cell=cell, treedef=treedef,
            )  # fmt: skip
        ys, hT, cT, hs, cs, hin, cin, sv = outs
        if not return_carries:
            hs = cs = None
        return (hT, cT, ys, hs, cs), (hin, cin, sv)

    @jax.custom_vjp
    def loop(w, bh, xp, h0, c0, m8, r8, idx, leaves):
        return forward(w, bh, xp, h0, c0, m8, r8, idx, leaves, save=False)[0]

    def loop_fwd(w, bh, xp, h0, c0, m8, r8, idx, leaves):
        out, saved = forward(w, bh, xp, h0, c0, m8, r8, idx, leaves, save=True)
        return out, (w, bh, m8, r8, idx, xp if tokens else None, saved)

    def loop_bwd(res, cts):
        w, bh, m8, r8, idx, table, (hin, cin, sv) = res
        dhT, dcT, dys, dhs, dcs = cts
        T, B = m8.shape
        GW = w.shape[1]
        if dhs is None:
            dhs, dcs = jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32)
        # The GRU's dz for W_hh is dhp; with tokens its dxp goes straight into the table.
        dxp_shape = (0,) if tokens and gru else (T, B, GW)
        shapes = [
            jax.ShapeDtypeStruct(dxp_shape, jnp.float32),  # dxp
            jax.ShapeDtypeStruct((T, B, GW) if gru else (0,), jnp.float32),  # dhp
            jax.ShapeDtypeStruct(dhT.shape, jnp.float32),  # dh0
            jax.ShapeDtypeStruct(dcT.shape, jnp.float32),  # dc0
            jax.ShapeDtypeStruct(table.shape if tokens else (0,), jnp.float32),  # dtable
        ]
        call = jax.ffi.ffi_call("jrnn_rnn_bwd", shapes, vmap_method="broadcast_all")
        dxp, dhp, dh0, dc0, dtable = call(
            w,
            sv,
            hin,
            cin,
            m8,
            r8,
            idx,
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
        # dW_hh: one [h, t b] x [t b, g] GEMM over the carries entering every step. Flattened
        # to 2-d first: contracting (t, b) as two axes makes XLA:CPU transpose both operands.
        H = w.shape[0]
        dw = jnp.einsum(
            "nh,ng->hg",
            hin.reshape(T * B, H),
            dz.reshape(T * B, GW),
            precision=jax.lax.Precision.HIGHEST,
        )
        dbh = jnp.sum(dhp, axis=(0, 1)) if bh.shape[0] else jnp.zeros_like(bh)
        # leaves (the params, read only by the forward's XLA lowering): no cotangent of their own
        return dw, dbh, dtable if tokens else dxp, dh0, dc0, None, None, None, None

    loop.defvjp(loop_fwd, loop_bwd)
    return loop


def _check(cell, params, carry0, xp=None):
    """The kernel's cell id; raises for calls the kernel cannot run."""
    cell_id, reason = _cell_id(cell)
    if reason is not None:
        raise NotImplementedError(f"backend='cpu' does not support this call: {reason}")
    problem = _array_problem(params, carry0, xp)
    if problem is not None:
        raise problem
    return cell_id


def _run(cell, cell_id, params, x, idx, steps, batch, carry0, mask, resets, reverse, carries):
    """The kernel over ``x`` (``[t, B, g]``, or with ``idx`` ``[t, B]`` the table ``[rows, g]``)."""
    lstm = cell_id == 0
    T, B, H = steps, math.prod(batch), cell.hidden_size
    extra = cell.output_size if cell_id == 4 else 0
    h0, c0 = carry0 if lstm else (carry0, None)
    h0 = h0.reshape(B, H)
    c0 = c0.reshape(B, H) if lstm else jnp.zeros((B, 0), jnp.float32)
    m8 = jnp.ones((T, B), jnp.uint8) if mask is None else mask.reshape(T, B).astype(jnp.uint8)
    r8 = jnp.zeros((T, B), jnp.uint8) if resets is None else resets.reshape(T, B).astype(jnp.uint8)
    bh = params.b_hh if cell_id == 1 else jnp.zeros((0,), jnp.float32)
    leaves, treedef = jax.tree.flatten(params)
    loop = _make(cell, treedef, cell_id, extra, bool(reverse), bool(carries), idx is not None)
    if idx is None:
        idx = jnp.zeros((0,), jnp.int32)
    hT, cT, ys, hs, cs = loop(params.w_hh, bh, x, h0, c0, m8, r8, idx, tuple(leaves))
    ys = ys.reshape(T, *batch, ys.shape[-1])
    unflat = lambda a: a.reshape(*batch, H)  # noqa: E731
    carry = (unflat(hT), unflat(cT)) if lstm else unflat(hT)
    out = None
    if carries:
        each = lambda a: a.reshape(T, *batch, H)  # noqa: E731
        out = (each(hs), each(cs)) if lstm else each(hs)
    return carry, ys, out


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
    cell_id = _check(cell, params, carry0, xp)
    kw = dict(mask=mask, resets=resets, reverse=reverse, return_carries=return_carries)
    if not cpu_kernel.load():
        return xla.run(cell, params, xp, carry0, unroll=unroll, **kw)
    T, GW = xp.shape[0], xp.shape[-1]
    batch = tuple(xp.shape[1:-1])
    x = xp.reshape(T, math.prod(batch), GW)
    return _run(
        cell, cell_id, params, x, None, T, batch, carry0, mask, resets, reverse, return_carries
    )


def run_tokens(cell, params, tokens, carry0, *, mask, resets, reverse, unroll, return_carries):
    """:func:`run` for integer ``tokens`` ``[t, b...]`` without a ``[t, b..., g]`` projection.

    The projection of a token is a row of ``cell.input_projection(params, arange(i))`` (the
    input weights plus bias); the kernel reads each step's row from that ``[i + 1, g]`` table
    (its last row NaN, read by out-of-range tokens, as in ``cell.project``) and its backward
    adds every step's ``dz`` into the table's gradient, so neither the ``[t, b..., g]``
    projection nor its cotangent is materialised.
    """
    cell_id = _check(cell, params, carry0)
    kw = dict(mask=mask, resets=resets, reverse=reverse, return_carries=return_carries)
    if not cpu_kernel.load():
        return xla.run(
            cell, params, cell.input_projection(params, tokens), carry0, unroll=unroll, **kw
        )
    rows = cell.input_projection(params, jnp.arange(params.w_ih.shape[0], dtype=jnp.int32))
    if rows.dtype != jnp.float32:
        raise NotImplementedError(f"backend='cpu' computes in float32 only, got {rows.dtype}")
    table, idx = cell_lib.nan_row_table(rows, tokens)
    T, batch = tokens.shape[0], tuple(tokens.shape[1:])
    idx = idx.astype(jnp.int32)
    idx = idx.reshape(T, math.prod(batch))
    return _run(
        cell, cell_id, params, table, idx, T, batch, carry0, mask, resets, reverse, return_carries
    )
