"""The "associative" backend: equal to the sequential scan, masking, resets, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src.cells.linear import min_gru, min_lstm

LINEAR = {"min_gru": min_gru, "min_lstm": min_lstm}


def _setup(name, steps, batch=2, hidden=8, inputs=5, seed=0):
    cell = LINEAR[name](hidden)
    k = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(k[0], inputs)
    params = params._replace(b=0.5 * jax.random.normal(k[1], params.b.shape))
    xs = jax.random.normal(k[2], (batch, steps, inputs))
    h0 = jax.random.normal(k[3], (batch, hidden))
    return cell, params, xs, h0


def _loss_and_grads(cell, backend, **kw):
    def loss(params, xs, h0):
        carry, ys = jrnn.unroll(cell, params, xs, h0, backend=backend, **kw)
        w = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
        return jnp.sum(ys * w) + jnp.sum(carry), (carry, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


@pytest.mark.parametrize("name,reverse", [("min_gru", False), ("min_lstm", True)])
def test_equals_sequential_at_4096(name, reverse):
    """Values and gradients (params, inputs, initial carry), with lengths; one compile each."""
    steps = 4096
    cell, params, xs, h0 = _setup(name, steps)
    lengths = jnp.array([steps, 3001])
    out = {}
    for backend in ("xla", "associative"):
        f = _loss_and_grads(cell, backend, lengths=lengths, reverse=reverse)
        (_, (carry, ys)), grads = f(params, xs, h0)
        out[backend] = (carry, ys, grads)
    (c1, y1, g1), (c2, y2, g2) = out["xla"], out["associative"]
    np.testing.assert_allclose(y2, y1, atol=2e-5)
    np.testing.assert_allclose(c2, c1, atol=2e-5)
    assert float(jnp.abs(y2[1, 3001:]).max()) == 0.0
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1), strict=True):
        scale = float(jnp.abs(b).max())
        np.testing.assert_allclose(a, b, atol=2e-5 * max(scale, 1.0), rtol=1e-4)
    # No gradient from padding.
    assert float(jnp.abs(g2[1][1, 3001:]).max()) == 0.0


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_lengths_and_carries_match_xla(reverse):
    cell, params, xs, h0 = _setup("min_lstm", 9, batch=3)
    lengths = jnp.array([9, 5, 0])
    resets = jnp.zeros((3, 9), bool).at[0, 3].set(True).at[1, 2].set(True).at[2, 1].set(True)
    out = {
        backend: jrnn.unroll(
            cell,
            params,
            xs,
            h0,
            lengths=lengths,
            resets=resets,
            reverse=reverse,
            backend=backend,
            return_carries=True,
        )
        for backend in ("reference", "associative")
    }
    for a, b in zip(out["associative"], out["reference"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["associative"][0][2], h0[2])  # length 0: carry untouched


def test_stacked_bidirectional_layers():
    cell = min_gru(6)
    net = jrnn.rnn(cell, num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (3, 11, 4))
    lengths = jnp.array([11, 7, 2])
    ys1, c1 = net.apply(params, xs, lengths=lengths, backend="xla")
    ys2, c2 = net.apply(params, xs, lengths=lengths, backend="associative")
    np.testing.assert_allclose(ys2, ys1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c2, c1, rtol=1e-5, atol=1e-6)


def test_composes_with_vmap_and_jit():
    cell, params, xs, h0 = _setup("min_gru", 16)
    run = jax.jit(lambda x, h: jrnn.unroll(cell, params, x, h, backend="associative")[1])
    batched = jax.vmap(run)(xs[:, None], h0[:, None])[:, 0]
    np.testing.assert_allclose(batched, run(xs, h0), rtol=1e-6, atol=1e-6)


def test_nonlinear_cell_raises_clear_error():
    cell = jrnn.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(NotImplementedError, match=r"'lstm' is not linear.*'xla'"):
        jrnn.unroll(cell, params, jnp.ones((2, 5, 3)), backend="associative")
    from jrnn._src.backends import associative

    assert associative.supports(jrnn.gru(3), tokens=True) is not None
    assert associative.supports(min_lstm(3), lengths=True, reverse=True, resets=True) is None
    with pytest.raises(NotImplementedError, match="'elman'"):
        associative.run(
            jrnn.elman(3), None, jnp.ones((2, 1, 3)), jnp.zeros((1, 3)), mask=None,
            resets=None, reverse=False, unroll=1, return_carries=False,
        )  # fmt: skip
