"""The two-bias option of jrnn.lstm and jrnn.elman (PyTorch's bias_ih and bias_hh).

Backend equality with the option runs in tests/test_backends.py (registry entries
``lstm_two_biases`` and ``elman_two_biases``); state_dict conversion in tests/test_interop.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_step(kind, p, carry, x):
    """PyTorch's equations in numpy float64, with both biases (bias_ih = b, bias_hh = b_hh)."""
    p = {k: np.asarray(v, np.float64) for k, v in p._asdict().items() if v is not None}
    if kind == "lstm":
        h, c = carry
        z = x @ p["w_ih"] + p["b"] + h @ p["w_hh"] + p["b_hh"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(c)
        if "w_hr" in p:
            h = h @ p["w_hr"]
        return (h, c), h
    act = np.tanh if kind == "elman_tanh" else (lambda v: np.maximum(v, 0.0))
    h = act(x @ p["w_ih"] + p["b"] + carry @ p["w_hh"] + p["b_hh"])
    return h, h


def _cell(kind, **kw):
    if kind == "lstm":
        return jrnn.lstm(6, two_biases=True, **kw)
    if kind == "lstm_proj":
        return jrnn.lstm(6, proj_size=4, two_biases=True, **kw)
    return jrnn.elman(6, activation=kind[6:], two_biases=True, **kw)


def _random_params(cell, key, inputs=5, scale=0.5):
    params = cell.init(key, inputs)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    noisy = [v + scale * jax.random.normal(keys[n], v.shape, v.dtype) for n, v in enumerate(leaves)]
    return jax.tree.unflatten(treedef, noisy)


@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "elman_tanh", "elman_relu"])
def test_unroll_matches_numpy_float64_for_floats_and_tokens(kind):
    with jax.enable_x64(True):
        cell = _cell(kind, **F64)
        p = _random_params(cell, jax.random.key(0))
        assert p.b_hh.shape == p.b.shape and p.b_hh.dtype == jnp.float64
        rng = np.random.default_rng(0)
        xs = rng.normal(size=(3, 4, 5))
        tokens = rng.integers(0, 5, (3, 4))
        _, ys = jax.jit(lambda p, x: jrnn.unroll(cell, p, x, backend="xla"))(p, xs)
        _, ys_tok = jax.jit(lambda p, x: jrnn.unroll(cell, p, x, backend="xla"))(p, tokens)
        for inputs, got in ((xs, ys), (np.eye(5)[tokens], ys_tok)):
            carry = jax.tree.map(np.asarray, cell.initial_carry(3))
            for t in range(4):
                carry, y = np_step(kind.replace("_proj", ""), p, carry, inputs[:, t])
                np.testing.assert_allclose(got[:, t], y, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["lstm", "elman_tanh"])
def test_both_biases_get_the_gradient_of_their_sum(kind):
    """d/db = d/db_hh = d/db of the one-bias cell with b + b_hh, and finite differences agree."""
    with jax.enable_x64(True):
        two = _cell(kind, **F64)
        one = jrnn.lstm(6, **F64) if kind == "lstm" else jrnn.elman(6, **F64)
        p = _random_params(two, jax.random.key(1))
        xs = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 5)))
        lengths = jnp.array([5, 3])
        w = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 6)))

        def loss(cell, params):
            _, ys = jrnn.unroll(cell, params, xs, lengths=lengths, backend="xla")
            return jnp.sum(ys * w)

        g = jax.jit(jax.grad(lambda q: loss(two, q)))(p)
        np.testing.assert_array_equal(g.b, g.b_hh)
        p_one = p._replace(b=p.b + p.b_hh, b_hh=None)
        g_one = jax.jit(jax.grad(lambda q: loss(one, q)))(p_one)
        np.testing.assert_allclose(g.b, g_one.b, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(g.w_hh, g_one.w_hh, rtol=1e-12, atol=1e-13)
        eps, j = 1e-6, 3
        bump = jnp.zeros_like(p.b_hh).at[j].set(eps)
        f = jax.jit(lambda q: loss(two, q))
        fd = f(p._replace(b_hh=p.b_hh + bump)) - f(p._replace(b_hh=p.b_hh - bump))
        np.testing.assert_allclose(fd / (2 * eps), g.b_hh[j], rtol=1e-6)


def test_adam_moves_the_summed_bias_twice_as_far():
    """Why the option exists: Adam normalises each tensor, so two biases move the sum 2x."""
    two, one = jrnn.lstm(4, two_biases=True), jrnn.lstm(4)
    p = _random_params(two, jax.random.key(2), inputs=3, scale=0.1)
    p_one = p._replace(b=p.b + p.b_hh, b_hh=None)
    xs = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 3)), jnp.float32)

    def step(cell, params):
        g = jax.grad(lambda q: jnp.sum(jrnn.unroll(cell, q, xs, backend="xla")[1]))(params)
        tx = optax.adam(1e-3)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32
            updates, _ = tx.update(g, tx.init(params), params)
        return optax.apply_updates(params, updates)

    moved_two = jax.jit(lambda q: step(two, q))(p)
    moved_one = jax.jit(lambda q: step(one, q))(p_one)
    d_two = (moved_two.b + moved_two.b_hh) - (p.b + p.b_hh)
    d_one = moved_one.b - p_one.b
    np.testing.assert_allclose(d_two, 2 * d_one, rtol=1e-3, atol=1e-7)
    assert float(jnp.abs(d_one).min()) > 5e-4  # a full Adam step (1e-3 each) on every entry


@pytest.mark.parametrize("options", [dict(layer_norm=True), dict(peepholes=True, proj_size=3)])
def test_other_lstm_options_compute_the_one_bias_function(options):
    two = jrnn.lstm(6, two_biases=True, **options)
    one = jrnn.lstm(6, **options)
    p = _random_params(two, jax.random.key(3))
    p_one = p._replace(b=p.b + p.b_hh, b_hh=None)
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 5)), jnp.float32)
    run = jax.jit(lambda c, q: jrnn.unroll(c, q, xs, backend="xla"), static_argnums=0)
    carry, ys = run(two, p)
    carry_one, ys_one = run(one, p_one)
    np.testing.assert_allclose(ys, ys_one, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(carry[1], carry_one[1], rtol=1e-6, atol=1e-6)


def test_default_layout_unchanged_and_errors():
    p = jrnn.lstm(4).init(jax.random.key(0), 3)
    assert p.b.shape == (16,) and p.b_hh is None
    assert jrnn.elman(4).init(jax.random.key(0), 3).b_hh is None
    p_two = jrnn.lstm(4, two_biases=True).init(jax.random.key(0), 3)
    np.testing.assert_array_equal(p_two.b, p.b)  # the forget bias goes to b
    assert float(jnp.abs(p_two.b_hh).max()) == 0.0
    assert jrnn.lstm(4, two_biases=True).option("two_biases") is True
    with pytest.raises(TypeError, match="two_biases must be a bool, got 'yes'"):
        jrnn.lstm(4, two_biases="yes")
    with pytest.raises(TypeError, match="two_biases must be a bool"):
        jrnn.elman(4, two_biases="no")
    x = jnp.ones((2, 3))
    # Params checked against what the cell's init makes: the error names both structures.
    with pytest.raises(ValueError, match=r"lstm\(4, two_biases=True\) expects .*b_hh \[16\]"):
        jrnn.lstm(4, two_biases=True).step(p, jrnn.lstm(4).initial_carry(2), x)
    with pytest.raises(ValueError, match=r"ElmanParams\(.*b_hh \[4\]\) but the cell elman\(4\)"):
        e = jrnn.elman(4, two_biases=True).init(jax.random.key(0), 3)
        jrnn.elman(4).step(e, jrnn.elman(4).initial_carry(2), x)
