"""Tests of jrnn.train: schedule, optimizer, jitted steps, fit (resume, carry, bf16), metrics."""

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jrnn
from jrnn import train
from jrnn._src import train as train_lib

V, H = 12, 16  # vocabulary and hidden size of the tiny LM
# One cell object per dtype: a cell is part of the model's graphdef, and fit reuses its compiled
# step only for equal graphdefs (jrnn.lstm(...) makes new closures on every call).
CELLS = {jnp.float32: jrnn.lstm(H), jnp.bfloat16: jrnn.lstm(H, dtype=jnp.bfloat16)}


class TinyLM(nnx.Module):
    """Token LSTM LM: jrnn.lstm params held as nnx.Param, jrnn.unroll, a linear head."""

    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32, dropout: float = 0.0):
        self.cell = CELLS[dtype]
        p = self.cell.init(rngs.params(), V)
        self.w_ih, self.w_hh, self.b = nnx.Param(p.w_ih), nnx.Param(p.w_hh), nnx.Param(p.b)
        self.head = nnx.Linear(H, V, rngs=rngs)
        self.dropout = dropout

    def __call__(self, tokens, carry=None, key=None):
        params = jrnn.LSTMParams(self.w_ih[...], self.w_hh[...], self.b[...])
        carry, ys = jrnn.unroll(self.cell, params, tokens, carry)
        if key is not None and self.dropout:
            keep = jax.random.bernoulli(key, 1.0 - self.dropout, ys.shape)
            ys = jnp.where(keep, ys / (1.0 - self.dropout), jnp.zeros_like(ys))
        return self.head(ys), carry


def lm_loss(model, batch, key, carry):
    logits, carry = model(batch["x"], carry, key)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, batch["y"][..., None], axis=-1)
    acc = jnp.mean((jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32))
    tokens = jnp.asarray(batch["x"].size, jnp.float32)
    return jnp.mean(nll), ({"accuracy": acc, "tokens": tokens}, carry)


def lm_carry(b):
    return jrnn.lstm(H).initial_carry(b)


def lm_batches(start=0, *, b=8, t=5, reset_every=3, fail_at=None):
    for s in range(start, 10_000):
        if s == fail_at:
            raise RuntimeError("simulated crash")
        x = np.random.default_rng(s).integers(0, V, (b, t)).astype(np.int32)
        yield {"x": x, "y": (x + 1) % V, "reset": s % reset_every == 0}


def params_of(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def quiet(**kw):
    base = dict(
        batch_size=8,
        warmup_steps=2,
        log_every=1,
        eval_every=0,
        checkpoint_every=0,
        progress=False,
        plot=False,
        learning_rate=1e-2,
    )
    base.update(kw)
    return train.TrainConfig(**base)


# ----------------------------------------------------------------------------- schedule, optimizer


def test_schedule_matches_closed_form():
    cfg = train.TrainConfig(steps=20, learning_rate=0.5, warmup_steps=4, final_lr_ratio=0.1)
    lr = train.make_schedule(cfg)
    for s in [0, 1, 3, 4, 7, 12, 19, 20, 30]:
        if s < 4:
            want = 0.5 * (s + 1) / 4
        else:
            frac = min((s - 4) / 16, 1.0)
            want = 0.05 + 0.45 * 0.5 * (1 + math.cos(math.pi * frac))
        assert float(lr(s)) == pytest.approx(want, rel=1e-6)
        assert train_lib.learning_rate_at(cfg, s) == pytest.approx(want, rel=1e-12)
    const = train.make_schedule(cfg.replace(schedule="constant"))
    assert float(const(15)) == pytest.approx(0.5)


def standard_update(tx, grads, params):
    @jax.jit
    def update(grads, params):
        with jax.numpy_dtype_promotion("standard"):  # optax needs it
            return tx.update(grads, tx.init(params), params)[0]

    return update(grads, params)


def test_optimizer_clips_and_masks_weight_decay():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    # sgd without momentum: update = -lr * clip(g); global norm of g is 10 -> scaled to 1.
    cfg = train.TrainConfig(
        optimizer="sgd",
        b1=0.0,
        learning_rate=0.1,
        warmup_steps=0,
        schedule="constant",
        clip_norm=1.0,
    )
    tx = train.make_optimizer(cfg)
    g = {"w": jnp.full((2, 2), 3.0), "b": jnp.array([4.0, np.sqrt(100.0 - 36.0 - 16.0)])}
    upd = standard_update(tx, g, params)
    np.testing.assert_allclose(upd["w"], -0.1 * 0.3 * np.ones((2, 2)), rtol=1e-6)
    # adamw with zero gradients: only the decay moves params, and only the 2-D ones.
    cfg = train.TrainConfig(
        learning_rate=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5
    )
    tx = train.make_optimizer(cfg)
    zeros = jax.tree.map(jnp.zeros_like, params)
    upd = standard_update(tx, zeros, params)
    np.testing.assert_allclose(upd["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(upd["b"], np.zeros(2))


@pytest.mark.parametrize(
    "field,value", [("steps", 0), ("batch_size", -1), ("optimizer", "rmsprop"), ("log_every", -1)]
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        train.TrainConfig(**{field: value})


# ----------------------------------------------------------------------------- the jitted steps


class OneStepRNN(nnx.Module):
    """h' = tanh(x W + h U), prediction h' V: a cheap-to-compile model with a carry."""

    def __init__(self, rngs: nnx.Rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (3, 4)))
        self.u = nnx.Param(jax.random.normal(rngs.params(), (4, 4)) * 0.5)
        self.v = nnx.Linear(4, 2, rngs=rngs)


def rnn_loss(model, batch, key, carry):
    h = jnp.tanh(batch["x"] @ model.w[...] + carry @ model.u[...])
    err = model.v(h) - batch["y"]
    return jnp.mean(err**2), ({"mae": jnp.mean(jnp.abs(err))}, h)


def test_train_step_matches_manual_optax_update():
    model = OneStepRNN(nnx.Rngs(0))
    tx = train.make_optimizer(quiet(steps=10))
    graphdef, state = train.init_state(model, tx, seed=3)
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(8, 3)).astype(np.float32),
        "y": rng.normal(size=(8, 2)).astype(np.float32),
    }
    carry = jnp.asarray(rng.normal(size=(8, 4)).astype(np.float32))

    def pure(params):
        m = nnx.merge(graphdef, params, state.rest)
        return rnn_loss(m, batch, None, carry)[0]

    @jax.jit
    def reference(params, opt_state):
        loss, grads = jax.value_and_grad(pure)(params)
        with jax.numpy_dtype_promotion("standard"):
            upd, _ = tx.update(grads, opt_state, params)
            return loss, optax.tree.norm(grads), optax.apply_updates(params, upd)

    loss, norm, want = reference(state.params, state.opt_state)
    new, new_carry, m = train.train_step(graphdef, state, batch, carry, loss_fn=rnn_loss, tx=tx)
    assert int(new.step) == 1
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(m["grad_norm"], norm, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new.params, want
    )
    ev, ev_carry = train.eval_step(
        graphdef, state.params, state.rest, batch, carry, loss_fn=rnn_loss
    )
    np.testing.assert_allclose(ev["loss"], loss, rtol=1e-6)
    assert set(m) == {"loss", "grad_norm", "mae"} and set(ev) == {"loss", "mae"}
    assert not np.allclose(np.asarray(new_carry), np.asarray(carry))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ev_carry, new_carry)


def test_loss_fn_with_wrong_output_raises():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    tx = train.make_optimizer(train.TrainConfig())
    graphdef, state = train.init_state(model, tx)
    with pytest.raises(TypeError, match=r"loss_fn must return \(loss, \(metrics"):
        train.train_step(
            graphdef,
            state,
            {"x": jnp.ones((2, 2))},
            None,
            loss_fn=lambda m, b, k, c: jnp.sum(m(b["x"])),
            tx=tx,
        )


def test_evaluate_weighted_mean():
    model = nnx.Linear(1, 1, use_bias=False, rngs=nnx.Rngs(0))
    w = float(model.kernel[0, 0])

    def loss_fn(m, batch, key, carry):
        assert key is None
        y = m(batch["x"])[:, 0]
        return jnp.sum(y), ({"count": jnp.asarray(batch["x"].shape[0], jnp.float32)}, carry)

    xs = [np.full((8, 1), 1.0, np.float32), np.full((16, 1), 2.0, np.float32)]
    out = train.evaluate(model, loss_fn, [{"x": x} for x in xs])
    want = (8 * (8 * w) + 16 * (32 * w)) / 24
    assert out["loss"] == pytest.approx(want, rel=1e-5)
    assert out["count"] == 24


# ----------------------------------------------------------------------------- fit


def test_fit_threads_carry_and_resets_it():
    class Counter(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((1, 1)))

    def loss_fn(model, batch, key, carry):
        carry = carry + 1.0
        loss = jnp.mean((model.w[...] * batch["x"]) ** 2)
        return loss, ({"carry": jnp.mean(carry)}, carry)

    resets = [True, False, False, True, False, False, False, True]
    batches = ({"x": np.ones((8, 1), np.float32), "reset": r} for r in resets)
    res = train.fit(
        Counter(),
        loss_fn,
        batches,
        quiet(steps=8),
        init_carry=lambda b: jnp.zeros((b, 1), jnp.float32),
    )
    seen = [r["carry"] for r in res.history if r["kind"] == "train"]
    assert seen == [1, 2, 3, 1, 2, 3, 4, 1]


def test_fit_evaluates_on_schedule_and_once_at_the_end():
    calls = []

    def loss_fn(model, batch, key, carry):
        return jnp.mean(model(batch["x"]) ** 2), ({}, carry)

    def eval_fn(model):
        calls.append(float(model.kernel[0, 0]))
        return {"n": float(len(calls))}

    batches = ({"x": np.ones((8, 2), np.float32)} for _ in range(100))
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    res = train.fit(
        model, loss_fn, batches, quiet(steps=8, log_every=3, eval_every=4), eval_fn=eval_fn
    )
    evals = [r for r in res.history if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8] and len(calls) == 2
    assert [r["step"] for r in res.history if r["kind"] == "train"] == [3, 6, 8]
    assert calls[1] == float(model.kernel[0, 0]) != calls[0]  # eval sees the current params
    assert res.metrics["eval_n"] == 2.0


def test_fit_rejects_indivisible_batch():
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices"):
        train.fit(
            TinyLM(rngs=nnx.Rngs(0)), lm_loss, lm_batches(b=12), quiet(steps=1, batch_size=12)
        )


def test_fit_resume_continues_the_same_trajectory(tmp_path):
    cfg = quiet(steps=6, checkpoint_every=2, eval_every=3, schedule="constant")
    kw = dict(init_carry=lm_carry, eval_fn=lambda m: {"one": 1.0})
    full = TinyLM(rngs=nnx.Rngs(0), dropout=0.3)
    ref = train.fit(full, lm_loss, lm_batches(), cfg, workdir=str(tmp_path / "a"), **kw)

    crashed = TinyLM(rngs=nnx.Rngs(0), dropout=0.3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.fit(crashed, lm_loss, lm_batches(fail_at=5), cfg, workdir=str(tmp_path / "b"), **kw)
    # The data stream failed before step 6: the 5 steps done were saved on the way out.
    assert train.latest_step(tmp_path / "b" / "checkpoints") == 5
    resumed = TinyLM(rngs=nnx.Rngs(1), dropout=0.3)  # different init: must be overwritten
    res = train.fit(
        resumed, lm_loss, lambda start: lm_batches(start), cfg, workdir=str(tmp_path / "b"), **kw
    )
    assert res.steps_done == 6
    jax.tree.map(np.testing.assert_array_equal, params_of(resumed), params_of(full))
    # The log holds each step once, with the same losses as the uninterrupted run.
    rows = train.read_jsonl(tmp_path / "b" / "metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    ref_losses = [r["loss"] for r in ref.history if r["kind"] == "train"]
    assert [r["loss"] for r in train_rows] == ref_losses
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [3, 6]
    # Resuming with a plain iterator (advanced past the done steps) ends the same way.
    longer = cfg.replace(steps=8)
    again = TinyLM(rngs=nnx.Rngs(2), dropout=0.3)
    with pytest.raises(ValueError, match=r"train.steps: 6 -> 8.*allow_config_change"):
        train.fit(again, lm_loss, lm_batches(), longer, workdir=str(tmp_path / "a"), **kw)
    train.fit(
        again,
        lm_loss,
        lm_batches(),
        longer,
        workdir=str(tmp_path / "a"),
        allow_config_change=["train.steps"],
        **kw,
    )
    third = TinyLM(rngs=nnx.Rngs(0), dropout=0.3)  # resume=False starts over in the same dir
    train.fit(third, lm_loss, lm_batches(), longer, workdir=str(tmp_path / "b"), resume=False, **kw)
    jax.tree.map(np.testing.assert_array_equal, params_of(again), params_of(third))
    assert train.list_steps(tmp_path / "b" / "checkpoints") == [4, 6, 8]
    assert [r["step"] for r in train.read_jsonl(tmp_path / "b" / "metrics.jsonl")][:2] == [1, 2]


def test_fit_writes_jsonl_checkpoints_and_curves(tmp_path):
    # Same optimizer fields and model structure as the resume test: reuses its compiled step.
    cfg = quiet(
        steps=4,
        log_every=2,
        eval_every=2,
        checkpoint_every=2,
        keep_checkpoints=1,
        plot=True,
        schedule="constant",
    )
    res = train.fit(
        TinyLM(rngs=nnx.Rngs(0), dropout=0.3),
        lm_loss,
        lm_batches(),
        cfg,
        workdir=str(tmp_path),
        init_carry=lm_carry,
        eval_fn=lambda m: {"x": 0.5},
    )
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert rows == res.history
    assert all(type(r["step"]) is int for r in rows)
    tr = rows[0]
    assert {"step", "loss", "lr", "grad_norm", "accuracy", "tokens", "time"} <= set(tr)
    assert tr["lr"] == pytest.approx(train_lib.learning_rate_at(cfg, 1))
    assert tr["tokens"] == 8 * 5  # per step, mean over the logging window
    assert "tokens_per_s" in rows[-2] and rows[-2]["tokens_per_s"] > 0
    assert [r["kind"] for r in rows] == ["train", "eval", "train", "eval"]
    assert train.list_steps(tmp_path / "checkpoints") == [4]
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert res.metrics["eval_x"] == 0.5 and res.metrics["loss"] == rows[2]["loss"]


def test_progress_rich_on_a_terminal_plain_lines_elsewhere(monkeypatch, capsys):
    from jrnn._src import metrics

    plain = metrics.ProgressBar(100)  # pytest captures stdout: not a TTY -> plain lines
    assert plain.mode == "plain"
    plain.update(10, metrics.format_info({"loss": 1.5, "lr": 2e-3, "tokens_per_s": 1234.0}))
    plain.update(20, metrics.format_info({"loss": 1.25, "lr": 2e-3, "tokens_per_s": 1234.0}))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step  10/100  loss 1.5000  lr 2.00e-03  1,234 tok/s"
    assert out[1].startswith("step  20/100  loss 1.2500  lr 2.00e-03  1,234 tok/s  ETA ")
    assert metrics.ProgressBar(10, enabled=False).mode == "off"  # cfg.progress=False
    monkeypatch.setattr(metrics, "_in_jupyter", lambda: True)  # Jupyter/Colab: rich's display
    bar = metrics.ProgressBar(10)
    assert bar.mode == "rich"
    bar.close()
    monkeypatch.setattr(metrics, "_in_jupyter", lambda: False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = metrics.ProgressBar(10)
    assert bar.mode == "rich"
    bar.update(3, "x")
    bar.close()
    assert metrics.format_info({"loss": None, "skipped_steps": 2}) == (
        "loss nan  2 non-finite steps skipped"
    )


def test_plot_curves_needs_a_metric(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"kind": "train", "step": 1, "time": 1.0}\n')
    with pytest.raises(ValueError, match="holds no metric to plot"):
        train.plot_curves(path, tmp_path / "c.png")


def test_plot_curves_without_matplotlib(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 1.0}\n')
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'jrnn\[experiments\]'"):
        train.plot_curves(path, tmp_path / "c.png")
    assert not os.path.exists(tmp_path / "c.png")


# Mixed precision: bf16 matmul operands, float32 params/optimizer/loss. Tolerance documented in
# docs/training.md: |loss_bf16 - loss_f32| <= 1e-3 * loss_f32 at every step (measured: 2.7e-5).
BF16_RTOL = 1e-3


def test_bf16_compute_stays_close_to_float32():
    cfg = quiet(steps=12, learning_rate=2e-2)
    losses, models = {}, {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = TinyLM(rngs=nnx.Rngs(0), dtype=dtype)
        res = train.fit(model, lm_loss, lm_batches(reset_every=100), cfg, init_carry=lm_carry)
        losses[dtype] = np.array([r["loss"] for r in res.history if r["kind"] == "train"])
        models[dtype] = model
    f32, bf16 = losses[jnp.float32], losses[jnp.bfloat16]
    assert f32[-1] < f32[0] and bf16[-1] < bf16[0]  # both learn
    print(f"bf16 vs float32 max relative loss difference: {np.max(np.abs(bf16 - f32) / f32):.2g}")
    np.testing.assert_allclose(bf16, f32, rtol=BF16_RTOL)
    assert not np.array_equal(bf16, f32)  # bf16 really ran
    for leaf in jax.tree.leaves(nnx.state(models[jnp.bfloat16], nnx.Param)):
        assert leaf.dtype == jnp.float32
