"""The "cpu" backend (C++ kernel through XLA's FFI) equals the "reference" backend.

Values and gradients (w.r.t. params, inputs and the initial carry) over cells, token and float
inputs, lengths, reverse, resets, every-step carries and odd sizes, under jit, vmap
(bidirectional layers), lax.scan over layers and grad; the kernel's threads; and the fallback to
"xla" when the kernel cannot be built. The kernel must build here: g++ is part of the test
environment, so a failed build fails these tests instead of skipping them.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src.backends import cpu, cpu_kernel

CELLS = {
    "lstm": lambda h: jrnn.lstm(h),
    "gru": lambda h: jrnn.gru(h),
    "elman_tanh": lambda h: jrnn.elman(h),
    "elman_relu": lambda h: jrnn.elman(h, activation="relu"),
    "seed_rnn": lambda h: jrnn.seed_rnn(h, 5),
}

# (tokens, lengths, reverse, resets, return_carries)
CONFIGS = (
    (False, False, False, False, False),
    (True, True, False, True, True),
    (False, True, True, True, False),
    (True, False, True, False, True),
)


@pytest.fixture(scope="module", autouse=True)
def kernel_built():
    assert cpu_kernel.load(), f"the cpu kernel did not build: {cpu_kernel.status()}"


def _close(got, want, tol=1e-5, what=""):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape, what
        scale = 1.0 + (float(np.max(np.abs(w))) if w.size else 0.0)
        err = float(np.max(np.abs(g - w))) if w.size else 0.0
        assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x {scale:.3g}"


def _problem(cell, B, T, I, seed=0):
    k = jax.random.split(jax.random.key(seed), 7)
    params = cell.init(k[0], I)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k[1], len(leaves))
    # Perturb every parameter, matrices by 0.3 / sqrt(fan_in); then keep the recurrence away from
    # chaos (a tanh RNN whose W_hh has spectral radius ~4 amplifies float rounding, the order of
    # summation of any two correct implementations, by 4^t).
    leaves = [
        a + 0.3 * jax.random.normal(kk, a.shape) / (a.shape[0] ** 0.5 if a.ndim == 2 else 1.0)
        for a, kk in zip(leaves, keys, strict=True)
    ]
    params = jax.tree.unflatten(treedef, leaves)
    params = params._replace(w_hh=0.7 * params.w_hh)
    xs = jax.random.normal(k[2], (B, T, I))
    tokens = jax.random.randint(k[3], (B, T), 0, I)
    carry = jax.tree.map(lambda a: 0.5 * jax.random.normal(k[4], a.shape), cell.initial_carry(B))
    lengths = jax.random.randint(k[5], (B,), 0, T + 1)
    resets = jax.random.bernoulli(k[6], 0.2, (B, T))
    return params, xs, tokens, carry, lengths, resets


def _loss_fn(cell, config, backend, tokens, lengths, resets):
    """``f(params, xs, carry) -> (loss, outputs)`` of ``jrnn.unroll`` under ``config``."""
    use_tokens, use_lengths, reverse, use_resets, ret = config

    def loss(params, xs, carry):
        out = jrnn.unroll(
            cell,
            params,
            tokens if use_tokens else xs,
            carry,
            lengths=lengths if use_lengths else None,
            reverse=reverse,
            resets=resets if use_resets else None,
            return_carries=ret,
            backend=backend,
        )
        leaves = jax.tree.leaves(out)
        weights = [jnp.cos(jnp.arange(a.size, dtype=jnp.float32)).reshape(a.shape) for a in leaves]
        return sum(jnp.sum(w * a) for w, a in zip(weights, leaves, strict=True)), out

    return loss


def _check(cell, config, B, T, I=4, tol=1e-5, seed=0, truth="reference"):
    """Values and gradients of ``backend="cpu"`` against ``truth`` (one jit each)."""
    params, xs, tokens, carry, lengths, resets = _problem(cell, B, T, I, seed)
    res = {}
    for backend in (truth, "cpu"):
        loss = _loss_fn(cell, config, backend, tokens, lengths, resets)
        vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
        res[backend] = vg(params, xs, carry)
    (_, out), grads = res["cpu"]
    (_, out_t), grads_t = res[truth]
    _close(out, out_t, tol, f"values {config}")
    _close(grads, grads_t, 2 * tol, f"grads {config}")


# Fast tier: every cell once, alternating the two configurations that between them cover tokens,
# floats, lengths, reverse, resets and every-step carries; all the others in the slow tier.
FAST = [(name, CONFIGS[1 + i % 2]) for i, name in enumerate(sorted(CELLS))]
SLOW = [(name, c) for name in sorted(CELLS) for c in CONFIGS if (name, c) not in FAST]


@pytest.mark.parametrize("cell_name,config", FAST)
def test_matches_reference(cell_name, config):
    _check(CELLS[cell_name](7), config, B=3, T=6)


@pytest.mark.slow
@pytest.mark.parametrize("cell_name,config", SLOW)
def test_matches_reference_more_configs(cell_name, config):
    _check(CELLS[cell_name](7), config, B=3, T=6)


@pytest.mark.parametrize(
    "cell_name,hidden,batch,steps,threads",
    [
        ("lstm", 1, 1, 1, None),
        ("gru", 130, 33, 9, "2"),
        ("elman_tanh", 7, 33, 0, None),
        ("lstm", 7, 3, 257, None),
        # hidden 300: backward panels of 4 unit vectors (2 with 130), the last one partly empty
        ("lstm", 300, 5, 7, "2"),
        # 3 threads on 2 cores: uneven owned ranges (6, 6, 7 panels), a descheduled owner's
        # panels taken by the others
        ("lstm", 300, 5, 7, "3"),
        pytest.param("seed_rnn", 130, 5, 4, "3", marks=pytest.mark.slow),
        pytest.param("gru", 300, 4, 5, "1", marks=pytest.mark.slow),
        pytest.param("lstm", 130, 3, 9, "2", marks=pytest.mark.slow),
        pytest.param("seed_rnn", 130, 5, 4, "2", marks=pytest.mark.slow),
        pytest.param("elman_relu", 130, 2, 257, "2", marks=pytest.mark.slow),
    ],
)
def test_odd_sizes(cell_name, hidden, batch, steps, threads, monkeypatch):
    if threads:  # force the multi-threaded path (one barrier per step) at small sizes
        monkeypatch.setenv("JRNN_CPU_THREADS", threads)
    config = (False, True, steps % 2 == 1, True, True)
    # "reference" cannot run zero steps, and unrolls every step when traced: "xla" (itself
    # tested against "reference") is the ground truth of the empty and the long sequence.
    truth = "reference" if 0 < steps <= 16 else "xla"
    _check(CELLS[cell_name](hidden), config, B=batch, T=steps, tol=2e-5, truth=truth)


@pytest.mark.slow
def test_multi_dim_batch_and_tokens():
    cell = jrnn.lstm(9)
    params = cell.init(jax.random.key(1), 11)
    tokens = jax.random.randint(jax.random.key(2), (2, 3, 8), 0, 11)
    lengths = jnp.array([[8, 3, 0], [1, 8, 5]])
    ref = jrnn.unroll(cell, params, tokens, lengths=lengths, backend="reference")
    got = jax.jit(lambda p, x: jrnn.unroll(cell, p, x, lengths=lengths, backend="cpu"))(
        params, tokens
    )
    _close(got, ref)


def test_out_of_range_token_gives_nan_like_xla():
    cell = jrnn.gru(4)
    params = cell.init(jax.random.key(0), 5)
    tokens = jnp.array([[0, 7, 1]])
    _, ys = jrnn.unroll(cell, params, tokens, backend="cpu")
    _, ys_xla = jrnn.unroll(cell, params, tokens, backend="xla")
    np.testing.assert_array_equal(np.isnan(ys), np.isnan(ys_xla))
    assert np.isnan(ys[0, 1:]).all() and not np.isnan(ys[0, 0]).any()


@pytest.mark.parametrize("cell_name", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_bidirectional_stack_vmap_scan_grad(cell_name):
    """jrnn.rnn: vmap over directions, lax.scan over 3 layers, lengths, jit and grad."""
    net = jrnn.rnn(CELLS[cell_name](6), num_layers=3, bidirectional=True)
    params = net.init(jax.random.key(0), 5)
    xs = jax.random.normal(jax.random.key(1), (4, 7, 5))
    lengths = jnp.array([7, 3, 0, 5])
    carries = jax.tree.map(
        lambda a: 0.3 * jax.random.normal(jax.random.key(2), a.shape), net.initial_carries(4)
    )

    def loss(backend):
        def f(params, xs, carries):
            ys, out = net.apply(params, xs, carries, lengths=lengths, backend=backend)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(a * a) for a in jax.tree.leaves(out))

        return f

    ref = jax.value_and_grad(loss("reference"), argnums=(0, 1, 2))(params, xs, carries)
    got = jax.jit(jax.value_and_grad(loss("cpu"), argnums=(0, 1, 2)))(params, xs, carries)
    _close(got, ref, 2e-5)


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "seed_rnn"])
def test_tokens_with_pad_ids_and_bidirectional_vmap(cell_name):
    """Token inputs run through ``run_tokens`` (the kernel reads rows of the projection table,
    its backward adds dz into the table's gradient; the GRU keeps no dxp): a bidirectional
    2-layer stack (vmap over directions) with PAD ids -1 and ``vocab`` in the padding, values
    and gradients against "xla"; no [t, b, g] projection appears in the forward's HLO."""
    vocab, T, B = 11, 9, 4
    net = jrnn.rnn(CELLS[cell_name](6), num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(0), vocab)
    lengths = jnp.array([9, 4, 0, 6])
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, vocab)
    pad = jnp.arange(T)[None, :] >= lengths[:, None]
    tokens = jnp.where(pad, jnp.where(jnp.arange(B)[:, None] % 2 == 0, -1, vocab), tokens)

    def loss(backend):
        def f(params):
            ys, out = net.apply(params, tokens, lengths=lengths, backend=backend)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(a * a) for a in jax.tree.leaves(out))

        return f

    want = jax.jit(jax.value_and_grad(loss("xla")))(params)
    got = jax.jit(jax.value_and_grad(loss("cpu")))(params)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(got))
    _close(got, want, 2e-5)
    cell = CELLS[cell_name](6)
    p1 = cell.init(jax.random.key(2), vocab)
    hlo = jax.jit(lambda p: jrnn.unroll(cell, p, tokens, backend="cpu")[1]).lower(p1).as_text()
    gw = p1.w_ih.shape[1]
    assert "jrnn_rnn_fwd" in hlo and f"{T}x{B}x{gw}xf32" not in hlo


def test_auto_picks_the_kernel_on_cpu_for_float32_only():
    """ "auto" runs the kernel on CPU for float32 calls it supports, "xla" for the others."""
    x = jnp.zeros((2, 5, 3))

    def lowered(cell, x):
        params = cell.init(jax.random.key(0), 3)
        return jax.jit(lambda p, x: jrnn.unroll(cell, p, x)[1]).lower(params, x).as_text()

    assert "jrnn_rnn_fwd" in lowered(jrnn.lstm(4), x)
    assert "jrnn_rnn_fwd" in lowered(jrnn.gru(4), jnp.zeros((2, 5), jnp.int32))
    assert "jrnn_rnn_fwd" not in lowered(jrnn.lstm(4, peepholes=True), x)
    assert "jrnn_rnn_fwd" not in lowered(jrnn.lstm(4, dtype=jnp.bfloat16), x)
    cell = jrnn.gru(4)  # bfloat16 inputs are projected to float32 first: the kernel runs them
    params = cell.init(jax.random.key(0), 3)
    xb = x.astype(jnp.bfloat16)
    assert "jrnn_rnn_fwd" in lowered(cell, xb)
    ys = jax.jit(lambda p, x: jrnn.unroll(cell, p, x)[1])(params, xb)
    _close(ys, jrnn.unroll(cell, params, xb, backend="xla")[1])
    # arrays the kernel cannot take: "auto" asks `accepts` and runs "xla" instead
    carry = cell.initial_carry(2)
    assert cpu.accepts(params, x, carry, tokens=False)
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    assert not cpu.accepts(p16, x, carry, tokens=False)
    assert not cpu.accepts(params, xb, carry, tokens=False)
    assert not cpu.accepts(params, x, carry.astype(jnp.bfloat16), tokens=False)
    assert cpu.accepts(params, jnp.zeros((5, 2), jnp.int32), carry, tokens=True)


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "elman_relu", "seed_rnn"])
def test_jax_export_lowers_the_kernel_as_xla(cell_name):
    """jax.export serialises the forward as the "xla" loop (no jrnn custom call in the module),
    with tokens, lengths, return_carries and vmap over directions; its values equal "xla"."""
    net = jrnn.rnn(CELLS[cell_name](6), num_layers=2, bidirectional=True)
    vocab = 7
    params = net.init(jax.random.key(0), vocab)
    tokens = jax.random.randint(jax.random.key(1), (3, 5), 0, vocab)
    lengths = jnp.array([5, 2, 0])

    def f(p, x, backend):
        return net.apply(p, x, lengths=lengths, backend=backend)

    exp = jax.export.export(jax.jit(functools.partial(f, backend="cpu")))(params, tokens)
    assert "jrnn_rnn" not in exp.mlir_module()
    got = jax.export.deserialize(exp.serialize()).call(params, tokens)
    _close(got, f(params, tokens, "xla"), 1e-6)
    _close(got, jax.jit(functools.partial(f, backend="cpu"))(params, tokens), 2e-5)
    lowered = jax.jit(functools.partial(f, backend="cpu")).lower(params, tokens).as_text()
    assert "jrnn_rnn_fwd" in lowered  # a plain jit still runs the kernel
    empty = tokens[:, :0]  # zero steps: the carry passes through
    exp0 = jax.export.export(jax.jit(lambda p, x: net.apply(p, x, backend="cpu")))(params, empty)
    got0 = jax.export.deserialize(exp0.serialize()).call(params, empty)
    _close(got0, net.apply(params, empty, backend="xla"), 0.0)


def test_vmap_of_unroll():
    """vmap over independent problems (different params per member)."""
    cell = jrnn.lstm(5)
    params = jax.vmap(lambda k: cell.init(k, 3))(jax.random.split(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (3, 2, 6, 3))

    def f(backend):
        return jax.vmap(lambda p, x: jrnn.unroll(cell, p, x, reverse=True, backend=backend)[1])

    _close(jax.jit(f("cpu"))(params, xs), f("reference")(params, xs))


def test_supports_declines_with_reasons():
    for cell in (
        jrnn.lstm(4, peepholes=True),
        jrnn.lstm(4, layer_norm=True),
        jrnn.lstm(4, proj_size=2),
        jrnn.gru(4, reset_after=False),
        jrnn.lstm(4, dtype=jnp.bfloat16),
    ):
        reason = cpu.supports(cell)
        assert isinstance(reason, str) and reason, cell.options
    from jrnn._src.cells.linear import min_gru

    assert "min_gru" in cpu.supports(min_gru(4))
    params = jrnn.lstm(4, peepholes=True).init(jax.random.key(0), 3)
    with pytest.raises(NotImplementedError, match="peepholes"):
        jrnn.unroll(jrnn.lstm(4, peepholes=True), params, jnp.zeros((1, 2, 3)), backend="cpu")
    for cell in CELLS.values():
        assert cpu.supports(cell(4)) is None


@pytest.mark.parametrize(
    "extra_env,cause",
    [({}, "failed"), ({"JRNN_CPU_KERNEL": "0", "JRNN_CXX": "g++"}, "JRNN_CPU_KERNEL=0")],
    ids=["build-fails", "turned-off"],
)
def test_fallback_to_xla_when_the_build_fails(tmp_path, extra_env, cause):
    """A failing compiler (JRNN_CXX=false) or JRNN_CPU_KERNEL=0: one RuntimeWarning for an
    explicit backend="cpu", none for "auto", and the "xla" results either way."""
    script = textwrap.dedent(
        """
        import warnings
        import jax, jax.numpy as jnp, numpy as np, jrnn
        cell = jrnn.gru(6)
        p = cell.init(jax.random.key(0), 4)
        xs = jax.random.normal(jax.random.key(1), (2, 5, 4))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = jrnn.unroll(cell, p, xs, backend="cpu")
            g = jax.grad(lambda p: jrnn.unroll(cell, p, xs, backend="cpu")[1].sum())(p)
        b = jrnn.unroll(cell, p, xs, backend="xla")
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == 1, msgs
        assert "running backend='xla'" in msgs[0] and CAUSE in msgs[0], msgs[0]
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)
        # "auto" (the default) and token inputs: quietly "xla", same results
        toks = jnp.array([[0, 3, 1, 2, 3], [1, 1, 0, 2, 9]])
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            c = jrnn.unroll(cell, p, toks, lengths=jnp.array([5, 4]))
            hlo = jax.jit(lambda p: jrnn.unroll(cell, p, xs)[1]).lower(p).as_text()
        assert "jrnn_rnn" not in hlo
        d = jrnn.unroll(cell, p, toks, lengths=jnp.array([5, 4]), backend="xla")
        e = jrnn.unroll(cell, p, toks, lengths=jnp.array([5, 4]), backend="cpu")
        for x, y, z in zip(jax.tree.leaves(c), jax.tree.leaves(d), jax.tree.leaves(e)):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(z, y)
        print("FALLBACK OK")
        """
    )
    env = dict(os.environ, JRNN_CXX="false", JRNN_CACHE_DIR=str(tmp_path / "cache"))
    script = script.replace("CAUSE", repr(cause))
    env.update(extra_env)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "FALLBACK OK" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("hidden,batch,steps", [(1, 33, 17), (130, 1, 40), (33, 17, 257)])
def test_sweep_slow(cell_name, config, hidden, batch, steps, monkeypatch):
    monkeypatch.setenv("JRNN_CPU_THREADS", "2")
    truth = "reference" if steps <= 40 else "xla"
    _check(CELLS[cell_name](hidden), config, B=batch, T=steps, tol=3e-5, seed=hidden, truth=truth)


@pytest.mark.slow
def test_avx2_build_matches_xla(tmp_path):
    """The 8-lane (AVX2/FMA) path, built with -mno-avx512f, equals "xla" (values and grads)."""
    script = textwrap.dedent(
        """
        import os, jax, jax.numpy as jnp, numpy as np, jrnn
        from jrnn._src.backends import cpu_kernel
        assert cpu_kernel.load(), cpu_kernel.status()
        assert "-mno-avx512f" in cpu_kernel.flags()
        os.environ["JRNN_CPU_THREADS"] = "2"
        for cell in (jrnn.lstm(13), jrnn.gru(19), jrnn.seed_rnn(11, 9)):
            p = cell.init(jax.random.key(0), 6)
            xs = jax.random.normal(jax.random.key(1), (7, 23, 6))
            lengths = jnp.arange(7) * 3
            def loss(p, xs, backend):
                c, ys = jrnn.unroll(cell, p, xs, lengths=lengths, reverse=True, backend=backend)
                return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(a) for a in jax.tree.leaves(c))
            want = jax.value_and_grad(loss, argnums=(0, 1))(p, xs, "xla")
            got = jax.value_and_grad(loss, argnums=(0, 1))(p, xs, "cpu")
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * (1 + abs(w).max()))
        print("AVX2 OK")
        """
    )
    env = dict(os.environ, JRNN_CXXFLAGS="-mno-avx512f", JRNN_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0 and "AVX2 OK" in proc.stdout, proc.stderr[-3000:]


def test_large_buffers_prefaulted_in_parallel_equal_xla():
    """Outputs of 2 MiB and more are faulted in before the loop (``MADV_POPULATE_WRITE`` split
    over the threads): values and gradients (saved gates [64, 48, 256] float32: 3 MiB) equal
    "xla", with and without lengths."""
    cell = jrnn.lstm(64)
    p = cell.init(jax.random.key(0), 5)
    xs = jax.random.normal(jax.random.key(1), (48, 64, 5))
    for lengths in (None, jnp.arange(48) + 17):

        def loss(p, xs, backend, lengths=lengths):
            c, ys = jrnn.unroll(cell, p, xs, lengths=lengths, backend=backend)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(a) for a in jax.tree.leaves(c))

        grad = jax.value_and_grad(loss, argnums=(0, 1))
        want = jax.jit(grad, static_argnums=2)(p, xs, "xla")
        got = jax.jit(grad, static_argnums=2)(p, xs, "cpu")
        _close(got, want, 2e-5)


@pytest.mark.slow
def test_huge_page_advice_changes_no_value():
    """``JRNN_CPU_HUGEPAGES=1`` (read once per process) advises huge pages for buffers of 4 MiB
    and more; values and gradients stay equal to "xla"."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, jrnn
        from jrnn._src.backends import cpu_kernel
        assert cpu_kernel.load(), cpu_kernel.status()
        cell = jrnn.lstm(64)  # saved gates [128, 64, 256] float32: 8 MiB
        p = cell.init(jax.random.key(0), 16)
        xs = jax.random.normal(jax.random.key(1), (64, 128, 16))
        lengths = jnp.arange(64) * 2
        def loss(p, xs, backend):
            c, ys = jrnn.unroll(cell, p, xs, lengths=lengths, backend=backend)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(a) for a in jax.tree.leaves(c))
        want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(p, xs, "xla")
        got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(p, xs, "cpu")
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * (1 + abs(w).max()))
        print("HUGEPAGES OK")
        """
    )
    env = dict(os.environ, JRNN_CPU_HUGEPAGES="1")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "HUGEPAGES OK" in proc.stdout, proc.stderr[-3000:]
