"""The Pallas GPU (Triton) kernels on a CPU machine: the Pallas interpreter against
"reference", the kernel choice, the GPU capability check, precision and CUDA lowering.

Nothing here runs on a GPU: ``kernel="gpu"`` with ``interpret=True`` runs the same kernel
bodies as ordinary XLA programs, and ``lowering_platforms=("cuda",)`` lowers them to the
Triton custom calls XLA:GPU would compile.
"""

import functools
import re
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src import unroll as unroll_lib
from jrnn._src.backends import pallas, pallas_gpu, pallas_gpu_step

STEPS = 5
# The interpreter's XLA programs are compiled without optimisation: the tests are compile-bound.
FAST = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def _fast(f, *args, static=()):
    compiled = jax.jit(f, static_argnums=static).trace(*args).lower().compile(FAST)
    return compiled(*(a for i, a in enumerate(args) if i not in static))


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _gpu_unroll(cell, params, xs, carry, *, lengths, reverse, resets, return_carries, gpu_kw):
    """``jrnn.unroll`` (batch-major, inputs or tokens) through the GPU kernel, interpreted."""
    xs_tm = jnp.moveaxis(xs, 1, 0)
    r = None if resets is None else jnp.moveaxis(jnp.asarray(resets), -1, 0)
    r = unroll_lib.reverse_resets(r) if reverse else r
    c, ys, cs = pallas.run(
        cell,
        params,
        cell.input_projection(params, xs_tm),
        carry,
        mask=unroll_lib.make_mask(jnp.asarray(lengths), xs.shape[1]),
        resets=r,
        reverse=reverse,
        unroll=1,
        return_carries=return_carries,
        kernel="gpu",
        interpret=True,
        gpu_kw=dict(gpu_kw or ()),
    )
    return c, jnp.moveaxis(ys, 0, 1), jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), cs)


def _ref_unroll(
    cell,
    params,
    xs,
    carry,
    *,
    lengths,
    reverse,
    resets,
    return_carries,
    gpu_kw,
    backend="reference",
):
    del gpu_kw
    out = jrnn.unroll(
        cell,
        params,
        xs,
        carry,
        lengths=jnp.asarray(lengths),
        reverse=reverse,
        resets=None if resets is None else jnp.asarray(resets),
        return_carries=return_carries,
        backend=backend,
    )
    return out if return_carries else (*out, None)


def _outputs_and_grads(run, cell, params, xs, carry, gpu_kw, lengths, resets):
    """Outputs and grads w.r.t. (params, carry0) [and float inputs] for two configurations:
    lengths forward, and lengths + resets + return_carries in reverse."""
    configs = [
        dict(lengths=lengths, reverse=False, resets=None, return_carries=False),
        dict(lengths=lengths, reverse=True, resets=resets, return_carries=True),
    ]
    tokens = jnp.issubdtype(xs.dtype, jnp.integer)

    def loss(params, xs_or_none, carry):
        x = xs if tokens else xs_or_none
        total, outs = 0.0, []
        for i, cfg in enumerate(configs):
            c, ys, cs = run(cell, params, x, carry, gpu_kw=gpu_kw, **cfg)
            w = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32) + i).reshape(ys.shape)
            total = total + jnp.sum(w * ys.astype(jnp.float32))
            total = total + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves((c, cs)))
            outs.append((c, ys, cs))
        return total, outs

    argnums = (0, 2) if tokens else (0, 1, 2)
    f = jax.value_and_grad(loss, argnums=argnums, has_aux=True)
    return f(params, None if tokens else xs, carry)


def _assert_close(got, want, tol):
    got_l, want_l = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_l) == len(want_l) and got_l
    for g, w in zip(got_l, want_l, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def _check(cell, *, batch, gpu_kw, tokens=False, input_size=3, tol=1e-5, seed=0):
    params = cell.init(jax.random.key(seed), input_size)
    rng = np.random.default_rng(seed)
    if tokens:
        xs = jnp.asarray(rng.integers(0, input_size, (batch, STEPS)), jnp.int32)
    else:
        xs = _normal(seed + 1, (batch, STEPS, input_size))
    carry = jax.tree.map(lambda a: 0.5 * _normal(seed + 2, a.shape), cell.initial_carry(batch))
    lengths = jnp.asarray(rng.integers(0, STEPS + 1, (batch,)))
    resets = np.zeros((batch, STEPS), bool)
    resets[0, 3] = True
    resets[-1, 1] = True
    gpu_kw = tuple(sorted((gpu_kw or {}).items()))  # hashable: a static argument
    args = (cell, params, xs, carry, gpu_kw, lengths, jnp.asarray(resets))
    static = (0, 1, 5)
    got = _fast(_outputs_and_grads, _gpu_unroll, *args, static=static)
    want = _fast(_outputs_and_grads, _ref_unroll, *args, static=static)
    _assert_close(got, want, tol)
    return got


CELLS = {
    "lstm": lambda: jrnn.lstm(20),
    "gru": lambda: jrnn.gru(20),
    "elman": lambda: jrnn.elman(20, activation="relu"),
    "seed_rnn": lambda: jrnn.seed_rnn(20, output_size=36),
}


@pytest.mark.parametrize(
    "name",
    ["lstm", "gru", *(pytest.param(n, marks=pytest.mark.slow) for n in ("elman", "seed_rnn"))],
)
def test_step_kernel_equals_reference(name):
    """Step kernel (grid of 2 batch blocks x 3 hidden blocks, a K loop of 3 tiles, hidden 20
    padded to 48): values, every step's carry and grads w.r.t. params, inputs and carry0."""
    kw = dict(mode="step", block_batch=16, block_hidden=16, block_k=16)
    plan = pallas_gpu_step.StepPlan(
        pallas.kernel_spec(CELLS[name]()),
        20,
        **{k: kw[k] for k in ("block_batch", "block_hidden", "block_k")},
    )
    assert plan.grid[0] == 2 and plan.P // plan.bk >= 2
    _check(CELLS[name](), batch=20, gpu_kw=kw)


TINY = [
    pytest.param(
        name,
        hidden,
        mode,
        marks=() if (name, hidden, mode) == ("lstm", 7, "step") else pytest.mark.slow,
    )
    for name in ("lstm", "gru")
    for hidden in (1, 7)
    for mode in ("step", "persistent")
]


@pytest.mark.parametrize("name, hidden, mode", TINY)
def test_tiny_hidden_both_kernels_equal_reference(name, hidden, mode):
    """Hidden 1 and 7 (padded to 32) with token inputs, through both kernels."""
    cell = {"lstm": jrnn.lstm, "gru": jrnn.gru}[name](hidden)
    _check(cell, batch=3, gpu_kw=dict(mode=mode), tokens=True, input_size=11)


@pytest.mark.slow
def test_hidden_130_default_tiling_equals_reference():
    """Hidden 130: the default rule picks the step kernel (130 > 128) and its tiles."""
    cell = jrnn.gru(130)
    assert pallas_gpu.choose_mode(pallas.kernel_spec(cell)) == "step"
    _check(cell, batch=2, gpu_kw=None, input_size=5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_hidden_1000_equals_reference(name):
    """Hidden 1000 (padded to 1024, K loop of 32 tiles), token inputs."""
    cell = {"lstm": jrnn.lstm, "gru": jrnn.gru}[name](1000)
    _check(cell, batch=2, gpu_kw=None, tokens=True, input_size=7, tol=2e-5)


@pytest.mark.slow
def test_bfloat16_step_kernel():
    cell = jrnn.lstm(20, dtype="bfloat16", param_dtype="bfloat16")
    _check(cell, batch=3, gpu_kw=dict(mode="step"), tol=2e-2)


def test_choose_mode_and_tiles():
    spec = pallas.kernel_spec
    assert pallas_gpu.choose_mode(spec(jrnn.lstm(128))) == "persistent"
    assert pallas_gpu.choose_mode(spec(jrnn.lstm(129))) == "step"
    assert pallas_gpu.choose_mode(spec(jrnn.seed_rnn(64, output_size=256))) == "step"
    assert pallas_gpu.choose_mode(spec(jrnn.lstm(512)), "persistent") == "persistent"
    assert pallas_gpu.choose_mode(spec(jrnn.lstm(8)), persistent_max_hidden=4) == "step"
    with pytest.raises(ValueError, match="mode must be one of"):
        pallas_gpu.choose_mode(spec(jrnn.lstm(8)), "fast")
    # batch 32, hidden 512: 1 batch block, 32 hidden blocks of 16 -> 32 programs per step
    plan = pallas_gpu_step.StepPlan(spec(jrnn.lstm(512)), 32)
    assert (plan.bb, plan.bp, plan.bh, plan.bk, plan.P, plan.grid) == (32, 32, 16, 32, 512, (1, 32))
    # batch 256, hidden 1000: 8 batch blocks x 16 blocks of 64 units (1000 padded to 1024)
    plan = pallas_gpu_step.StepPlan(spec(jrnn.lstm(1000)), 256)
    assert (plan.bb, plan.bh, plan.P, plan.grid) == (32, 64, 1024, (8, 16))
    plan = pallas_gpu_step.StepPlan(spec(jrnn.gru(7)), 3)
    assert (plan.bb, plan.bp, plan.P) == (16, 16, 32)


def _device(kind, cap, platform="gpu"):
    return types.SimpleNamespace(platform=platform, device_kind=kind, compute_capability=cap)


def test_supports_device_declines_t4_and_old_gpus():
    t4 = pallas_gpu.supports_device(_device("Tesla T4", "7.5"))
    assert "compute capability 7.5" in t4 and ">= 8.0" in t4 and "fused" in t4
    assert "7.0" in pallas_gpu.supports_device(_device("Tesla V100-SXM2-16GB", "7.0"))
    assert "unknown" in pallas_gpu.supports_device(_device("mystery", None))
    assert "CUDA only" in pallas_gpu.supports_device(_device("AMD MI300X", None, "rocm"))
    for kind, cap in (("NVIDIA A100-SXM4-40GB", "8.0"), ("NVIDIA L4", "8.9"), ("H100", "9.0")):
        assert pallas_gpu.supports_device(_device(kind, cap)) is None
    assert pallas_gpu.supports_device(_device("NVIDIA B200", "10.0")) is None
    assert pallas_gpu.supports_device(_device("TPU v5 lite", None, "tpu")) is None
    assert pallas_gpu.supports_device(jax.devices("cpu")[0]) is None
    assert pallas_gpu.local_gpu_reason() is None  # no GPU in this process


def test_precision_resolution():
    assert pallas_gpu.resolve_precision(None) == "tf32"
    assert pallas_gpu.resolve_precision("highest") == "highest"
    assert pallas_gpu.resolve_precision(jax.lax.Precision.HIGHEST) == "highest"
    with jax.default_matmul_precision("float32"):
        assert pallas_gpu.resolve_precision(None) == "highest"
    with jax.default_matmul_precision("tensorfloat32"):
        assert pallas_gpu.resolve_precision(None) == "tf32"
    with pytest.raises(ValueError, match="precision must be one of"):
        pallas_gpu.resolve_precision("fp8")


def _cuda_text(cell, steps, batch, gpu_kw):
    params = jax.eval_shape(functools.partial(cell.init, input_size=128), jax.random.key(0))
    tokens = jax.ShapeDtypeStruct((steps, batch), jnp.int32)

    def loss(params, tokens):
        xp = cell.input_projection(params, tokens)
        _, ys, _ = pallas.run(
            cell,
            params,
            xp,
            cell.initial_carry(batch),
            mask=None,
            resets=None,
            reverse=False,
            unroll=1,
            return_carries=False,
            kernel="gpu",
            interpret=False,
            gpu_kw=gpu_kw,
        )
        return jnp.sum(ys)

    traced = jax.jit(jax.value_and_grad(loss)).trace(params, tokens)
    return traced.lower(lowering_platforms=("cuda",)).as_text(), str(traced.jaxpr)


@pytest.mark.parametrize("precision", ["tf32", "highest"])
def test_step_kernel_lowers_for_cuda_at_hidden_1000(precision):
    """Forward and gradient at hidden 1000, T 256, batch 32 trace and lower for CUDA in well
    under 30 s (measured about 1-2 s): the K loop is a loop, not Python-unrolled tiles. The
    forward is Triton calls inside the XLA time loop; the dot's input precision is TF32 by
    default and IEEE with "highest"."""
    start = time.perf_counter()
    text, jaxpr = _cuda_text(jrnn.lstm(1000), 256, 32, dict(precision=precision))
    assert time.perf_counter() - start < 30
    calls = re.findall(r"custom_call @([\w$.]+)", text)
    assert calls == ["__gpu$xla.gpu.triton"], calls  # the step kernel, inside the time loop
    assert "jrnn_lstm_step_gpu" in text and "stablehlo.while" in text
    assert "grid_x = 1 : i32, grid_y = 64 : i32" in text  # 1 batch block x 64 hidden blocks
    # Precision.DEFAULT lowers to Triton's TF32 dot, HIGHEST to IEEE (in every matmul)
    assert ("Precision.HIGHEST" in jaxpr) == (precision == "highest")


def test_persistent_kernel_still_lowers_for_small_hidden():
    text, _ = _cuda_text(jrnn.gru(64), 16, 8, None)
    assert "jrnn_gru_forward_gpu" in text and "jrnn_gru_backward_gpu" in text


def test_gpu_check_quick_correctness_on_cpu(tmp_path):
    """The GPU check's correctness path at tiny size on CPU (the kernel interpreted): errors
    against the reference are small, cuDNN is skipped with its reason, no timing is made."""
    import json

    from jrnn.bench import gpu_check

    path = tmp_path / "check.json"
    argv = [str(path), "--quick", "--no-timing", "--cells", "lstm", "--kinds", "pallas:step"]
    assert gpu_check.main([*argv, "cudnn"]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [(r["backend"], r["status"]) for r in rows] == [("pallas:step", "ok"), ("cudnn", "ok")]
    assert rows[0]["err_out"] < 1e-5 and rows[0]["err_grad"] < 1e-4, rows[0]
    assert rows[1]["skipped"] == "cuDNN needs a CUDA GPU"
    assert "float32 LSTM only" in gpu_check._unavailable("cudnn", "gru", "float32")
    assert not any("forward_ms" in r for r in rows)
    assert "| lstm | float32 | 3 | 20 | 6 | pallas:step |" in gpu_check.markdown(rows)


@pytest.mark.parametrize("batch, steps", [(0, 4), (3, 0)])
def test_empty_batch_or_time_equals_reference(batch, steps):
    """Batch 0 and T = 0 return what "xla" returns (values and gradients; the Python-loop
    "reference" cannot stack zero steps)."""
    cell = jrnn.lstm(20)
    params = cell.init(jax.random.key(0), 3)
    xs = _normal(1, (batch, steps, 3))
    carry = jax.tree.map(lambda a: a + 0.5, cell.initial_carry(batch))
    kw = dict(lengths=jnp.full((batch,), steps), reverse=False, resets=None, return_carries=False)

    def loss(run, params, carry):
        c, ys, _ = run(cell, params, xs, carry, gpu_kw=(), **kw)
        return jnp.sum(ys) + sum(jnp.sum(jnp.sin(a)) for a in c), (c, ys)

    f = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)
    got = _fast(f, _gpu_unroll, params, carry, static=(0,))
    xla = functools.partial(_ref_unroll, backend="xla")
    _assert_close(got, _fast(f, xla, params, carry, static=(0,)), 1e-6)
