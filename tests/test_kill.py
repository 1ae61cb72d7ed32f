"""SIGKILL at random points of a real training process (saves in flight included): no completed
checkpoint is lost and the run, resumed after every kill, ends bit-identical to an
uninterrupted one. Also the command-line repro of a diverging run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jrnn import train

SCRIPT = r"""
import sys
workdir, out = sys.argv[1], sys.argv[2]
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jrnn import train

class M(nnx.Module):
    def __init__(self):
        k1, k2 = jax.random.split(jax.random.key(0))
        self.w = nnx.Param(jax.random.normal(k1, (16, 32)) * 0.3)
        self.u = nnx.Param(jax.random.normal(k2, (32, 32)) * 0.1)
        self.v = nnx.Linear(32, 4, rngs=nnx.Rngs(1))

def loss_fn(model, batch, key, carry):
    h = jnp.tanh(batch["x"] @ model.w[...] + carry @ model.u[...])
    keep = jax.random.bernoulli(key, 0.9, h.shape)  # dropout: the resumed RNG must match
    y = model.v(jnp.where(keep, h / 0.9, 0.0))
    return jnp.mean((y - batch["y"]) ** 2), ({}, h)

def batches(start):
    for s in range(start, 10_000):
        r = np.random.default_rng(s)
        yield {"x": r.normal(size=(8, 16)).astype(np.float32),
               "y": r.normal(size=(8, 4)).astype(np.float32), "reset": s % 7 == 0}

cfg = train.TrainConfig(steps=STEPS, batch_size=8, learning_rate=3e-3, warmup_steps=5,
                        log_every=5, eval_every=0, checkpoint_every=1, keep_checkpoints=2,
                        progress=False, plot=False, async_checkpoints=True)
model = M()
res = train.fit(model, loss_fn, batches, cfg, workdir=workdir,
                init_carry=lambda b: jnp.zeros((b, 32)))
np.save(out, np.asarray(jax.device_get(nnx.state(model, nnx.Param)["w"][...])))
print("DONE", res.steps_done, flush=True)
"""

STEPS = 40


def run(script, workdir, out, env):
    return subprocess.Popen(
        [sys.executable, str(script), str(workdir), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.replace("STEPS", str(STEPS)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    p = run(script, tmp_path / "ref", tmp_path / "ref.npy", env)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    ref = np.load(tmp_path / "ref.npy")

    rng = random.Random(0)
    ckpts = tmp_path / "run" / "checkpoints"
    kills = 0
    # Kill once the run has passed a random step, after a random delay: mostly mid-save, since
    # a checkpoint is written at every step.
    for target in sorted(rng.sample(range(3, STEPS - 3), 4)):
        p = run(script, tmp_path / "run", tmp_path / "run.npy", env)
        while p.poll() is None and (train.latest_step(ckpts) or 0) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        before = train.list_steps(ckpts)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.communicate(timeout=600)
        after = train.list_steps(ckpts)
        if before:  # the newest complete checkpoint survives the kill
            assert after and after[-1] >= before[-1], (before, after)
    assert kills >= 3
    p = run(script, tmp_path / "run", tmp_path / "run.npy", env)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    assert f"DONE {STEPS}" in out
    got = np.load(tmp_path / "run.npy")
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
    rows = train.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(5, STEPS + 1, 5))


@pytest.mark.slow
def test_diverging_char_lm_command_line(tmp_path):
    """The repro: learning rate 1e30 on the char LM from the command line."""
    text = tmp_path / "x.txt"
    text.write_text("".join(f"line {i}: the quick brown fox.\n" for i in range(400)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    cmd = [
        sys.executable,
        "-m",
        "experiments.char_lm.train",
        "--config",
        "smoke",
        "--corpus",
        str(text),
        "--workdir",
        str(tmp_path / "w"),
        "--set",
        "train.learning_rate=1e30",
        "--set",
        "train.checkpoint_every=10",
        "--set",
        "train.max_bad_steps=5",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode != 0
    assert "Diverged: training diverged" in p.stderr, p.stderr[-2000:]
    steps = train.list_steps(tmp_path / "w" / "checkpoints")
    model_dir = tmp_path / "w" / "checkpoints"
    for s in steps:  # every checkpoint left is finite
        meta = json.loads((model_dir / f"step_{s:08d}" / "meta" / "metadata").read_text())
        assert meta["step"] == s
    from experiments.char_lm import config as config_lib
    from experiments.char_lm import train as lm

    if steps:
        model = lm.make_model(config_lib.get_config("smoke"))
        train.restore_checkpoint(model_dir, model)
        from flax import nnx

        for leaf in __import__("jax").tree.leaves(nnx.state(model, nnx.Param)):
            assert np.all(np.isfinite(np.asarray(leaf)))
    rows = train.read_jsonl(tmp_path / "w" / "metrics.jsonl")  # strict JSON, nulls
    assert any(r.get("skipped_steps") for r in rows)
    assert not (tmp_path / "w" / "summary.json").exists()
