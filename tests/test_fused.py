"""The "fused" backend (custom-VJP scan) equals the "reference" backend: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src.backends import fused

B, T, I, H = 3, 5, 5, 8

CELLS = {
    "lstm": lambda: jrnn.lstm(H),
    "lstm_peep_ln": lambda: jrnn.lstm(H, peepholes=True, layer_norm=True),
    "lstm_proj": lambda: jrnn.lstm(H, proj_size=4),
    "gru": lambda: jrnn.gru(H),
    "gru_cho": lambda: jrnn.gru(H, reset_after=False),
    "elman": lambda: jrnn.elman(H),
    "seed_rnn": lambda: jrnn.seed_rnn(H, 6),
}

# (tokens, lengths, reverse, resets, return_carries)
CONFIGS = (
    (False, False, False, False, False),
    (True, True, False, False, True),
    (False, True, True, False, False),
    (True, True, True, True, False),
    (False, False, False, True, True),
)


def _inputs(cell, key):
    k_p, k_x, k_t, k_c = jax.random.split(key, 4)
    params = cell.init(k_p, I)
    # Perturb every parameter (layer-norm scales of one, zero peepholes would hide bugs).
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k_p, len(leaves))
    leaves = [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(treedef, leaves)
    xs = jax.random.normal(k_x, (B, T, I))
    tokens = jax.random.randint(k_t, (B, T), 0, I)
    carry = jax.tree.map(lambda a: 0.5 * jax.random.normal(k_c, a.shape), cell.initial_carry(B))
    lengths = jnp.array([T, 2, 0])
    resets = jnp.zeros((B, T), bool).at[0, 3].set(True).at[1, 1].set(True)
    return params, xs, carry, tokens, lengths, resets


def _loss(cell, backend, config, params, xs, carry, tokens, lengths, resets):
    use_tokens, use_lengths, reverse, use_resets, ret = config
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
    total = jnp.sum(
        jnp.sin(out[1]) * jnp.arange(out[1].size, dtype=jnp.float32).reshape(out[1].shape) / 50.0
    )
    for a in jax.tree.leaves(out[0]):
        total = total + jnp.sum(jnp.cos(a))
    if ret:
        for a in jax.tree.leaves(out[2]):
            total = total + 0.3 * jnp.sum(jnp.square(a))
    return total, out


def _configs(name):
    """All configs for the plain LSTM; two per other cell (together they cover every config)."""
    if name == "lstm":
        return CONFIGS
    i = sorted(CELLS).index(name)
    return CONFIGS[i % len(CONFIGS)], CONFIGS[(i + 2) % len(CONFIGS)]


def _all(cell, backend, configs):
    """Values, outputs and gradients (params, xs, carry) of the configs, in one jit."""

    @jax.jit
    def f(params, xs, carry, tokens, lengths, resets):
        res = []
        for config in configs:
            grad_fn = jax.value_and_grad(
                lambda p, x, c, config=config: _loss(
                    cell, backend, config, p, x, c, tokens, lengths, resets
                ),
                argnums=(0, 1, 2),
                has_aux=True,
            )
            res.append(grad_fn(params, xs, carry))
        return res

    return f


@pytest.mark.parametrize("name", sorted(CELLS))
def test_fused_equals_reference(name, key):
    cell = CELLS[name]()
    args = _inputs(cell, key)
    configs = _configs(name)
    want = _all(cell, "reference", configs)(*args)
    got = _all(cell, "fused", configs)(*args)
    for config, w, g in zip(configs, want, got, strict=True):
        w_leaves, g_leaves = jax.tree.leaves(w), jax.tree.leaves(g)
        assert len(w_leaves) == len(g_leaves)
        for a, b in zip(w_leaves, g_leaves, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-5, err_msg=f"{name} {config}")


def test_padding_gets_no_gradient(key):
    cell = jrnn.lstm(H)
    params, xs, carry, _, lengths, _ = _inputs(cell, key)

    def loss(xs):
        _, ys = jrnn.unroll(cell, params, xs, carry, lengths=lengths, backend="fused")
        return jnp.sum(ys)

    g = jax.grad(loss)(xs)
    assert float(jnp.abs(g[1, 2:]).max()) == 0.0 and float(jnp.abs(g[2]).max()) == 0.0
    assert float(jnp.abs(g[0]).max()) > 0.0


def test_uses_custom_vjp(key):
    cell = jrnn.gru(H)
    params, xs, *_ = _inputs(cell, key)
    jaxpr = jax.make_jaxpr(lambda p: jnp.sum(jrnn.unroll(cell, p, xs, backend="fused")[1]))(params)
    assert "custom_vjp_call" in str(jaxpr)


def test_vmap_matches_per_example(key):
    cell = jrnn.lstm(H)
    keys = jax.random.split(key, 2)
    params = jax.vmap(lambda k: cell.init(k, I))(keys)
    xs = jax.random.normal(key, (2, B, T, I))
    lengths = jnp.array([[T, 3, 1], [2, T, 0]])

    def loss(p, x, n, backend):
        carry, ys = jrnn.unroll(cell, p, x, lengths=n, reverse=True, backend=backend)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry[1])

    grad = jax.value_and_grad(loss, argnums=(0, 1))
    got = jax.jit(jax.vmap(lambda p, x, n: grad(p, x, n, "fused")))(params, xs, lengths)
    for i in range(2):
        p_i = jax.tree.map(lambda a, i=i: a[i], params)
        want = grad(p_i, xs[i], lengths[i], "reference")
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            np.testing.assert_allclose(b[i], a, rtol=1e-5, atol=2e-5)


def test_bidirectional_stack_equals_xla(key):
    net = jrnn.rnn(jrnn.lstm(H), num_layers=3, bidirectional=True)
    params = net.init(key, I)
    tokens = jax.random.randint(key, (B, T), 0, I)
    lengths = jnp.array([T, 4, 1])

    def loss(p, backend):
        ys, carries = net.apply(p, tokens, lengths=lengths, backend=backend)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carries[1]), (ys, carries)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    want, got = grad(params, "xla"), grad(params, "fused")
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-5)


def test_bfloat16_compute(key):
    cell = jrnn.lstm(H, dtype=jnp.bfloat16)
    params, xs, carry, _, lengths, _ = _inputs(cell, key)

    def loss(p, x, c, backend):
        c_out, ys = jrnn.unroll(cell, p, x, c, lengths=lengths, backend=backend)
        assert ys.dtype == jnp.float32 and c_out[1].dtype == jnp.float32
        return jnp.sum(jnp.sin(ys)) + jnp.sum(c_out[1])

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    want, got = grad(params, xs, carry, "reference"), grad(params, xs, carry, "fused")
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-2)


def test_declines_linear_cells():
    linear = pytest.importorskip("jrnn._src.cells.linear")
    assert "linear in its carry" in fused.supports(linear.min_gru(H))


def test_declines_regularised_cells(key):
    cell = jrnn.lstm(H)
    net = jrnn.rnn(cell, recurrent_dropout=0.3)
    params = net.init(key, I)
    tokens = jnp.zeros((B, T), jnp.int32)
    assert fused.supports(cell) is None
    with pytest.raises(NotImplementedError, match="overrides recurrence"):
        net.apply(params, tokens, key=key, backend="fused")
    # "auto" falls back to a backend that supports it.
    ys, _ = net.apply(params, tokens, key=key, backend="auto")
    assert ys.shape == (B, T, H)
