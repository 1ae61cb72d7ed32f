"""minGRU / minLSTM: steps against numpy float64 versions of the paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

import jrnn
from jrnn._src.backends import associative, xla
from jrnn._src.cells.linear import MinLSTMParams, min_gru, min_lstm


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _g(q, positive):
    if not positive:
        return q
    return np.where(q >= 0, q + 0.5, _sigmoid(q))


def np_min_gru_step(p, h, x, positive):
    """Feng et al. 2024, minGRU, float64."""
    H = h.shape[-1]
    w, b = np.asarray(p.w_ih, np.float64), np.asarray(p.b, np.float64)
    z = _sigmoid(x @ w[:, :H] + b[:H])
    h_tilde = _g(x @ w[:, H:] + b[H:], positive)
    return (1.0 - z) * h + z * h_tilde


def np_min_lstm_step(p, h, x, positive):
    """Feng et al. 2024, minLSTM, float64."""
    H = h.shape[-1]
    w, b = np.asarray(p.w_ih, np.float64), np.asarray(p.b, np.float64)
    f = _sigmoid(x @ w[:, :H] + b[:H])
    i = _sigmoid(x @ w[:, H : 2 * H] + b[H : 2 * H])
    h_tilde = _g(x @ w[:, 2 * H :] + b[2 * H :], positive)
    return f / (f + i) * h + i / (f + i) * h_tilde


NP_STEPS = {"min_gru": np_min_gru_step, "min_lstm": np_min_lstm_step}
FACTORIES = {"min_gru": min_gru, "min_lstm": min_lstm}


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_step_matches_numpy_float64(name, positive):
    cell = FACTORIES[name](6, positive=positive)
    params = cell.init(jax.random.key(1), 4)
    params = params._replace(b=jax.random.normal(jax.random.key(2), params.b.shape))
    xs = 2.0 * jax.random.normal(jax.random.key(3), (5, 3, 4))
    h = cell.initial_carry(3) + 0.3
    h_np = np.asarray(h, np.float64)
    step = jax.jit(cell.step)
    for t in range(xs.shape[0]):
        h, y = step(params, h, xs[t])
        h_np = NP_STEPS[name](params, h_np, np.asarray(xs[t], np.float64), positive)
        np.testing.assert_allclose(np.asarray(h), h_np, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(h))


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_linear_field_reproduces_step(name):
    cell = FACTORIES[name](5)
    params = cell.init(jax.random.key(0), 3)
    x = jax.random.normal(jax.random.key(1), (4, 3))
    h = jax.random.normal(jax.random.key(2), (4, 5))
    log_a, b = cell.linear(params, cell.input_projection(params, x))
    new, _ = cell.step(params, h, x)
    np.testing.assert_allclose(new, jnp.exp(log_a) * h + b, rtol=1e-6, atol=1e-7)
    assert float(log_a.max()) <= 0.0


def test_extreme_preactivations_are_stable():
    """Gates saturated in float32 still give the float64 coefficients, with finite grads."""
    H = 3
    k = np.array([-120.0, 0.0, 90.0], np.float32)
    # minGRU: log(1 - sigmoid(k)) = -softplus(k), exact even where 1 - sigmoid(k) rounds to 0.
    log_a, _ = min_gru(H).linear(None, jnp.concatenate([jnp.asarray(k), jnp.ones(H)]))
    np.testing.assert_allclose(
        log_a, -np.logaddexp(0.0, k.astype(np.float64)), rtol=1e-6, atol=1e-30
    )
    # minLSTM: f and i both underflow (sigmoid(-120) ~ 1e-52): f' = f / (f + i) still exact.
    k_f = np.array([-120.0, -120.0, 30.0], np.float32)
    k_i = np.array([-120.0, -121.0, -30.0], np.float32)
    xp = jnp.asarray(np.concatenate([k_f, k_i, np.ones(H, np.float32)]))
    log_a, b = min_lstm(H).linear(None, xp)
    f, i = (np.float64(1.0) / (1.0 + np.exp(-v.astype(np.float64))) for v in (k_f, k_i))
    np.testing.assert_allclose(np.exp(np.asarray(log_a, np.float64)), f / (f + i), rtol=1e-6)
    np.testing.assert_allclose(b, i / (f + i) * 1.5, rtol=1e-6)
    grads = jax.grad(lambda v: sum(jnp.sum(u) for u in min_lstm(H).linear(None, v)))(xp)
    assert np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_tokens_equal_one_hot(name):
    cell = FACTORIES[name](4)
    params = cell.init(jax.random.key(0), 7)
    tokens = jnp.array([[0, 6, 3], [2, 2, 5]])
    _, ys_tok = jrnn.unroll(cell, params, tokens, backend="associative")
    _, ys_hot = jrnn.unroll(cell, params, jax.nn.one_hot(tokens, 7), backend="xla")
    np.testing.assert_allclose(ys_tok, ys_hot, rtol=1e-6, atol=1e-6)


def test_params_layout_and_options():
    p = min_lstm(5, forget_bias=2.0).init(jax.random.key(0), 3)
    assert isinstance(p, MinLSTMParams)
    assert p.w_ih.shape == (3, 15) and p.b.shape == (15,)
    np.testing.assert_array_equal(p.b, np.r_[np.full(5, 2.0), np.zeros(10)])
    cell = min_gru(4, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    p = cell.init(jax.random.key(0), 3)
    assert p.w_ih.dtype == jnp.bfloat16
    carry, y = cell.step(p, cell.initial_carry(2), jnp.ones((2, 3)))
    assert carry.dtype == jnp.float32 and y.dtype == jnp.float32
    assert cell.option("positive") is True and min_lstm(2).option("forget_bias") == 0.0
    with pytest.raises(ValueError, match="hidden_size"):
        min_gru(0)
    with pytest.raises(TypeError, match="dtype"):
        min_lstm(3, dtype=jnp.int32)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_finite_difference_grads_float64(name):
    """Reverse-mode grads of both time loops against float64 finite differences (scoped x64)."""
    cell = FACTORIES[name](3)
    mask = jnp.array([[True, True], [True, True], [True, False], [True, False]])
    resets = jnp.array([[False, False], [False, False], [True, False], [False, False]])
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        xp = jnp.asarray(rng.normal(size=(4, 2, (2 if name == "min_gru" else 3) * 3)))
        h0 = jnp.asarray(rng.normal(size=(2, 3)))
        w = jnp.asarray(rng.normal(size=(4, 2, 3)))
        for backend in (xla, associative):
            for reverse in (False, True):

                def loss(xp, h0, backend=backend, reverse=reverse):
                    carry, ys, _ = backend.run(
                        cell,
                        None,
                        xp,
                        h0,
                        mask=mask,
                        resets=resets,
                        reverse=reverse,
                        unroll=1,
                        return_carries=False,
                    )
                    return jnp.sum(ys * w) + jnp.sum(carry * carry)

                loss = jax.jit(loss)
                assert loss(xp, h0).dtype == jnp.float64
                test_util.check_grads(loss, (xp, h0), order=1, modes=("rev",), eps=1e-6)
