"""The ``"pallas"`` backend: the whole time loop inside one Pallas kernel, per platform.

``run`` flattens the batch dims, casts the recurrent weights to the cell's compute dtype once,
and calls one ``jax.custom_vjp`` function per kernel family, picked for the platform being
lowered for with :func:`jax.lax.platform_dependent`:

========  =====================================================================
platform  kernel
========  =====================================================================
tpu       ``pallas_tpu`` (Mosaic): grid (batch blocks, time chunks), W_hh in VMEM
cuda      ``pallas_gpu`` (Triton): grid (batch blocks,), hidden blocked in registers
cpu       ``pallas_tpu`` through the Pallas interpreter (``interpret=True``)
========  =====================================================================

The forward kernel saves every step's carry (``[t, b, h]`` per carry leaf); the backward
kernel runs the reverse time loop, recomputes ``h W_hh`` and the gates from the saved carries,
and emits the gate gradients ``dG`` ``[t, b, g]``. Then, outside the kernel::

    dW_hh = einsum("tbh,tbg->hg", h_{t-1}, dG)          (one large matmul)
    db_hh = sum_tb dG                                   (GRU only)

and the gradients w.r.t. ``xp`` and ``carry0`` are returned so that ``unroll``'s input
projection backpropagates through them. See docs/pallas.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src.backends import pallas_gpu, pallas_tpu, tpu_vmem, xla

SUPPORTED_CELLS = ("lstm", "gru", "elman", "seed_rnn")
_DTYPES = ("float32", "bfloat16")


class KernelSpec(NamedTuple):
    """What a kernel needs to know about the cell (static, hashable except ``gates``).

    Attributes:
      name: cell family.
      gates: ``gates(carry_leaves, xp, hp) -> (carry_leaves, y)``, the cell's own pointwise
        math (``cell.gates``) over a tuple of carry leaves.
      hidden: h, the size of every carry leaf.
      width: g, the width of ``xp`` and ``h @ W_hh``.
      output: o, the size of ``y``.
      num_carry: number of carry leaves (LSTM 2, else 1).
      dtype: compute dtype of the recurrent matmul (float32 accumulation).
      hp_is_xp: whether ``d(gates)/d(hp) == d(gates)/d(xp)`` (``xp`` and ``hp`` only enter as
        ``xp + hp``): then the backward emits one gradient for both.
      has_bias: whether ``hp = h @ W_hh + b_hh`` (GRU); else ``hp = h @ W_hh``.
      activation: elman's activation (``"tanh"`` or ``"relu"``), else None.
    """

    name: str
    gates: Callable
    hidden: int
    width: int
    output: int
    num_carry: int
    dtype: Any
    hp_is_xp: bool
    has_bias: bool
    activation: str | None = None


def supports(cell, **features) -> str | None:
    """None if the Pallas kernels run ``cell`` with ``features``, else the reason.

    Supported: lstm (no peepholes, layer_norm or proj_size), gru (``reset_after=True``), elman
    and seed_rnn, with compute dtype float32 or bfloat16; every feature (tokens, lengths,
    resets, reverse, return_carries).
    """
    del features  # tokens, lengths, resets, reverse and return_carries are all handled.
    if cell.name not in SUPPORTED_CELLS:
        return f"the Pallas kernels implement the cells {SUPPORTED_CELLS}, not {cell.name!r}"
    if cell.name == "lstm":
        for opt in ("peepholes", "layer_norm", "proj_size"):
            if cell.option(opt):
                return (
                    f"the Pallas LSTM kernel implements the plain LSTM, not {opt}="
                    f"{cell.option(opt)!r} (use backend='xla' or 'fused')"
                )
    if cell.name == "gru" and not cell.option("reset_after", True):
        return "the Pallas GRU kernel implements reset_after=True only"
    if cell.option("dtype", "float32") not in _DTYPES:
        return f"the Pallas kernels compute in {_DTYPES}, not dtype={cell.option('dtype')!r}"
    return None


def tpu_fits(cell, steps: int, batch: int, generation: str | None = None) -> str | None:
    """None if the TPU kernels' VMEM model fits ``steps`` x ``batch`` (flat), else the reason.

    ``generation`` is ``"v4" | "v5e" | "v5p" | "v6e"``; None: the one targeted with
    ``tpu_vmem.target``, else the attached TPU's, else the smallest budget of all.

    Example:
      >>> import jrnn
      >>> from jrnn._src.backends import pallas
      >>> pallas.tpu_fits(jrnn.lstm(512), 256, 32, "v5e") is None
      True
      >>> "VMEM" in pallas.tpu_fits(jrnn.lstm(4096), 256, 32, "v5e")
      True
    """
    reason = supports(cell)
    if reason is not None:
        return reason
    gen = generation if generation is not None else tpu_vmem.generation()
    found = tpu_vmem.plan(pallas_tpu.dims(kernel_spec(cell)), steps, batch, gen)
    return found if isinstance(found, str) else None


def kernel_spec(cell) -> KernelSpec:
    """The :class:`KernelSpec` of a supported cell."""
    two = cell.name == "lstm"
    H, out = cell.hidden_size, cell.output_size
    width = {"lstm": 4 * H, "gru": 3 * H, "elman": H, "seed_rnn": out + H}[cell.name]

    def gates(carry, xp, hp):
        # The supported options never read params inside `gates` (no peepholes/layer norm;
        # GRU's b_hh is added to hp by the kernel), so None stands for them.
        new, y = cell.gates(None, tuple(carry) if two else carry[0], xp, hp)
        return (tuple(new) if two else (new,)), y

    return KernelSpec(
        name=cell.name,
        gates=gates,
        hidden=H,
        width=width,
        output=out,
        num_carry=2 if two else 1,
        dtype=jnp.dtype(cell.option("dtype", "float32")),
        hp_is_xp=cell.name != "gru",
        has_bias=cell.name == "gru",
        activation=cell.option("activation") if cell.name == "elman" else None,
    )


def make_vjp(module, spec: KernelSpec, *, reverse: bool, return_carries: bool, **kernel_kw):
    """``f(w, bias, xp, carry0, maskf, resetf) -> (carry, ys, carries|None)`` with a custom VJP.

    ``module`` is a kernel module (``pallas_tpu`` or ``pallas_gpu``) with ``forward`` and
    ``backward``; ``kernel_kw`` goes to both (``interpret``, block sizes). Shapes: ``w [h, g]``
    in the compute dtype, ``bias [1, g]`` or None, ``xp [t, b, g]``, ``carry0`` a tuple of
    ``[b, h]``, ``maskf``/``resetf`` float32 ``[t, b, 1]`` (1 = valid / reset) or None.
    """
    fwd_kernel = functools.partial(module.forward, spec, reverse=reverse, **kernel_kw)
    bwd_kernel = functools.partial(module.backward, spec, reverse=reverse, **kernel_kw)

    @jax.custom_vjp
    def f(w, bias, xp, carry0, maskf, resetf):
        return fwd_kernel(w, bias, xp, carry0, maskf, resetf, emit_carries=return_carries)

    def f_fwd(w, bias, xp, carry0, maskf, resetf):
        carry, ys, carries = fwd_kernel(w, bias, xp, carry0, maskf, resetf, emit_carries=True)
        out = (carry, ys, carries if return_carries else None)
        return out, (w, bias, xp, carry0, maskf, resetf, carries)

    def f_bwd(res, cts):
        w, bias, xp, carry0, maskf, resetf, carries = res
        dcarry, dys, dcarries = cts
        prev = _previous_carries(carries, carry0, resetf, reverse)
        args = (w, bias, xp, prev, maskf, resetf, dys, dcarries, dcarry)
        if getattr(module, "PRECOMPUTED_HP", False):
            # Every step's h @ W_hh as one matmul: the backward loop keeps one dependent
            # matmul per step (dhp @ W_hh^T).
            hp = jnp.einsum(
                "tbh,hg->tbg", prev[0].astype(spec.dtype), w, preferred_element_type=jnp.float32
            )
            hp = hp if bias is None else hp + bias.reshape(1, 1, -1)
            args = (w, bias, xp, hp, *args[3:])
        dxp, dhp, dcarry0 = bwd_kernel(*args)
        dhp = dxp if dhp is None else dhp
        dw = jnp.einsum(
            "tbh,tbg->hg",
            prev[0].astype(spec.dtype),
            dhp.astype(spec.dtype),
            preferred_element_type=jnp.float32,
        )
        dbias = None if bias is None else jnp.sum(dhp, axis=(0, 1)).reshape(bias.shape)
        return (dw.astype(w.dtype), dbias, dxp, dcarry0, None, None)

    f.defvjp(f_fwd, f_bwd)
    return f


def _previous_carries(carries, carry0, resetf, reverse):
    """The carry entering each step: the neighbour step's carry, or carry0 at the start/resets."""
    out = []
    for cs, c0 in zip(carries, carry0, strict=True):
        if reverse:
            prev = jnp.concatenate([cs[1:], c0[None]], axis=0)
        else:
            prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)
        if resetf is not None:
            prev = jnp.where(resetf > 0, jnp.broadcast_to(c0[None], prev.shape), prev)
        out.append(prev)
    return tuple(out)


_MODULES = {"tpu": pallas_tpu, "gpu": pallas_gpu}


def _dispatch(spec, *, reverse, return_carries, kernel, interpret, tpu_kw, gpu_kw):
    """The custom-VJP kernel function to call: one platform's, or a per-platform switch."""
    kws = {"tpu": dict(tpu_kw or {}), "gpu": dict(gpu_kw or {})}
    common = dict(reverse=reverse, return_carries=return_carries)
    if kernel is not None or interpret is not None:
        name = kernel or "tpu"
        if name not in _MODULES:
            raise ValueError(f"kernel must be 'tpu' or 'gpu', got {kernel!r}")
        mode = True if interpret is None else interpret
        return make_vjp(_MODULES[name], spec, interpret=mode, **common, **kws[name])
    cpu = make_vjp(pallas_tpu, spec, interpret=True, **common, **kws["tpu"])
    tpu = make_vjp(pallas_tpu, spec, interpret=False, **common, **kws["tpu"])
    gpu = make_vjp(pallas_gpu, spec, interpret=False, **common, **kws["gpu"])
    return lambda *args: jax.lax.platform_dependent(*args, cpu=cpu, tpu=tpu, cuda=gpu, default=cpu)


def run(
    cell,
    params,
    xp,
    carry0,
    *,
    mask,
    resets,
    reverse,
    unroll,
    return_carries,
    kernel: str | None = None,
    interpret: Any = None,
    tpu_kw: dict | None = None,
    gpu_kw: dict | None = None,
):
    """Runs ``cell`` over the leading time axis of ``xp`` with a Pallas kernel.

    Args:
      cell: a supported :class:`jrnn.Cell` (see :func:`supports`).
      params: its params (``w_hh [h, g]``; GRU also ``b_hh [g]``).
      xp: ``[t, b..., g]`` float32 projected inputs.
      carry0: the initial carry, leaves ``[b..., h]``.
      mask: ``[t, b...]`` bool (False = padding: carry frozen, ``y = 0``) or None.
      resets: ``[t, b...]`` bool (True = restart from ``carry0`` before the step) or None.
      reverse: run from the last step to the first.
      unroll: ignored (the kernel's loop is not unrolled).
      return_carries: also return every step's carry.
      kernel: ``"tpu"`` or ``"gpu"`` to run that kernel whatever the platform (tests run
        both through the interpreter); None: pick per platform at lowering time.
      interpret: the interpret mode of a chosen ``kernel`` (``True`` or
        ``pltpu.InterpretParams(...)``; default True); None with ``kernel=None``: the
        platform's kernel, interpreted on CPU only.
      tpu_kw: extra keywords for the TPU kernel (``block_batch``, ``block_time``).
      gpu_kw: extra keywords for the GPU kernel (``block_batch``, ``block_hidden``, ...).

    Returns:
      ``(carry, ys [t, b..., o], carries [t, b..., h] leaves or None)``.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.gru(8)
      >>> p = cell.init(jax.random.key(0), 3)
      >>> _, ys = jrnn.unroll(cell, p, jnp.ones((2, 5, 3)), backend="pallas")
      >>> ys.shape
      (2, 5, 8)
    """
    del unroll
    reason = supports(cell)
    if reason is not None:
        raise NotImplementedError(f"backend='pallas' does not support this call: {reason}")
    spec = kernel_spec(cell)
    steps, batch = xp.shape[0], tuple(xp.shape[1:-1])
    flat_b = math.prod(batch)
    if steps == 0 or flat_b == 0:
        # Nothing to loop over: exactly what the scan returns (no kernel of size zero).
        return xla.run(
            cell,
            params,
            xp,
            carry0,
            mask=mask,
            resets=resets,
            reverse=reverse,
            unroll=1,
            return_carries=return_carries,
        )
    leaves, treedef = jax.tree.flatten(carry0)
    c0 = tuple(a.reshape(flat_b, a.shape[-1]).astype(jnp.float32) for a in leaves)
    xp3 = xp.reshape(steps, flat_b, xp.shape[-1]).astype(jnp.float32)

    def as_float(m):
        return None if m is None else m.reshape(steps, flat_b, 1).astype(jnp.float32)

    w = params.w_hh.astype(spec.dtype)
    bias = params.b_hh.reshape(1, -1).astype(jnp.float32) if spec.has_bias else None
    fn = _dispatch(
        spec,
        reverse=bool(reverse),
        return_carries=bool(return_carries),
        kernel=kernel,
        interpret=interpret,
        tpu_kw=tpu_kw,
        gpu_kw=gpu_kw,
    )
    carry, ys, carries = fn(w, bias, xp3, c0, as_float(mask), as_float(resets))
    carry = jax.tree.unflatten(treedef, [a.reshape(*batch, a.shape[-1]) for a in carry])
    ys = ys.reshape(steps, *batch, ys.shape[-1])
    if carries is not None:
        carries = jax.tree.unflatten(
            treedef, [a.reshape(steps, *batch, a.shape[-1]) for a in carries]
        )
    return carry, ys, carries
