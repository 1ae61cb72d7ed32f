"""Promises of a training run: divergence guard, saves on signals and errors, explicit resume,
validation before work, strict JSON, any path. Each test is a row of docs/reliability.md."""

import json
import os
import signal
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jrnn import train
from jrnn._src import checkpoint as ckpt
from jrnn._src import metrics as metrics_lib


class Lin(nnx.Module):
    """y = x W: compiles in a fraction of a second."""

    def __init__(self, scale: float = 1.0):
        w = jnp.arange(16 * 4, dtype=jnp.float32).reshape(16, 4) / 100
        self.w = nnx.Param(w * scale)


def loss_fn(model, batch, key, carry):
    err = batch["x"] @ model.w[...] - batch["y"]
    return jnp.mean(err**2), ({"tokens": jnp.asarray(err.size, jnp.float32)}, carry)


def batch_at(s, b=8, poison=()):
    rng = np.random.default_rng(s)
    x = rng.normal(size=(b, 16)).astype(np.float32)
    if s in poison:
        x[0, 0] = np.nan
    return {"x": x, "y": rng.normal(size=(b, 4)).astype(np.float32)}


def stream(start=0, *, poison=(), skip=(), b=8, on_step=None):
    for s in range(start, 10_000):
        if s in skip:
            continue
        if on_step is not None:
            on_step(s)
        yield batch_at(s, b, poison)


def cfg(**kw):
    base = dict(
        steps=6,
        batch_size=8,
        warmup_steps=0,
        log_every=1,
        eval_every=0,
        checkpoint_every=2,
        progress=False,
        plot=False,
        schedule="constant",
        learning_rate=1e-2,
        async_checkpoints=False,
    )
    base.update(kw)
    return train.TrainConfig(**base)


def w_of(model):
    return np.asarray(model.w[...])


def strict_rows(path):
    def no_constant(name):
        raise AssertionError(f"non-strict JSON constant {name} in {path}")

    with open(path) as f:
        return [json.loads(line, parse_constant=no_constant) for line in f if line.strip()]


# ----------------------------------------------------------------------------- divergence


def test_poisoned_batch_is_skipped_and_counted(tmp_path):
    ref = Lin()  # the same stream without batch 2: adam's count does not advance on a skip
    train.fit(ref, loss_fn, stream(skip={2}), cfg(steps=5, checkpoint_every=0))
    got = Lin()
    res = train.fit(got, loss_fn, stream(poison={2}), cfg(), workdir=str(tmp_path))
    np.testing.assert_array_equal(w_of(got), w_of(ref))
    rows = strict_rows(tmp_path / "metrics.jsonl")
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 0, 0, 0]
    assert rows[2]["loss"] is None  # no finite step in that row: null, not NaN
    assert res.steps_done == 6 and res.interrupted is None
    assert train.list_steps(tmp_path / "checkpoints") == [2, 4, 6]


def test_divergence_stops_clearly_and_keeps_the_last_finite_checkpoint(tmp_path):
    c = cfg(steps=40, learning_rate=1e30, optimizer="sgd", max_bad_steps=3, keep_checkpoints=1)
    with pytest.raises(train.Diverged, match=r"last 3 steps .* non-finite.*max_bad_steps=3"):
        train.fit(Lin(), loss_fn, stream(), c, workdir=str(tmp_path))
    steps = train.list_steps(tmp_path / "checkpoints")
    assert steps and steps[-1] < 40
    restored = Lin(0.0)
    train.restore_checkpoint(tmp_path / "checkpoints", restored)
    assert np.all(np.isfinite(w_of(restored)))
    rows = strict_rows(tmp_path / "metrics.jsonl")
    assert sum(r["skipped_steps"] for r in rows) >= 3


def test_a_nonfinite_state_is_never_saved(tmp_path):
    c = ckpt.Checkpointer(tmp_path, async_save=False)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        c.save(1, {"state": {"w": jnp.array([1.0, jnp.nan])}})
    c.close()
    assert train.list_steps(tmp_path) == []


def test_keep_last_k_plus_best(tmp_path):
    c = ckpt.Checkpointer(tmp_path, keep=2, best_metric="loss", best_mode="min")
    for step, score in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0), (5, 4.0)]:
        c.save(step, {"state": {"w": jnp.full(3, float(step))}})
        c.wait()
        c.record(step, score)
    c.save(6, {"state": {"w": jnp.full(3, 6.0)}})
    c.close()
    assert train.list_steps(tmp_path) == [2, 5, 6]
    out, meta = ckpt.Checkpointer(tmp_path).restore({"state": {"w": jnp.zeros(3)}}, step=2)
    np.testing.assert_array_equal(out["state"]["w"], np.full(3, 2.0))


# ----------------------------------------------------------------------------- signals, errors


def test_sigterm_saves_and_returns_then_resumes_identically(tmp_path):
    ref = Lin()
    train.fit(ref, loss_fn, stream(), cfg(checkpoint_every=0))

    def kill_at(s):
        if s == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = Lin()
    res = train.fit(first, loss_fn, stream(on_step=kill_at), cfg(), workdir=str(tmp_path))
    assert res.interrupted == "SIGTERM" and res.steps_done in (3, 4)
    assert train.latest_step(tmp_path / "checkpoints") == res.steps_done
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    again = Lin(2.0)
    res = train.fit(again, loss_fn, lambda s: stream(s), cfg(), workdir=str(tmp_path))
    assert res.steps_done == 6
    np.testing.assert_array_equal(w_of(again), w_of(ref))


def test_eval_crash_saves_first(tmp_path):
    def bad_eval(model):
        raise RuntimeError("eval exploded")

    with pytest.raises(RuntimeError, match="eval exploded"):
        train.fit(
            Lin(),
            loss_fn,
            stream(),
            cfg(eval_every=3, checkpoint_every=0),
            eval_fn=bad_eval,
            workdir=str(tmp_path),
        )
    assert train.list_steps(tmp_path / "checkpoints") == [3]


def test_deleted_checkpoint_metadata_refuses_to_restart(tmp_path):
    train.fit(Lin(), loss_fn, stream(), cfg(steps=2), workdir=str(tmp_path))
    for d in (tmp_path / "checkpoints").iterdir():
        for f in (d / "meta").iterdir():
            f.unlink()
        (d / "meta").rmdir()
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RuntimeError, match=r"metrics.jsonl logs a run up to step 2.*resume=False"):
        train.fit(Lin(), loss_fn, stream(), cfg(steps=2), workdir=str(tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text() == before


# ----------------------------------------------------------------------------- resume is explicit


def test_config_drift_on_resume(tmp_path, capsys):
    wd = str(tmp_path)
    train.fit(Lin(), loss_fn, stream(), cfg(steps=2), workdir=wd, run_config={"hidden": 4})
    with pytest.raises(ValueError, match=r"train.batch_size: 8 -> 16.*shapes"):
        train.fit(Lin(), loss_fn, stream(b=16), cfg(steps=4, batch_size=16), workdir=wd)
    with pytest.raises(ValueError, match=r"train.seed: 0 -> 1"):
        train.fit(Lin(), loss_fn, stream(), cfg(steps=4, seed=1), workdir=wd)
    with pytest.raises(ValueError, match=r"learning_rate: 0.01 -> 0.02.*allow_config_change"):
        train.fit(Lin(), loss_fn, stream(), cfg(steps=2, learning_rate=2e-2), workdir=wd)
    with pytest.raises(ValueError, match=r"run.hidden: 4 -> 8"):
        train.fit(Lin(), loss_fn, stream(), cfg(steps=2), workdir=wd, run_config={"hidden": 8})
    with pytest.raises(ValueError, match=r"w.*shape \(16, 4\).*expects shape \(16, 5\)"):

        class Wider(nnx.Module):
            def __init__(self):
                self.w = nnx.Param(jnp.zeros((16, 5)))

        train.fit(Wider(), loss_fn, stream(), cfg(steps=2), workdir=wd)
    res = train.fit(
        Lin(),
        loss_fn,
        lambda s: stream(s),
        cfg(steps=3, learning_rate=2e-2, log_every=5, progress=True),
        workdir=wd,
        run_config={"hidden": 4},
        allow_config_change=True,
    )
    assert res.steps_done == 3
    out = capsys.readouterr().out
    assert "resuming from step 2" in out and "train.learning_rate: 0.01 -> 0.02" in out


# ----------------------------------------------------------------------------- validation, files


@pytest.mark.parametrize(
    "field,value",
    [
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("b1", 1.0),
        ("b2", -0.1),
        ("weight_decay", -1.0),
        ("steps", 1.5),
        ("batch_size", True),
        ("max_bad_steps", 0),
        ("clip_norm", -1.0),
        ("best_mode", "lowest"),
        ("progress", "yes"),
    ],
)
def test_train_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be"):
        train.TrainConfig(**{field: value})


def test_old_format_checkpoints_say_how_to_convert_and_convert(tmp_path):
    old = tmp_path / "checkpoints"
    d = old / "step_00000002"
    d.mkdir(parents=True)
    w = np.arange(64, dtype=np.float32).reshape(16, 4)
    key = np.asarray(jax.random.key_data(jax.random.key(3)))
    np.savez(
        d / "arrays.npz",
        **{
            "state.step": np.int32(2),
            "state.params['w'].value": w,
            "state.rng": np.asarray(jax.random.key_data(jax.random.key(0))),
        },
    )
    arrays = {
        "state.step": {"dtype": "int32", "shape": []},
        "state.params['w'].value": {"dtype": "float32", "shape": [16, 4]},
        "state.rng": {"dtype": "uint32", "shape": [2]},
    }
    (d / "meta.json").write_text(json.dumps({"format": 1, "step": 2, "arrays": arrays}))
    with pytest.raises(ValueError, match=r"old jrnn format.*convert_legacy_checkpoints"):
        train.fit(Lin(), loss_fn, stream(), cfg(steps=3), workdir=str(tmp_path))
    with pytest.raises(ValueError, match=r"old jrnn format"):
        train.restore_checkpoint(old, Lin())
    os.rename(old, tmp_path / "checkpoints.old")
    assert train.convert_legacy_checkpoints(tmp_path / "checkpoints.old", old) == [2]
    model = Lin(0.0)
    assert train.restore_checkpoint(old, model).step == 2
    np.testing.assert_array_equal(w_of(model), w)
    del key


def test_remote_paths_stay_remote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = ckpt.as_path("gs://bucket/run") / "checkpoints"
    assert str(p) == "gs://bucket/run/checkpoints"
    assert type(p).__module__.startswith("etils.epath")  # a GCS path object, not a local Path
    assert not metrics_lib._local(p) and metrics_lib._local(ckpt.as_path(str(tmp_path)))
    with pytest.raises(Exception):  # noqa: B017 - no network or GCS client here
        train.fit(Lin(), loss_fn, stream(), cfg(steps=1), workdir="gs://bucket/run")
    assert not os.path.exists(tmp_path / "gs:")
    assert os.listdir(tmp_path) == []


def test_metrics_and_summary_are_strict_json(tmp_path):
    log = metrics_lib.JsonlLogger(tmp_path / "m.jsonl")
    log.write({"step": 1, "loss": float("nan"), "g": float("inf"), "ok": 1.5})
    assert strict_rows(tmp_path / "m.jsonl") == [{"step": 1, "loss": None, "g": None, "ok": 1.5}]
    # Resuming rewrites the file atomically without the rows after the checkpoint.
    log.write({"step": 2, "loss": 1.0})
    metrics_lib.JsonlLogger(tmp_path / "m.jsonl", truncate_after=1)
    assert [r["step"] for r in strict_rows(tmp_path / "m.jsonl")] == [1]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    from experiments import common

    common.write_summary(str(tmp_path), {"loss": float("nan"), "x": np.float32(2.0)})
    text = (tmp_path / "summary.json").read_text()
    assert json.loads(text, parse_constant=float.fromhex) == {"loss": None, "x": 2.0}
    assert "NaN" not in text


def test_eval_batches_checked_against_devices_before_training(tmp_path):
    from experiments import common
    from experiments.sorter import config as sorter_config
    from experiments.sorter import train as sorter_train

    with pytest.raises(ValueError, match=r"eval_batch_size=12 is not divisible by the 8 dev"):
        common.check_eval_batches(eval_batch_size=12)
    config = sorter_config.get_config("smoke").replace(eval_examples=12)
    with pytest.raises(ValueError, match=r"eval_examples=12"):
        sorter_train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


def test_experiment_configs_name_the_bad_field():
    from experiments.byte_classifier import config as bc
    from experiments.char_lm import config as lm
    from experiments.sorter import config as so

    with pytest.raises(ValueError, match=r"Config.hidden_size must be > 0, got 0"):
        lm.get_config("smoke").replace(hidden_size=0)
    with pytest.raises(ValueError, match=r"Config.dropout must be in \[0, 1\)"):
        bc.get_config("smoke").replace(dropout=1.0)
    with pytest.raises(ValueError, match=r"Config.decoder_input must be one of"):
        so.get_config("smoke").replace(decoder_input="ones")
    with pytest.raises(ValueError, match=r"Config.seq_len must be of type int, got '8'"):
        so.get_config("smoke").replace(seq_len="8")
    with pytest.raises(ValueError, match=r"TrainConfig.learning_rate"):
        lm.get_config("smoke").train.replace(learning_rate=-1.0)


def test_tensorboard_events_next_to_metrics(tmp_path, monkeypatch):
    train.fit(Lin(), loss_fn, stream(), cfg(steps=2, tensorboard=True), workdir=str(tmp_path))
    events = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    assert len(events) == 1 and os.path.getsize(tmp_path / events[0]) > 0
    monkeypatch.setitem(__import__("sys").modules, "tensorboardX", None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        metrics_lib.TensorBoard(str(tmp_path), True)
    assert any("pip install 'jrnn[tensorboard]'" in str(x.message) for x in w)
