"""Data parallelism: mesh, batch sharding, FSDP rule, and 8-device steps equal 1-device steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import jrnn
from jrnn import train
from jrnn._src import sharding as shd

V, H = 16, 32
CELL = jrnn.lstm(H)  # shared so that equal models have equal graphdefs (one compile per mesh)


class TinyLM(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.cell = CELL
        p = CELL.init(rngs.params(), V)
        self.w_ih, self.w_hh, self.b = nnx.Param(p.w_ih), nnx.Param(p.w_hh), nnx.Param(p.b)
        self.head = nnx.Linear(H, V, rngs=rngs)

    def __call__(self, tokens, carry=None, key=None):
        params = jrnn.LSTMParams(self.w_ih[...], self.w_hh[...], self.b[...])
        carry, ys = jrnn.unroll(self.cell, params, tokens, carry)
        if key is not None:  # dropout: the mask must not depend on the device layout
            keep = jax.random.bernoulli(key, 0.8, ys.shape)
            ys = jnp.where(keep, ys / 0.8, jnp.zeros_like(ys))
        return self.head(ys), carry


def lm_loss(model, batch, key, carry):
    logits, carry = model(batch["x"], carry, key)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][..., None], axis=-1)), ({}, carry)


def batches():
    for s in range(100):
        x = np.random.default_rng(s).integers(0, V, (16, 6)).astype(np.int32)
        yield {"x": x, "y": (x + 3) % V, "reset": s == 2}


CFG = train.TrainConfig(
    steps=4,
    batch_size=16,
    warmup_steps=1,
    log_every=1,
    eval_every=0,
    checkpoint_every=0,
    progress=False,
    plot=False,
    fsdp_min_size=256,
)


def run(mesh, param_sharding="replicated"):
    model = TinyLM(rngs=nnx.Rngs(0))
    res = train.fit(
        model,
        lm_loss,
        batches(),
        CFG,
        mesh=mesh,
        param_sharding=param_sharding,
        init_carry=CELL.initial_carry,
    )
    losses = np.array([r["loss"] for r in res.history])
    return model, losses


def params_of(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


@pytest.fixture(scope="module")
def single():
    return run(train.make_mesh(jax.devices()[:1]))


def test_make_mesh():
    assert len(jax.devices()) == 8, "tests/conftest.py should force 8 CPU devices"
    mesh = train.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == 8
    assert train.make_mesh(jax.devices()[2:4]).devices.tolist() == jax.devices()[2:4]
    with pytest.raises(ValueError, match="at least one device"):
        train.make_mesh([])


def test_shard_batch_splits_rows_over_devices():
    mesh = train.make_mesh()
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    out = train.shard_batch({"x": x, "n": np.float32(2.0)}, mesh)
    assert out["x"].sharding.spec == P("data") and out["n"].sharding.spec == P()
    np.testing.assert_array_equal(np.asarray(out["x"]), x)
    for shard in out["x"].addressable_shards:  # each device holds 2 consecutive rows
        np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
        assert shard.data.shape == (2, 3)


def test_shard_batch_errors():
    mesh = train.make_mesh()
    with pytest.raises(ValueError, match=r"global batch size=12 is not divisible by the 8 dev"):
        train.shard_batch({"x": np.zeros((12, 2))}, mesh)
    with pytest.raises(ValueError, match=r"leading \(batch\) dimension, got sizes \[8, 16\]"):
        train.shard_batch({"x": np.zeros((8, 2)), "y": np.zeros((16,))}, mesh)


def test_fsdp_rule():
    assert shd.fsdp_spec((512, 2048), 8) == P(None, "data")
    assert shd.fsdp_spec((2048, 512), 8) == P("data", None)
    assert shd.fsdp_spec((1000, 64), 8, min_size=1) == P("data", None)  # 1000 = 8 * 125
    assert shd.fsdp_spec((1001, 64), 8, min_size=1) == P(None, "data")  # largest not divisible
    assert shd.fsdp_spec((1001, 63), 8, min_size=1) == P()
    assert shd.fsdp_spec((64, 64), 8) == P()  # below min_size: replicated
    assert shd.fsdp_spec((512, 2048), 1) == P()


def test_sharded_step_equals_single_device(single):
    model1, losses1 = single
    model8, losses8 = run(train.make_mesh())
    w = model8.w_hh[...]
    assert len(w.sharding.device_set) == 8 and w.sharding.is_fully_replicated
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        params_of(model8),
        params_of(model1),
    )


def test_fsdp_equals_replicated(single):
    model1, losses1 = single
    model, losses = run(train.make_mesh(), "fsdp")
    # w_hh [32, 128] is sharded on its largest axis; the 16-element head bias stays replicated.
    assert model.w_hh[...].sharding.spec == P(None, "data")
    assert model.head.bias[...].sharding.is_fully_replicated
    shards = model.w_hh[...].addressable_shards
    assert {s.data.shape for s in shards} == {(H, 4 * H // 8)}
    np.testing.assert_allclose(losses, losses1, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        params_of(model),
        params_of(model1),
    )


def test_describe_sharding_lists_specs():
    mesh = train.make_mesh()
    tree = {"w": jax.device_put(jnp.zeros((8, 4)), jax.sharding.NamedSharding(mesh, P("data")))}
    assert train.describe_sharding(tree) == f"['w']: (8, 4) {P('data')}"


# ----------------------------------------------------------------------------- two processes

WORKER = r"""
import json, os, sys
pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
from jrnn import train
train.initialize_distributed(coordinator_address=f"localhost:{port}", num_processes=2,
                             process_id=pid)
import jax.numpy as jnp, numpy as np
from flax import nnx
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mh_common import Lin, batches, cfg, global_batches, loss_fn
model = Lin()
# Each process reads only its own rows of every global batch.
if pid == 0:  # a sharded data source
    data = batches(jax.process_index(), jax.process_count())
else:  # a global data source, cut with train.process_rows
    data = (train.process_rows(b) for b in global_batches())
res = train.fit(model, loss_fn, data, cfg, workdir=workdir, param_sharding="fsdp")
from jax.experimental import multihost_utils
w = np.asarray(multihost_utils.process_allgather(model.w[...], tiled=True))
print("RESULT", json.dumps({"pid": pid, "devices": jax.device_count(),
      "local": len(model.w[...].addressable_shards), "spec": str(model.w[...].sharding.spec),
      "losses": [r["loss"] for r in res.history], "w": w.tolist()}), flush=True)
"""

COMMON = r"""
import jax.numpy as jnp, numpy as np
from flax import nnx
from jrnn import train

class Lin(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8) / 100)

def loss_fn(model, batch, key, carry):
    return jnp.mean((batch["x"] @ model.w[...]) ** 2), ({}, carry)

def batches(shard_index=0, shard_count=1):
    for s in range(10):
        x = np.random.default_rng(s).normal(size=(8, 16)).astype(np.float32)
        rows = 8 // shard_count
        yield {"x": x[shard_index * rows:(shard_index + 1) * rows]}

def global_batches():
    for s in range(10):
        yield {"x": np.random.default_rng(s).normal(size=(8, 16)).astype(np.float32)}

cfg = train.TrainConfig(steps=3, batch_size=8, log_every=1, eval_every=0, checkpoint_every=2,
                        progress=False, plot=False, warmup_steps=1, fsdp_min_size=1)
"""


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    """2 processes x 2 CPU devices (jax.distributed, gloo) == 1 process x 4 devices."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "mh_common.py").write_text(COMMON)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("XLA_FLAGS", None)
    port, workdir = str(free_port()), str(tmp_path / "run")
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(i), port, workdir],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    results = []
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    sys.path.insert(0, str(tmp_path))
    try:
        import mh_common
    finally:
        sys.path.remove(str(tmp_path))
    ref = mh_common.Lin()
    res = train.fit(
        ref,
        mh_common.loss_fn,
        mh_common.batches(),
        mh_common.cfg,
        mesh=train.make_mesh(jax.devices()[:4]),
        param_sharding="fsdp",
    )
    for r in results:
        assert r["devices"] == 4 and r["local"] == 2
        assert r["spec"] in (str(P("data")), str(P("data", None)))  # rows over 4 devices
        np.testing.assert_allclose(r["losses"], [h["loss"] for h in res.history], rtol=1e-6)
        np.testing.assert_allclose(np.array(r["w"]), np.asarray(ref.w[...]), rtol=1e-6)
    # Only process 0 wrote: one log row per step; the checkpoint restores on one device.
    rows = train.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert train.list_steps(os.path.join(workdir, "checkpoints")) == [2, 3]
    one = mh_common.Lin()
    train.restore_checkpoint(os.path.join(workdir, "checkpoints"), one)
    np.testing.assert_array_equal(np.asarray(one.w[...]), np.array(results[0]["w"], np.float32))


def test_evaluate_fresh_model_on_8_devices_equals_1_device():
    """evaluate places a fresh (single-device) model on the mesh, with carries split by batch."""
    model = TinyLM(rngs=nnx.Rngs(3))
    gen = batches()
    data = [{k: v for k, v in next(gen).items() if k != "reset"} for _ in range(3)]
    one = train.evaluate(
        model, lm_loss, data, mesh=train.make_mesh(jax.devices()[:1]), init_carry=CELL.initial_carry
    )
    eight = train.evaluate(
        model, lm_loss, data, mesh=train.make_mesh(), init_carry=CELL.initial_carry
    )
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    # The reference: the plain model on one device, batch by batch.
    losses, carry = [], CELL.initial_carry(16)
    for b in data:  # the carry threads across batches, as in truncated BPTT
        loss, (_, carry) = lm_loss(model, b, None, carry)
        losses.append(float(loss))
    ref = np.mean(losses)
    np.testing.assert_allclose(one["loss"], ref, rtol=1e-5)
