"""jrnn trains exactly like PyTorch: jrnn.bench.parity at a reduced size.

The optimiser and clipping formulas are checked against numpy transcriptions of
``torch.optim.Adam`` and ``torch.nn.utils.clip_grad_norm_`` without torch (fast tier); the
training runs against torch itself (``peers``, torch in its own process).
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn.bench import parity

HAS_TORCH = importlib.util.find_spec("torch") is not None


def np_torch_adam(params, grads_per_step, lr, b1, b2, eps):
    """torch.optim.Adam's single-tensor update, transcribed in numpy float64."""
    p = params.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads_per_step, start=1):
        m = m + (g - m) * (1 - b1)  # exp_avg.lerp_(grad, 1 - beta1)
        v = v * b2 + (1 - b2) * g * g
        step_size = lr / (1 - b1**t)
        denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
        p = p - step_size * m / denom
    return p


def _updates(tx, p0, grads, dtype):
    """The sum of ``tx``'s updates, accumulated in float64 (no rounding of ``p + u``)."""
    p = jnp.asarray(p0, dtype)
    state, total = tx.init(p), np.zeros_like(p0)
    for g in grads:
        u, state = tx.update(jnp.asarray(g, dtype), state, p)
        total = total + np.asarray(u, np.float64)
    return total


def test_adam_like_torch_is_torch_adam():
    import optax

    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(7,))
    # Gradients of very different scales, tiny ones included (where eps's placement matters).
    grads = [rng.normal(size=(7,)) * 10.0 ** rng.integers(-9, 2, (7,)) for _ in range(6)]
    want = np_torch_adam(p0, grads, 3e-3, 0.9, 0.999, 1e-8) - p0
    mine = parity.adam_like_torch(3e-3, 0.9, 0.999, 1e-8)
    plain = optax.adam(3e-3, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0)
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        np.testing.assert_allclose(_updates(mine, p0, grads, jnp.float64), want, rtol=1e-13)
        # optax.adam with eps_root=0 is the same formula: equal in float64...
        np.testing.assert_allclose(_updates(plain, p0, grads, jnp.float64), want, rtol=1e-13)
        # ...while eps inside the square root (eps_root) is a different optimiser.
        root = optax.adam(3e-3, eps=0.0, eps_root=1e-8)
        assert np.max(np.abs(_updates(root, p0, grads, jnp.float64) - want) / np.abs(want)) > 1e-3
    with jax.numpy_dtype_promotion("standard"):
        # In float32 optax's 1 - b2**t cancels; adam_like_torch's is accurate, as torch's.
        err = lambda tx: np.max(np.abs(_updates(tx, p0, grads, jnp.float32) - want) / np.abs(want))  # noqa: E731
        assert err(mine) < 1e-6
        assert err(plain) > 2e-6


def test_clip_like_torch_includes_the_1e_6():
    g = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}  # global norm 13
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        tx = parity.clip_by_global_norm_like_torch(1.0)
        out, _ = tx.update(jax.tree.map(jnp.asarray, g), tx.init(None))
        np.testing.assert_allclose(out["a"], g["a"] / (13.0 + 1e-6), rtol=1e-15)
        np.testing.assert_allclose(out["b"], g["b"] / (13.0 + 1e-6), rtol=1e-15)
        # Just below the limit torch still scales by max_norm / (norm + 1e-6) when that is < 1.
        tx = parity.clip_by_global_norm_like_torch(13.0 + 5e-7)
        out, _ = tx.update(jax.tree.map(jnp.asarray, g), tx.init(None))
        np.testing.assert_allclose(out["a"], g["a"] * (13.0 + 5e-7) / (13.0 + 1e-6), rtol=1e-15)
        tx = parity.clip_by_global_norm_like_torch(20.0)
        out, _ = tx.update(jax.tree.map(jnp.asarray, g), tx.init(None))
        np.testing.assert_array_equal(out["b"], g["b"])


def test_batches_and_config_checks():
    cfg = parity.ParityConfig(task="clf", steps=3, batch=5, seq=12)
    data = parity.make_batches(cfg)
    assert data["tokens"].shape == (3, 5, 12) and data["labels"].max() < cfg.classes
    assert data["lengths"].min() >= 3 and data["lengths"].max() <= 12
    pad = np.arange(12)[None, None, :] >= data["lengths"][..., None]
    assert np.all(data["tokens"][pad] == 0) and np.all(data["tokens"][~pad] > 0)
    lm = parity.make_batches(parity.ParityConfig(task="lm", steps=2, batch=3, seq=8))
    assert lm["tokens"].shape == (2, 3, 9) and lm["tokens"].max() < 128
    again = parity.make_batches(parity.ParityConfig(task="lm", steps=2, batch=3, seq=8))
    np.testing.assert_array_equal(again["tokens"], lm["tokens"])
    with pytest.raises(ValueError, match="task must be 'lm' or 'clf', got 'x'"):
        parity.ParityConfig(task="x")
    with pytest.raises(ValueError, match="hidden must be a positive int, got 0"):
        parity.ParityConfig(hidden=0)


SMALL = dict(dtype="float64", steps=25, batch=4, seq=12, hidden=16)
# Limits inside each model's range of gradient norms at this size, so that some steps clip.
CLIP = {"lm": 0.19, "clf": 0.6}


@pytest.mark.peers
@pytest.mark.skipif(not HAS_TORCH, reason="optional: torch absent")
@pytest.mark.parametrize("task", ["lm", "clf"])
def test_float64_training_matches_torch_step_for_step(task):
    cfg = parity.ParityConfig(task=task, clip=CLIP[task], **SMALL)
    r = parity.run(cfg)
    assert r["max_loss_rel"] <= 1e-9, r
    assert r["max_param_abs"] <= 1e-7, r
    assert r["max_grad_norm_rel"] <= 1e-9, r
    assert 0 < r["clipped_steps"] < cfg.steps, r  # clipping both applied and not applied
    assert r["ok"]


@pytest.mark.peers
@pytest.mark.skipif(not HAS_TORCH, reason="optional: torch absent")
def test_one_bias_lstm_does_not_match_torch():
    """The test can fail: with one bias, Adam moves the summed bias twice as slowly."""
    r = parity.run(parity.ParityConfig(task="lm", two_biases=False, **(SMALL | dict(steps=3))))
    assert r["max_loss_rel"] > 1e-7 and not r["ok"], r
