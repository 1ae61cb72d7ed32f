"""``jrnn.unroll``: scan == Python loop, exact masking semantics, transforms, bad input."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

B, T, I, H = 3, 7, 5, 6
LENGTHS = np.array([7, 4, 0], np.int32)

CELLS = {
    "lstm": lambda: jrnn.lstm(H),
    "lstm_opts": lambda: jrnn.lstm(H, peepholes=True, layer_norm=True, proj_size=4),
    "gru": lambda: jrnn.gru(H),
    "gru_cho": lambda: jrnn.gru(H, reset_after=False),
    "elman": lambda: jrnn.elman(H),
    "seed": lambda: jrnn.seed_rnn(H, output_size=4),
}


def setup(name, tokens=False, seed=0):
    cell = CELLS[name]()
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k1, I)
    if tokens:
        xs = jax.random.randint(k2, (B, T), 0, I)
    else:
        xs = jax.random.normal(k2, (B, T, I))
    leaves, treedef = jax.tree.flatten(cell.initial_carry(B))
    carry = jax.tree.unflatten(
        treedef,
        [
            0.5 * jax.random.normal(k, a.shape)
            for k, a in zip(jax.random.split(k3, len(leaves)), leaves, strict=True)
        ],
    )
    return cell, params, xs, carry


def assert_trees_close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("tokens", [False, True], ids=["floats", "tokens"])
def test_scan_equals_python_loop(name, tokens):
    """xla (lax.scan) == reference (Python loop of cell.step, explicit one-hot for tokens)."""
    cell, params, xs, carry = setup(name, tokens)
    for reverse in (False, True):
        for lengths in (None, LENGTHS):
            expected = jrnn.unroll(
                cell, params, xs, carry, lengths=lengths, reverse=reverse, backend="reference"
            )
            for unroll in (1, 3):
                got = jrnn.unroll(
                    cell,
                    params,
                    xs,
                    carry,
                    lengths=lengths,
                    reverse=reverse,
                    unroll=unroll,
                    backend="xla",
                )
                assert_trees_close(got, expected)


def manual_loop(cell, params, xs, carry, length, reverse):
    """One sequence, no masking: the steps of its valid prefix in the right order."""
    ys = np.zeros((T, cell.output_size), np.float32)
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        carry, y = cell.step(params, carry, xs[t])
        ys[t] = np.asarray(y)
    return carry, ys


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_padded_batch_equals_each_sequence_alone(reverse):
    cell, params, xs, carry = setup("lstm")
    final, ys = jrnn.unroll(cell, params, xs, carry, lengths=LENGTHS, reverse=reverse)
    for b in range(B):
        c_b = jax.tree.map(lambda a, b=b: a[b], carry)
        ref_carry, ref_ys = manual_loop(cell, params, xs[b], c_b, int(LENGTHS[b]), reverse)
        np.testing.assert_allclose(ys[b], ref_ys, atol=1e-5)
        assert_trees_close(jax.tree.map(lambda a, b=b: a[b], final), ref_carry)


@pytest.mark.parametrize("name", ["lstm", "gru", "seed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_padding_is_inert(name, reverse):
    cell, params, xs, carry = setup(name)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    noisy = jnp.where(mask[..., None], xs, 100.0 * jax.random.normal(jax.random.key(9), xs.shape))
    c1, y1 = jrnn.unroll(cell, params, xs, carry, lengths=LENGTHS, reverse=reverse)
    c2, y2 = jrnn.unroll(cell, params, noisy, carry, lengths=LENGTHS, reverse=reverse)
    np.testing.assert_array_equal(y1, y2)
    assert_trees_close(c1, c2, 0.0)
    # Padded outputs are exactly zero; a zero-length sequence keeps its initial carry.
    assert np.all(np.asarray(y1)[~mask] == 0.0)
    assert_trees_close(jax.tree.map(lambda a: a[2], c1), jax.tree.map(lambda a: a[2], carry), 0.0)

    def loss(x):
        c, y = jrnn.unroll(cell, params, x, carry, lengths=LENGTHS, reverse=reverse)
        return jnp.sum(y**2) + sum(jnp.sum(a) for a in jax.tree.leaves(c))

    g = jax.grad(loss)(noisy)
    assert np.all(np.asarray(g)[~mask] == 0.0)
    assert np.abs(np.asarray(g)[mask]).sum() > 0


def test_resets_restart_from_initial_carry():
    cell, params, xs, carry = setup("gru")
    resets = np.zeros((B, T), bool)
    resets[:, 3] = True
    _, ys = jrnn.unroll(cell, params, xs, carry, resets=resets)
    _, tail = jrnn.unroll(cell, params, xs[:, 3:], carry)
    np.testing.assert_allclose(ys[:, 3:], tail, atol=1e-6)
    # Reverse: the segment [0, 3) is processed on its own, from its last element.
    _, ys_r = jrnn.unroll(cell, params, xs, carry, resets=resets, reverse=True)
    _, head_r = jrnn.unroll(cell, params, xs[:, :3], carry, reverse=True)
    np.testing.assert_allclose(ys_r[:, :3], head_r, atol=1e-6)
    ref = jrnn.unroll(cell, params, xs, carry, resets=resets, reverse=True, backend="reference")
    np.testing.assert_allclose(ys_r, ref[1], atol=1e-6)


def test_return_carries_and_time_major():
    cell, params, xs, carry = setup("lstm")
    final, ys, carries = jrnn.unroll(cell, params, xs, carry, lengths=LENGTHS, return_carries=True)
    h_all, c_all = carries
    assert h_all.shape == (B, T, H)
    # The carry at the last valid step is the final carry; frozen afterwards.
    np.testing.assert_allclose(h_all[1, 3], final[0][1], atol=0)
    np.testing.assert_allclose(h_all[1, -1], final[0][1], atol=0)
    np.testing.assert_allclose(h_all[0], ys[0], atol=0)
    tm = jrnn.unroll(cell, params, jnp.swapaxes(xs, 0, 1), carry, lengths=LENGTHS, time_major=True)
    np.testing.assert_allclose(jnp.swapaxes(tm[1], 0, 1), ys, atol=1e-6)


def test_multiple_batch_dims():
    cell, params, xs, _ = setup("lstm")
    xs4 = jnp.stack([xs, 2 * xs])  # [2, B, T, I]
    c, ys = jrnn.unroll(cell, params, xs4, lengths=np.stack([LENGTHS, LENGTHS]))
    _, ys1 = jrnn.unroll(cell, params, 2 * xs, lengths=LENGTHS)
    np.testing.assert_allclose(ys[1], ys1, atol=1e-6)
    assert c[0].shape == (2, B, H)


def test_jit_vmap_grad_compose():
    cell, params, xs, carry = setup("lstm")

    def loss(p, x):
        _, y = jrnn.unroll(cell, p, x, lengths=np.int32(5))
        return jnp.sum(y**2)

    per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, xs)
    for b in range(B):
        g_b = jax.grad(loss)(params, xs[b])
        assert_trees_close(jax.tree.map(lambda a, b=b: a[b], per_example), g_b, 1e-5)


@pytest.mark.parametrize("remat", [3, "sqrt"])
def test_remat_policies_equal_plain(remat):
    cell, params, xs, carry = setup("lstm")

    def loss(p, r):
        _, y = jrnn.unroll(cell, p, xs, carry, lengths=LENGTHS, reverse=True, remat=r)
        return jnp.sum(jnp.sin(y))

    assert_trees_close(loss(params, remat), loss(params, None))
    assert_trees_close(jax.grad(loss)(params, remat), jax.grad(loss)(params, None))


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
    cell, params, xs, carry = setup("lstm")
    cases = [
        (dict(xs=xs[0, 0]), ValueError, "xs"),  # rank 1 floats
        (dict(xs=xs[..., :3]), ValueError, "input_size 3"),
        (dict(xs=xs[:, :, 0]), ValueError, "integer dtype"),  # float "tokens"
        (dict(xs=xs > 0), TypeError, "xs"),
        (dict(lengths=LENGTHS.astype(np.float32)), TypeError, "lengths"),
        (dict(lengths=LENGTHS[:2]), ValueError, "lengths"),
        (dict(lengths=np.array([8, 1, 1])), ValueError, r"lengths must lie in \[0, 7\]"),
        (dict(lengths=np.array([-1, 1, 1])), ValueError, "lengths"),
        (dict(carry=carry[0]), ValueError, "carry"),
        (dict(carry=(carry[0][:2], carry[1])), ValueError, "carry"),
        (dict(backend="cudnn"), ValueError, "backend"),
        (dict(unroll=0), ValueError, "unroll"),
        (dict(resets=np.zeros((B, T), np.int32)), TypeError, "resets"),
        (dict(remat="every"), ValueError, "remat"),
    ]
    for kwargs, err, match in cases:
        args = dict(xs=xs, carry=carry)
        args.update(kwargs)
        x = args.pop("xs")
        c = args.pop("carry")
        with pytest.raises(err, match=match):
            jrnn.unroll(cell, params, x, c, **args)
    with pytest.raises(TypeError, match="jrnn.Cell"):
        jrnn.unroll(lambda p, c, x: (c, x), params, xs)


def test_errors_raise_while_tracing_under_jit():
    cell, params, xs, _ = setup("gru")
    f = jax.jit(lambda x: jrnn.unroll(cell, params, x)[1])
    with pytest.raises(ValueError, match="input_size"):
        f(xs[..., :2])


# ----------------------------------------------------------------------------- float64 gradients

GRADCHECK = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.test_util import check_grads
    import jrnn
    cells = [jrnn.lstm(4, peepholes=True, layer_norm=True, proj_size=3, dtype=jnp.float64,
                       param_dtype=jnp.float64),
             jrnn.gru(4, dtype=jnp.float64, param_dtype=jnp.float64),
             jrnn.gru(4, reset_after=False, dtype=jnp.float64, param_dtype=jnp.float64),
             jrnn.elman(4, dtype=jnp.float64, param_dtype=jnp.float64),
             jrnn.seed_rnn(4, 3, dtype=jnp.float64, param_dtype=jnp.float64)]
    for cell in cells:
        p = cell.init(jax.random.key(0), 3)
        noise = lambda a: 0.3 * jax.random.normal(jax.random.key(1), a.shape, a.dtype)
        p = jax.tree.map(lambda a: a + noise(a), p)
        xs = jax.random.normal(jax.random.key(2), (2, 5, 3), jnp.float64)
        c0 = jax.tree.map(lambda a: 0.3 * jnp.ones(a.shape, jnp.float64), cell.initial_carry(2))
        lengths = np.array([5, 3], np.int32)
        def f(p, xs, c0):
            c, y = jrnn.unroll(cell, p, xs, c0, lengths=lengths, reverse=True)
            return jnp.sum(jnp.sin(y)) + sum(jnp.sum(a ** 2) for a in jax.tree.leaves(c))
        check_grads(f, (p, xs, c0), order=1, modes=("rev",), atol=1e-6, rtol=1e-6, eps=1e-6)
        print("ok", cell.name)
    """
)


def test_float64_finite_difference_gradients():
    """Every cell's unroll gradient against finite differences, in float64 (own process)."""
    out = subprocess.run(
        [sys.executable, "-c", GRADCHECK], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok") == 5


def test_time_checkpointing_bounds_compiled_memory():
    """At T = 4096 the chunked policies need far less temporary memory than the plain scan."""
    cell = jrnn.lstm(32)
    params = cell.init(jax.random.key(0), 16)
    tokens = jax.ShapeDtypeStruct((4, 4096), jnp.int32)

    def temp(remat):
        def loss(p, x):
            return jnp.sum(jrnn.unroll(cell, p, x, remat=remat)[1] ** 2)

        compiled = jax.jit(jax.grad(loss)).lower(params, tokens).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain, sqrt, k = temp(None), temp("sqrt"), temp(256)
    assert sqrt < plain / 3 and k < plain / 3, (plain, sqrt, k)
