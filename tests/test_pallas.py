"""The "pallas" backend: kernels through the Pallas interpreter against "reference", lowering.

On this CPU machine the kernels run through the Pallas interpreter (``interpret=True``) and the
TPU-semantics interpreter; the lowering tests prove that forward and gradient lower for TPU
(Mosaic) and CUDA (Triton) to the kernels' custom calls, and that Mosaic's block-shape check
bites. Nothing here compiles a kernel for, or runs it on, a TPU or a GPU.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

import jrnn
from jrnn._src import unroll as unroll_lib
from jrnn._src.backends import pallas, pallas_gpu, pallas_tpu, tpu_vmem

BATCH = (2, 2)  # two leading batch dims: the backend flattens them around the kernel
STEPS = 5
INPUT = 3
LENGTHS = np.array([[5, 2], [0, 4]])
RESETS = np.zeros((*BATCH, STEPS), bool)
RESETS[0, 0, 3] = RESETS[1, 1, 1] = True

CELLS = {
    "lstm": lambda **kw: jrnn.lstm(32, **kw),
    "gru": lambda **kw: jrnn.gru(32, **kw),
    "elman": lambda **kw: jrnn.elman(24, **kw),  # 24: the GPU kernel pads it to 32
    "seed_rnn": lambda **kw: jrnn.seed_rnn(24, output_size=20, **kw),
}
# The GPU kernel pads elman/seed (24, 20 -> 32) and runs lstm/gru as two hidden tiles of 16;
# the GRU re-reads W_hh every step (hold_bytes=0), the others hold it in registers.
GPU_KW = {"lstm": dict(block_hidden=16), "gru": dict(block_hidden=16, hold_bytes=0)}
# The interpreter's XLA programs are compiled without optimisation: the tests are compile-bound.
FAST = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def _fast(f, *args, static=()):
    """``jax.jit(f)(*args)``, compiled without XLA optimisations (args in ``static`` static)."""
    compiled = jax.jit(f, static_argnums=static).trace(*args).lower().compile(FAST)
    return compiled(*(a for i, a in enumerate(args) if i not in static))


def _normal(seed, shape):
    # numpy draws: eager jax.random calls would each compile a small program.
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _inputs(cell):
    params = cell.init(jax.random.key(0), INPUT)
    xs = _normal(1, (*BATCH, STEPS, INPUT))
    carry = jax.tree.map(lambda a: 0.5 * _normal(2, a.shape), cell.initial_carry(BATCH))
    return params, xs, carry


def _kernel_unroll(cell, params, xs, carry, *, lengths, reverse, resets, return_carries, kernel):
    """``jrnn.unroll`` with a chosen kernel (the same steps as ``unroll.run_time_major``)."""
    xs_tm = jnp.moveaxis(xs, -2, 0)
    mask = unroll_lib.make_mask(jnp.asarray(lengths), STEPS)
    r = None if resets is None else jnp.moveaxis(jnp.asarray(resets), -1, 0)
    r = unroll_lib.reverse_resets(r) if reverse else r
    c, ys, cs = pallas.run(
        cell,
        params,
        cell.input_projection(params, xs_tm),
        carry,
        mask=mask,
        resets=r,
        reverse=reverse,
        unroll=1,
        return_carries=return_carries,
        kernel=kernel,
        gpu_kw=GPU_KW.get(cell.name),
    )
    cs = jax.tree.map(lambda a: jnp.moveaxis(a, 0, len(BATCH)), cs)
    return c, jnp.moveaxis(ys, 0, -2), cs


def _reference(cell, params, xs, carry, *, lengths, reverse, resets, return_carries, kernel):
    del kernel
    out = jrnn.unroll(
        cell,
        params,
        xs,
        carry,
        lengths=jnp.asarray(lengths),
        reverse=reverse,
        resets=None if resets is None else jnp.asarray(resets),
        return_carries=return_carries,
        backend="reference",
    )
    return out if return_carries else (*out, None)


def _loss_and_grads(run, cell, params, xs, carry, kernel):
    """Outputs, final carries and grads w.r.t. (params, xs, carry) for two configurations."""
    configs = [
        dict(lengths=LENGTHS, reverse=False, resets=None, return_carries=False),
        dict(lengths=LENGTHS, reverse=True, resets=RESETS, return_carries=True),
    ]

    def loss(params, xs, carry):
        total, outs = 0.0, []
        for i, cfg in enumerate(configs):
            c, ys, cs = run(cell, params, xs, carry, kernel=kernel, **cfg)
            w = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32) + i).reshape(ys.shape)
            total = total + jnp.sum(w * ys.astype(jnp.float32))
            total = total + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves((c, cs)))
            outs.append((c, ys, cs))
        return total, outs

    (_, outs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)
    return outs, grads


def _assert_trees_close(got, want, tol):
    got_l, want_l = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_l) == len(want_l) and got_l
    for g, w in zip(got_l, want_l, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(
            np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tol, atol=tol
        )


@functools.lru_cache
def _reference_results(name, dtype_name):
    kw = {} if dtype_name == "float32" else dict(dtype=dtype_name, param_dtype=dtype_name)
    cell = CELLS[name](**kw)
    return cell, _fast(_loss_and_grads, _reference, cell, *_inputs(cell), None, static=(0, 1, 5))


def _check_kernel(name, kernel, dtype_name, tol):
    cell, want = _reference_results(name, dtype_name)
    params, xs, carry = _inputs(cell)
    got = _fast(_loss_and_grads, _kernel_unroll, cell, params, xs, carry, kernel, static=(0, 1, 5))
    _assert_trees_close(got, want, tol)
    return got


@pytest.mark.parametrize("kernel", ["tpu", "gpu"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_kernel_equals_reference(name, kernel):
    """Outputs, final carry, every step's carry and grads w.r.t. params/inputs/carry0, with
    lengths forward and with lengths + resets + return_carries in reverse, through the
    interpreter, equal the Python-loop reference."""
    got = _check_kernel(name, kernel, "float32", 1e-5)
    ys = got[0][0][1]
    assert float(jnp.max(jnp.abs(ys[1, 0]))) == 0.0  # length 0: outputs exactly zero


@pytest.mark.parametrize("kernel", ["tpu", "gpu"])
def test_bfloat16_equals_reference(kernel):
    """bf16 weights and matmul operands, float32 accumulation: equal within ~1e-2."""
    cell, _ = _reference_results("lstm", "bfloat16")
    assert cell.init(jax.random.key(0), INPUT).w_hh.dtype == jnp.bfloat16
    _check_kernel("lstm", kernel, "bfloat16", 2e-2)


def test_unroll_tokens_platform_dispatch_equals_reference():
    """``jrnn.unroll(..., backend="pallas")`` on CPU (the platform_dependent CPU branch) with
    token inputs and lengths, forward and gradient."""
    cell = jrnn.gru(16)
    params = cell.init(jax.random.key(3), 11)
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, 11, (3, STEPS)), jnp.int32)
    lengths = jnp.array([5, 1, 3])

    def loss(params, backend):
        carry, ys = jrnn.unroll(cell, params, tokens, lengths=lengths, backend=backend)
        return jnp.sum(jnp.tanh(ys)) + jnp.sum(carry**2), (carry, ys)

    f = jax.value_and_grad(loss, has_aux=True)
    got = _fast(f, params, "pallas", static=(1,))
    _assert_trees_close(got, _fast(f, params, "reference", static=(1,)), 1e-5)


def test_bidirectional_stack_equals_xla():
    """A 2-layer bidirectional GRU stack (vmap over directions, scan over layers)."""
    net = jrnn.rnn(jrnn.gru(16), num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(5), INPUT)
    xs = _normal(6, (3, STEPS, INPUT))
    lengths = jnp.array([5, 2, 4])

    def loss(params, backend):
        ys, carries = net.apply(params, xs, lengths=lengths, backend=backend)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carries**2), (ys, carries)

    f = jax.value_and_grad(loss, has_aux=True)
    _assert_trees_close(
        _fast(f, params, "pallas", static=(1,)), _fast(f, params, "xla", static=(1,)), 1e-5
    )


def test_tpu_semantics_interpreter_detects_no_races():
    """The TPU interpreter (race detection on) over 2 batch blocks and 2 time chunks, one of
    them padded with masked steps (T=5, chunk 4)."""
    from jax._src.pallas.mosaic.interpret import interpret_pallas_call as tpu_interp

    cell = jrnn.lstm(16)
    params = cell.init(jax.random.key(7), INPUT)
    xs = _normal(8, (16, STEPS, INPUT))
    lengths = jnp.arange(16) % (STEPS + 1)

    def loss(params, interp):
        xp = cell.input_projection(params, jnp.moveaxis(xs, 1, 0))
        carry, ys, _ = pallas.run(
            cell,
            params,
            xp,
            cell.initial_carry(16),
            mask=unroll_lib.make_mask(lengths, STEPS),
            resets=None,
            reverse=True,
            unroll=1,
            return_carries=False,
            kernel="tpu",
            interpret=interp,
            tpu_kw=dict(block_batch=8, block_time=4),
        )
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry[1]), ys

    def ref(params):
        carry, ys = jrnn.unroll(cell, params, xs, lengths=lengths, reverse=True, backend="xla")
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry[1]), jnp.moveaxis(ys, 1, 0)

    interp = pltpu.InterpretParams(detect_races=True)
    got = _fast(jax.value_and_grad(loss, has_aux=True), params, interp, static=(1,))
    assert not tpu_interp.races.races_found
    want = _fast(jax.value_and_grad(ref, has_aux=True), params)
    _assert_trees_close(got, want, 1e-5)


@pytest.mark.parametrize("name", ["lstm", "gru", "elman_relu", "elman_tanh"])
def test_gpu_tile_math_equals_cell_gates(name):
    """The GPU kernel's per-tile pointwise math (it cannot call cell.gates) equals it."""
    cell = {
        "lstm": jrnn.lstm(8),
        "gru": jrnn.gru(8),
        "elman_relu": jrnn.elman(8, activation="relu"),
        "elman_tanh": jrnn.elman(8),
    }[name]
    spec = pallas.kernel_spec(cell)
    xp, hp = 2 * _normal(9, (4, spec.width)), 2 * _normal(10, (4, spec.width))
    carry = tuple(_normal(11 + i, (4, 8)) for i in range(spec.num_carry))
    n = spec.width // 8
    split = lambda a: tuple(a[:, q * 8 : (q + 1) * 8] for q in range(n))  # noqa: E731
    got, want = jax.jit(
        lambda xp, hp, c: (
            pallas_gpu.pointwise(spec, split(xp), split(hp), c),
            spec.gates(c, xp, hp),
        )
    )(xp, hp, carry)
    _assert_trees_close(got, want, 1e-6)


def _lowered(fn, args, platform):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("name", sorted(CELLS))
def test_forward_and_gradient_lower_to_kernels(name):
    """Forward and grad of unroll(backend="pallas") lower for tpu and cuda to the kernels'
    custom calls (forward and backward kernel), and no plain scan loop is left."""
    cell = CELLS[name]()
    params = cell.init(jax.random.key(0), 7)
    tokens = jnp.zeros((16, STEPS), jnp.int32)
    lengths = jnp.full((16,), 3)

    def loss(params):
        _, ys = jrnn.unroll(cell, params, tokens, lengths=lengths, reverse=True, backend="pallas")
        return jnp.sum(ys)

    def forward_and_grad(params):
        return loss(params), jax.grad(loss)(params)

    traced = jax.jit(forward_and_grad).trace(params)
    for platform, target, suffix in (("tpu", "tpu_custom_call", ""), ("cuda", "triton", "_gpu")):
        text = traced.lower(lowering_platforms=(platform,)).as_text()
        calls = [c for c in re.findall(r"custom_call @([\w$.]+)", text) if target in c]
        # forward alone, forward saving the carries, and the backward kernel
        assert len(calls) == 3, (platform, calls)
        for kernel in ("forward", "backward"):
            assert f"jrnn_{name}_{kernel}{suffix}" in text
        assert "stablehlo.while" not in text  # the time loop is inside the kernels


def test_bad_tpu_block_shape_fails_lowering():
    """A batch block of 4 rows (not a multiple of 8, not the full 16) is rejected by the
    Mosaic lowering; 8 rows lower. The test proves the lowering check bites."""
    cell = jrnn.lstm(32)
    params = cell.init(jax.random.key(0), INPUT)
    xs = jnp.ones((STEPS, 16, INPUT))

    def run(params, block_batch):
        xp = cell.input_projection(params, xs)
        _, ys, _ = pallas.run(
            cell,
            params,
            xp,
            cell.initial_carry(16),
            mask=None,
            resets=None,
            reverse=False,
            unroll=1,
            return_carries=False,
            kernel="tpu",
            interpret=False,
            tpu_kw=dict(block_batch=block_batch),
        )
        return ys

    assert "tpu_custom_call" in _lowered(lambda p: run(p, 8), (params,), "tpu")
    with pytest.raises(ValueError, match="divisible by 8 and 128"):
        _lowered(lambda p: run(p, 4), (params,), "tpu")


def test_supports_and_unsupported_cells_raise():
    assert pallas.supports(jrnn.lstm(8), lengths=True, reverse=True, resets=True) is None
    assert pallas.supports(jrnn.gru(8, dtype=jnp.bfloat16)) is None
    for cell, word in (
        (jrnn.lstm(8, peepholes=True), "peepholes"),
        (jrnn.lstm(8, layer_norm=True), "layer_norm"),
        (jrnn.lstm(8, proj_size=4), "proj_size"),
        (jrnn.gru(8, reset_after=False), "reset_after"),
        (jrnn.lstm(8, dtype=jnp.float16), "dtype"),
    ):
        assert word in pallas.supports(cell)
        params = jax.eval_shape(functools.partial(cell.init, input_size=3), jax.random.key(0))
        xs = jax.ShapeDtypeStruct((2, 4, 3), jnp.float32)
        run = functools.partial(jrnn.unroll, cell, backend="pallas")
        with pytest.raises(NotImplementedError, match=word):
            jax.eval_shape(run, params, xs)


def test_block_choices():
    d = pallas_tpu.dims(pallas.kernel_spec(jrnn.lstm(512)))
    # One-core chip, a small batch: the whole batch in one block, the longest time chunk.
    p = tpu_vmem.plan(d, 256, 32, "v5e")
    assert (p.bb, p.bp, p.tc, p.tp) == (32, 32, 16, 256)
    # Two cores (v5p): the batch is split in two blocks for the parallel grid axis.
    p = tpu_vmem.plan(d, 256, 32, "v5p")
    assert (p.bb, p.bp) == (16, 32)
    p = tpu_vmem.plan(d, 257, 200, "v5e")  # prime t: padded with masked steps
    assert (p.bb, p.bp, p.tp % p.tc, p.tp - 257 < p.tc) == (200, 200, 0, True) and p.tc >= 4
    p = tpu_vmem.plan(d, 7, 600, "v6e")
    assert (p.bb, p.bp, p.tp % p.tc) == (256, 768, 0)  # batch 600: 3 blocks of 256
    assert max(p.forward_bytes, p.backward_bytes) <= tpu_vmem.budget("v6e")[0]
    # v4 (16 MiB per core): W_hh of hidden 1024 in float32 (16 MiB) alone does not fit.
    big = pallas_tpu.dims(pallas.kernel_spec(jrnn.lstm(1024)))
    assert "16.0 MiB" in tpu_vmem.plan(big, 256, 32, "v4")
    # An unknown TPU (a CPU host): the smallest budget (v4's).
    assert isinstance(tpu_vmem.plan(big, 256, 32, None), str)
    assert isinstance(tpu_vmem.plan(big, 256, 32, "v5e"), tpu_vmem.Plan)
    plan = pallas_gpu._Plan(
        pallas.kernel_spec(jrnn.lstm(512)),
        4,
        block_batch=None,
        block_hidden=None,
        hold_bytes=48 * 1024,
        itemsize=4,
    )
    assert (plan.bb, plan.bp, plan.bh, plan.nh, plan.hold) == (16, 16, 128, 4, False)


def test_lecture_size_lowers_for_tpu():
    """Hidden 512, T 256, batch 32, bf16 (VMEM limit raised): forward and grad lower."""
    cell = jrnn.lstm(512, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params = jax.eval_shape(functools.partial(cell.init, input_size=128), jax.random.key(0))
    tokens = jax.ShapeDtypeStruct((32, 256), jnp.int32)

    def loss(params, tokens):
        return jnp.sum(jrnn.unroll(cell, params, tokens, backend="pallas")[1])

    traced = jax.jit(jax.value_and_grad(loss)).trace(params, tokens)
    text = traced.lower(lowering_platforms=("tpu",)).as_text()
    assert text.count("tpu_custom_call") >= 2 and "jrnn_lstm_backward" in text


def test_exports_and_serializes_per_platform():
    """``jax.export`` of the gradient for tpu, and for cuda (the Triton custom call is not on
    jax.export's list of stable custom calls, so its check is disabled), round-trips through
    serialization."""
    from jax import export

    cell = jrnn.gru(16)
    params = jax.eval_shape(functools.partial(cell.init, input_size=4), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((8, STEPS, 4), jnp.float32)

    def grads(leaves, xs):  # plain tuples: jax.export does not know jrnn's NamedTuples
        def loss(leaves):
            params = jrnn.GRUParams(*leaves)
            return jnp.sum(jrnn.unroll(cell, params, xs, backend="pallas")[1])

        return jax.grad(loss)(leaves)

    leaves = tuple(params)
    triton = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    for platform, checks in (("tpu", ()), ("cuda", triton)):
        exp = export.export(jax.jit(grads), platforms=[platform], disabled_checks=checks)
        back = export.deserialize(exp(leaves, xs).serialize())
        assert back.platforms == (platform,)
        assert "jrnn_gru_backward" in back.mlir_module()


@pytest.mark.parametrize(
    "name,hidden",
    [("lstm", 1), ("gru", 7), ("lstm", 130), pytest.param("gru", 1000, marks=pytest.mark.slow)],
)
def test_hidden_sizes_equal_reference(name, hidden):
    """Hidden sizes off the 128-lane grid (the TPU kernel pads h per gate block): outputs, carry
    and grads w.r.t. params, inputs and carry0 equal the reference, through the interpreter."""
    cell = getattr(jrnn, name)(hidden)
    params = cell.init(jax.random.key(0), INPUT)
    xs = _normal(5, (2, 3, INPUT))
    carry = jax.tree.map(lambda a: 0.5 * _normal(6, a.shape), cell.initial_carry(2))
    lengths = jnp.array([3, 1])

    def loss(params, xs, carry, backend):
        c, ys = jrnn.unroll(cell, params, xs, carry, lengths=lengths, backend=backend)
        w = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
        return jnp.sum(w * ys) + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(c)), (c, ys)

    f = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    got = _fast(f, params, xs, carry, "pallas", static=(3,))
    _assert_trees_close(got, _fast(f, params, xs, carry, "reference", static=(3,)), 1e-5)


@pytest.mark.parametrize("backend", ["pallas", "auto"])
@pytest.mark.parametrize("shape", [(3, 0), (0, 4)], ids=["steps0", "batch0"])
def test_empty_sequences_equal_reference(shape, backend):
    """T = 0 and batch 0: the carry, outputs and grads of "xla" (the scan), no kernel of size
    zero (the Python-loop reference cannot stack zero steps)."""
    cell = jrnn.lstm(8)
    params = cell.init(jax.random.key(0), INPUT)
    batch, steps = shape
    xs = _normal(7, (batch, steps, INPUT))
    carry = jax.tree.map(lambda a: _normal(8, a.shape), cell.initial_carry(batch))

    def loss(params, carry, backend):
        c, ys = jrnn.unroll(cell, params, xs, carry, backend=backend)
        return sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(c)) + jnp.sum(ys), (c, ys)

    f = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    got, want = f(params, carry, backend), f(params, carry, "xla")
    assert got[0][1][1].shape == (batch, steps, 8)
    _assert_trees_close(got, want, 0.0)


def test_auto_decides_for_the_target_platform():
    """One function traced on this CPU host: lowered for TPU, "auto" runs the Pallas kernel
    where its VMEM model fits (hidden 512) and the scan where it does not (hidden 4096, W_hh
    64 MiB); lowered for CPU it is the C++ kernel (the scan where that does not build); on CPU
    its values equal that backend's."""
    from jrnn._src.backends import cpu_kernel

    on_cpu = "cpu" if cpu_kernel.load(warn=False) else "xla"
    tokens = jax.ShapeDtypeStruct((32, 256), jnp.int32)
    for hidden, kernels in ((512, 2), (4096, 0)):
        cell = jrnn.lstm(hidden)
        params = jax.eval_shape(functools.partial(cell.init, input_size=128), jax.random.key(0))
        assert (pallas.tpu_fits(cell, 256, 32) is None) == (kernels > 0)

        def loss(params, tokens, cell=cell):
            return jnp.sum(jrnn.unroll(cell, params, tokens)[1])

        traced = jax.jit(jax.value_and_grad(loss)).trace(params, tokens)
        tpu = traced.lower(lowering_platforms=("tpu",)).as_text()
        cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
        assert tpu.count("tpu_custom_call") == kernels
        assert ("stablehlo.while" in tpu) == (kernels == 0)
        assert "tpu_custom_call" not in cpu
        if on_cpu == "cpu":
            assert "jrnn_rnn_fwd" in cpu and "jrnn_rnn_bwd" in cpu and "stablehlo.while" not in cpu
        else:
            assert "stablehlo.while" in cpu
    cell = jrnn.gru(8)
    params = cell.init(jax.random.key(0), INPUT)
    xs = _normal(9, (2, STEPS, INPUT))
    grad = jax.grad(lambda p, b: jnp.sum(jnp.sin(jrnn.unroll(cell, p, xs, backend=b)[1])))
    _assert_trees_close(grad(params, "auto"), grad(params, on_cpu), 0.0)
