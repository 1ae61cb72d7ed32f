"""Checkpoints: bitwise round trips across device layouts, atomicity, retention, errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jrnn
from jrnn import train

CELL = jrnn.lstm(32)


class Model(nnx.Module):
    """jrnn LSTM params as nnx.Param, a bfloat16 param, and RNG state (a typed key + count)."""

    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        p = CELL.init(rngs.params(), 8)
        self.w_ih, self.w_hh, self.b = nnx.Param(p.w_ih), nnx.Param(p.w_hh), nnx.Param(p.b)
        self.scale = nnx.Param(jax.random.normal(rngs.params(), (4,), jnp.bfloat16))
        self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=seed + 100))


def state_of(model):
    def host(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(host, nnx.state(model))


def assert_bitwise_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8))


def place(model, sharding_of):
    """Moves every array of ``model`` to ``sharding_of(array)``."""
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: jax.device_put(x, sharding_of(x)), state))


def tx_and_opt(model):
    tx = train.make_optimizer(train.TrainConfig())
    with jax.numpy_dtype_promotion("standard"):
        return tx, tx.init(nnx.state(model, nnx.Param))


def test_roundtrip_is_bitwise_with_opt_state_rng_and_carry(tmp_path):
    src = Model(0)
    tx, opt = tx_and_opt(src)
    opt = jax.tree.map(lambda x: x + 1 if x.dtype == jnp.float32 else x, opt)  # non-trivial
    carry = CELL.initial_carry(4)
    carry = (carry[0] + 0.25, carry[1] - 0.5)
    rng = jax.random.key_data(jax.random.key(7))
    d = train.save_checkpoint(tmp_path, src, opt, 12, rng=rng, carry=carry, metadata={"a": 1})
    assert os.path.basename(d) == "step_00000012"
    dst = Model(1)
    assert not np.array_equal(np.asarray(dst.w_hh[...]), np.asarray(src.w_hh[...]))
    _, opt_template = tx_and_opt(dst)
    got = train.restore_checkpoint(tmp_path, dst, opt_template, carry=CELL.initial_carry(4))
    assert got.step == 12 and got.metadata == {"a": 1}
    assert_bitwise_equal(state_of(dst), state_of(src))
    assert dst.scale[...].dtype == jnp.bfloat16
    assert jnp.issubdtype(dst.drop.rngs.key[...].dtype, jax.dtypes.prng_key)
    assert_bitwise_equal(jax.tree.map(np.asarray, got.opt_state), jax.tree.map(np.asarray, opt))
    assert_bitwise_equal([np.asarray(c) for c in got.carry], [np.asarray(c) for c in carry])
    np.testing.assert_array_equal(got.rng, rng)
    # Without an optimizer template only the model is restored.
    only = train.restore_checkpoint(tmp_path, Model(2))
    assert only.opt_state is None and only.carry is None


@pytest.mark.parametrize("direction", ["8->1", "1->8"])
def test_saved_on_one_layout_restores_on_another(tmp_path, direction):
    mesh8, mesh1 = train.make_mesh(), train.make_mesh(jax.devices()[:1])
    fsdp8 = lambda x: NamedSharding(mesh8, P() if x.ndim < 2 else shd_spec(x))
    one = lambda x: NamedSharding(mesh1, P())
    src_layout, dst_layout = (fsdp8, one) if direction == "8->1" else (one, fsdp8)
    src = Model(0)
    place(src, src_layout)
    tx, opt = tx_and_opt(src)  # follows the params' placement
    train.save_checkpoint(tmp_path, src, opt, 3)
    dst = Model(1)
    place(dst, dst_layout)
    _, opt_template = tx_and_opt(dst)
    got = train.restore_checkpoint(tmp_path, dst, opt_template)
    assert_bitwise_equal(state_of(dst), state_of(src))
    ndev = 8 if direction == "1->8" else 1
    assert len(dst.w_hh[...].sharding.device_set) == ndev
    if ndev == 8:
        assert dst.w_hh[...].sharding.spec == P(None, "data")
        mu = got.opt_state[1][0].mu
        assert len(jax.tree.leaves(mu)[0].sharding.device_set) == 8


def shd_spec(x):
    from jrnn._src.sharding import fsdp_spec

    return fsdp_spec(x.shape, 8, min_size=1)


def test_fit_state_saved_on_8_devices_resumes_on_1(tmp_path):
    class Lin(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8) / 100)

    def loss_fn(model, batch, key, carry):
        return jnp.mean((batch["x"] @ model.w[...]) ** 2), ({}, carry)

    def batches():
        for s in range(10):
            yield {"x": np.random.default_rng(s).normal(size=(8, 16)).astype(np.float32)}

    cfg = train.TrainConfig(
        steps=4,
        batch_size=8,
        log_every=1,
        eval_every=0,
        checkpoint_every=2,
        progress=False,
        plot=False,
        warmup_steps=1,
    )
    ref = Lin()
    train.fit(ref, loss_fn, batches(), cfg, mesh=train.make_mesh(jax.devices()[:1]))
    half = Lin()  # 2 steps on 8 devices, FSDP-sharded, then 2 more on 1 device
    train.fit(
        half, loss_fn, batches(), cfg.replace(steps=2), workdir=str(tmp_path), param_sharding="fsdp"
    )
    meta = json.load(open(tmp_path / "checkpoints" / "step_00000002" / "meta" / "metadata"))
    assert meta["step"] == 2 and meta["metadata"]["config"]["train"]["steps"] == 2
    done = Lin()
    res = train.fit(
        done,
        loss_fn,
        batches(),
        cfg,
        workdir=str(tmp_path),
        mesh=train.make_mesh(jax.devices()[:1]),
        allow_config_change=["steps"],
    )
    assert res.steps_done == 4 and len(done.w[...].sharding.device_set) == 1
    np.testing.assert_allclose(np.asarray(done.w[...]), np.asarray(ref.w[...]), rtol=1e-6)


def test_keep_last_n(tmp_path):
    m = Model(0)
    for step in (1, 2, 3, 4, 5):
        train.save_checkpoint(tmp_path, m, None, step, keep=2)
    assert train.list_steps(tmp_path) == [4, 5]
    assert train.latest_step(tmp_path) == 5
    assert train.restore_checkpoint(tmp_path, Model(1), step=4).step == 4


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path):
    src = Model(0)
    train.save_checkpoint(tmp_path, src, None, 1)
    # A process killed mid-save leaves orbax's temporary folder behind: ignored by readers and
    # removed when the next run opens the folder.
    junk = tmp_path / "step_00000002.orbax-checkpoint-tmp-1234"
    os.makedirs(junk / "arrays")
    (junk / "arrays" / "manifest.ocdbt").write_bytes(b"garbage")
    assert train.list_steps(tmp_path) == [1]
    dst = Model(3)
    assert train.restore_checkpoint(tmp_path, dst).step == 1
    assert_bitwise_equal(state_of(dst), state_of(src))
    train.save_checkpoint(tmp_path, Model(5), None, 3)
    assert sorted(os.listdir(tmp_path)) == ["step_00000001", "step_00000003"]


def test_corrupt_latest_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    src = Model(0)
    train.save_checkpoint(tmp_path, src, None, 1)
    train.save_checkpoint(tmp_path, Model(5), None, 2)
    latest = tmp_path / "step_00000002"
    for root, _, files in os.walk(latest / "arrays"):  # a disk that lost the file contents
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(3)
    dst = Model(3)
    with pytest.warns(UserWarning, match=r"step_00000002 cannot be read.*previous"):
        got = train.restore_checkpoint(tmp_path, dst)
    assert got.step == 1
    assert_bitwise_equal(state_of(dst), state_of(src))


def test_mismatched_model_raises(tmp_path):
    train.save_checkpoint(tmp_path, Model(0), None, 1)

    class Other(Model):
        def __init__(self):
            super().__init__(0)
            self.w_hh = nnx.Param(jnp.zeros((32, 64)))

    with pytest.raises(ValueError, match=r"w_hh.*shape \(32, 128\).*expects shape \(32, 64\)"):
        train.restore_checkpoint(tmp_path, Other())

    class Bigger(Model):
        def __init__(self):
            super().__init__(0)
            self.extra = nnx.Param(jnp.zeros(3))

    with pytest.raises(ValueError, match=r"missing from the checkpoint \[\"state.params\['extra"):
        train.restore_checkpoint(tmp_path, Bigger())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.restore_checkpoint(tmp_path / "nothing", Model(0))


def test_no_pickle_in_files(tmp_path, monkeypatch):
    import pickle

    src = Model(0)
    d = train.save_checkpoint(tmp_path, src, None, 1)
    meta = json.load(open(os.path.join(d, "meta", "metadata")))  # plain JSON
    assert meta["step"] == 1 and meta["format"] == 2

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    dst = Model(1)
    train.restore_checkpoint(tmp_path, dst)
    assert_bitwise_equal(state_of(dst), state_of(src))
