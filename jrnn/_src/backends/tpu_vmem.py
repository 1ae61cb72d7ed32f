"""The VMEM model of the Pallas TPU kernels: block sizes per chip generation, or why none fits.

Each kernel keeps ``W_hh`` whole in VMEM (one buffer) and streams every per-step array in
chunks of ``tc`` steps by ``bb`` batch rows (two buffers each: the Pallas pipeline prefetches
the next chunk while the kernel runs the current one). Every VMEM tile is padded to (8
sublanes, 128 lanes). With ``Hp``/``Gp``/``Op`` the hidden, gate and output widths rounded up
to 128 lanes and ``isz`` the bytes of the compute dtype::

    forward  = Hp Gp isz + 8 Gp 4 [bias]
             + 2 tc bb 4 (Gp + Op + nc Hp [saved carries] + 128 [mask] + 128 [resets])
             + 2 bb 4 (2 nc Hp) [carry0 in, carry out]
             + bb 4 (2 nc Hp + 4 Gp) [the step's live values]
    backward = Hp Gp isz + 8 Gp 4
             + 2 tc bb 4 (Gp [xp] + Gp [h W_hh, precomputed] + nc Hp [carries in]
                          + Op [dys] + nc Hp [dcarries] + 2 * 128 + Gp [dxp] + Gp [dhp, GRU])
             + 2 bb 4 (3 nc Hp) [dcarry in, dcarry0 out, reset accumulators]
             + bb 4 (2 nc Hp + 8 Gp)

A plan must fit ``budget = 3/4`` of the generation's VMEM per core (the rest is left to
Mosaic's own scratch and spills); the kernels ask the compiler for ``vmem_limit_bytes =
min(model * 5/4 + 4 MiB, 7/8 VMEM)``. The batch block is the largest that fits (up to 256 rows,
a multiple of 8 unless it is the whole batch); on chips with two TensorCores per chip (v4, v5p)
the batch is split into at least two blocks when it has 16 rows or more, so that the
``"parallel"`` grid axis gives each core half. The time chunk is then the largest of 16, 8, 4,
2, 1 that fits, preferring a divisor of t of at least half that (else t is padded with
masked steps).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

MiB = 2**20

# VMEM per TensorCore and TensorCores per chip, as jax.experimental.pallas.tpu's own chip
# table (jax/_src/pallas/mosaic/tpu_info.py, jax 0.10.2) gives them.
GENERATIONS = {
    "v4": (16 * MiB, 2),
    "v5e": (128 * MiB, 1),
    "v5p": (64 * MiB, 2),
    "v6e": (128 * MiB, 1),
}
# Device kinds as TPU runtimes report them.
_KINDS = {
    "tpu v4": "v4",
    "tpu v5e": "v5e",
    "tpu v5 lite": "v5e",
    "tpu v5": "v5p",
    "tpu v5p": "v5p",
    "tpu v6e": "v6e",
    "tpu v6 lite": "v6e",
}
MAX_BLOCK_BATCH = 256
TIME_CHUNKS = (16, 8, 4, 2, 1)
LANES, SUBLANES = 128, 8

_target: contextvars.ContextVar[str | None] = contextvars.ContextVar("jrnn_tpu", default=None)


@contextlib.contextmanager
def target(generation: str):
    """Sizes the TPU kernels traced inside the block for ``generation`` (ahead-of-time compiles).

    Example:
      >>> from jrnn._src.backends import tpu_vmem
      >>> with tpu_vmem.target("v5e"):
      ...     tpu_vmem.generation()
      'v5e'
    """
    if generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {sorted(GENERATIONS)}, got {generation!r}")
    token = _target.set(generation)
    try:
        yield
    finally:
        _target.reset(token)


def generation() -> str | None:
    """The generation the kernels are sized for: ``target(...)``, else the attached TPU's.

    None when neither is known (a CPU host lowering for TPU): then :func:`plan` uses the
    smallest budget of all known generations, so that what it accepts fits everywhere.
    """
    chosen = _target.get()
    if chosen is not None:
        return chosen
    try:
        import jax

        if jax.default_backend() != "tpu":
            return None
        kind = jax.devices()[0].device_kind.lower()
    except Exception:  # no TPU runtime: nothing to detect
        return None
    return next(
        (g for k, g in sorted(_KINDS.items(), key=lambda kv: -len(kv[0])) if kind.startswith(k)),
        None,
    )


def budget(gen: str | None) -> tuple[int, int, int]:
    """``(budget bytes, VMEM bytes, cores per chip)`` of ``gen`` (None: the smallest of all)."""
    if gen is None:
        return min(budget(g) for g in GENERATIONS)
    vmem, cores = GENERATIONS[gen]
    return vmem * 3 // 4, vmem, cores


def lanes(n: int) -> int:
    """``n`` rounded up to a multiple of 128 lanes."""
    return -(-max(n, 1) // LANES) * LANES


class Dims(NamedTuple):
    """The widths a kernel moves: hidden h, gates g, output o, carry leaves nc, dtype bytes."""

    hidden: int
    width: int
    output: int
    num_carry: int
    itemsize: int
    has_bias: bool
    hp_is_xp: bool


class Plan(NamedTuple):
    """Block sizes: ``bb`` batch rows, ``bp`` padded batch, ``tc`` steps, ``tp`` padded steps."""

    bb: int
    bp: int
    tc: int
    tp: int
    forward_bytes: int
    backward_bytes: int
    generation: str | None


def forward_bytes(d: Dims, tc: int, bb: int) -> int:
    """The forward kernel's VMEM request (bytes) for chunks of ``tc`` steps by ``bb`` rows."""
    H, G, Out = lanes(d.hidden), lanes(d.width), lanes(d.output)
    rows = -(-bb // SUBLANES) * SUBLANES
    w = H * G * d.itemsize + (SUBLANES * G * 4 if d.has_bias else 0)
    stream = 2 * tc * rows * 4 * (G + Out + d.num_carry * H + 2 * LANES)
    carry = 2 * rows * 4 * 2 * d.num_carry * H
    live = rows * 4 * (2 * d.num_carry * H + 4 * G)
    return w + stream + carry + live


def backward_bytes(d: Dims, tc: int, bb: int) -> int:
    """The backward kernel's VMEM request (bytes), same blocks as the forward."""
    H, G, Out = lanes(d.hidden), lanes(d.width), lanes(d.output)
    rows = -(-bb // SUBLANES) * SUBLANES
    w = H * G * d.itemsize + (SUBLANES * G * 4 if d.has_bias else 0)
    per_step = 3 * G + (0 if d.hp_is_xp else G) + 2 * d.num_carry * H + Out + 2 * LANES
    stream = 2 * tc * rows * 4 * per_step
    carry = 2 * rows * 4 * 3 * d.num_carry * H
    live = rows * 4 * (2 * d.num_carry * H + 8 * G)
    return w + stream + carry + live


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _batch_blocks(batch: int, cores: int) -> list[tuple[int, int]]:
    """Candidate ``(bb, bp)`` from the largest down."""
    if cores > 1 and batch >= 2 * SUBLANES:
        first = min(_round_up(-(-batch // cores), SUBLANES), MAX_BLOCK_BATCH)
    elif batch <= MAX_BLOCK_BATCH:
        first = batch
    else:
        first = MAX_BLOCK_BATCH
    out = [(first, _round_up(batch, first))]
    bb = _round_up(first, SUBLANES) // 2
    while bb >= SUBLANES:
        bb = _round_up(bb, SUBLANES)
        if bb < first:
            out.append((bb, _round_up(batch, bb)))
        bb //= 2
    return out


def _time_chunk(steps: int, cap: int) -> tuple[int, int]:
    """``(tc, tp)``: the largest divisor of t up to ``cap`` if it is >= cap/2, else cap."""
    cap = max(1, min(cap, steps))
    best = max(d for d in range(1, cap + 1) if steps % d == 0)
    if best * 2 >= cap:
        return best, steps
    return cap, _round_up(steps, cap)


def plan(d: Dims, steps: int, batch: int, gen: str | None = None, *, backward: bool = True):
    """The block sizes for ``steps`` x ``batch`` on ``gen``, or the reason nothing fits (str)."""
    limit, vmem, _ = budget(gen)
    cores = GENERATIONS[gen][1] if gen is not None else 1
    for bb, bp in _batch_blocks(max(batch, 1), cores):
        for cap in TIME_CHUNKS:
            tc, tp = _time_chunk(max(steps, 1), cap)
            fwd = forward_bytes(d, tc, bb)
            bwd = backward_bytes(d, tc, bb) if backward else 0
            if max(fwd, bwd) <= limit:
                return Plan(bb, bp, tc, tp, fwd, bwd, gen)
    need = max(forward_bytes(d, 1, 8), backward_bytes(d, 1, 8) if backward else 0)
    where = gen or "the smallest TPU generation (v4) when the target is not known"
    return (
        f"the Pallas TPU kernel needs {need / MiB:.1f} MiB of VMEM even at 1 step x 8 rows "
        f"(W_hh [{d.hidden}, {d.width}] alone is {d.hidden * d.width * d.itemsize / MiB:.1f} "
        f"MiB), over the {limit / MiB:.0f} MiB budget (3/4 of {vmem / MiB:.0f} MiB VMEM) "
        f"of {where}"
    )


_limit_scale: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "jrnn_tpu_limit", default=None
)


@contextlib.contextmanager
def limit_scale(scale: float):
    """Kernels traced inside ask for exactly ``scale x`` the model's VMEM (tests of the model)."""
    token = _limit_scale.set(float(scale))
    try:
        yield
    finally:
        _limit_scale.reset(token)


def vmem_limit(model_bytes: int, gen: str | None) -> int:
    """The ``vmem_limit_bytes`` the kernels ask for: model x 5/4 + 4 MiB, at most 7/8 of VMEM."""
    scale = _limit_scale.get()
    if scale is not None:
        return int(model_bytes * scale)
    _, vmem, _ = budget(gen)
    return int(min(model_bytes * 5 // 4 + 4 * MiB, vmem * 7 // 8))
