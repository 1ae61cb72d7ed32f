"""jrnn.flax: the NNX wrappers equal the pure functions with the same params."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jrnn
import jrnn.flax as jflax

ATOL = 1e-6


def _batch(key, b=3, t=6, i=5):
    xs = jax.random.normal(key, (b, t, i), jnp.float32)
    return xs, jnp.array([6, 3, 1], jnp.int32)[:b]


def test_import_jrnn_does_not_import_flax():
    code = "import sys, jrnn; assert 'flax' not in sys.modules, 'flax imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("make", [lambda: jrnn.lstm(4), lambda: jrnn.gru(4), jrnn.seed_rnn])
def test_rnn_cell_equals_pure_step(make):
    cell = make(4) if make is jrnn.seed_rnn else make()
    m = jflax.RNNCell(cell, 5, rngs=nnx.Rngs(3))
    p = cell.init(jax.random.key(0), 5)
    m2 = jflax.RNNCell.from_params(cell, p)
    # from_params holds exactly the given params, as nnx.Param leaves with the same structure.
    assert jax.tree.structure(m2.params_tree()) == jax.tree.structure(p)
    for a, b in zip(jax.tree.leaves(m2.params_tree()), jax.tree.leaves(p), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(
        isinstance(v, nnx.Param)
        for v in jax.tree.leaves(m2.params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    )
    x = jax.random.normal(jax.random.key(1), (3, 5))
    carry = jax.tree.map(lambda a: a + 0.3, cell.initial_carry(3))
    for mod in (m, m2):
        got = mod(carry, x)
        want = cell.step(mod.params_tree(), carry, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, atol=ATOL)
    # the module's unroll equals jrnn.unroll, tokens included
    tokens = jnp.array([[0, 4, 2], [1, 1, 3]], jnp.int32)
    c1, y1 = m2.unroll(tokens, lengths=jnp.array([3, 2]))
    c2, y2 = jrnn.unroll(cell, p, tokens, lengths=jnp.array([3, 2]))
    np.testing.assert_allclose(y1, y2, atol=ATOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_equals_layer_apply(bidirectional):
    cell = jrnn.lstm(4)
    m = jflax.RNN(cell, 5, num_layers=3, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    layer = jrnn.rnn(cell, 3, bidirectional)
    xs, lengths = _batch(jax.random.key(2))
    carries = jax.tree.map(lambda a: a + 0.1, layer.initial_carries(3))
    p = layer.init(jax.random.key(9), 5)
    # from_params reads input size, depth and directions from the shapes
    m2 = jflax.RNN.from_params(cell, p)
    assert (m2.layer.num_layers, m2.layer.bidirectional, m2.input_size) == (3, bidirectional, 5)

    @jax.jit  # one program for all four runs
    def run(xs, carries, lengths):
        return (
            m(xs, carries, lengths=lengths),
            layer.apply(m.params_tree(), xs, carries, lengths=lengths),
            m2(xs, lengths=lengths),
            layer.apply(p, xs, lengths=lengths),
        )

    (ys, cs), (ys2, cs2), (ys3, _), (ys4, _) = run(xs, carries, lengths)
    np.testing.assert_allclose(ys, ys2, atol=ATOL)
    for a, b in zip(jax.tree.leaves(cs), jax.tree.leaves(cs2), strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    np.testing.assert_allclose(ys3, ys4, atol=ATOL)
    # params live as nnx.Param with the RNNParams field names as state paths
    state = nnx.state(m, nnx.Param)
    assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(m.params_tree()))
    assert {"first", "rest"} <= set(state["params"].keys())


def test_dropout_modes_and_keys():
    cell = jrnn.gru(6)
    m = jflax.RNN(cell, 5, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    layer = jrnn.rnn(cell, 2, dropout=0.5)
    xs, lengths = _batch(jax.random.key(1))
    key = jax.random.key(7)
    graphdef, state = nnx.split(m)

    @jax.jit
    def run(state, key):
        m = nnx.merge(graphdef, state)
        train = m(xs, lengths=lengths, key=key)[0]
        pure = layer.apply(m.params_tree(), xs, lengths=lengths, key=key)[0]
        pure_eval = layer.apply(m.params_tree(), xs, lengths=lengths)[0]
        a = m(xs, lengths=lengths)[0]  # no key: the module's dropout stream
        b = m(xs, lengths=lengths)[0]
        m.eval()
        ev = m(xs, lengths=lengths, key=key)[0]  # eval mode: the key is not used
        override = m(xs, lengths=lengths, key=key, deterministic=False)[0]
        return train, pure, pure_eval, a, b, ev, override

    train, pure, pure_eval, a, b, ev, override = run(state, key)
    # training mode (the default): explicit key == the pure function with that key
    np.testing.assert_allclose(train, pure, atol=ATOL)
    assert float(jnp.abs(train - pure_eval).max()) > 1e-3  # dropout changed something
    assert float(jnp.abs(a - b).max()) > 1e-3  # the stream gives a new mask each call
    np.testing.assert_allclose(ev, pure_eval, atol=ATOL)
    np.testing.assert_allclose(override, train, atol=ATOL)
    # mode switching on the module itself, and nnx.view
    m.eval()
    assert m.deterministic
    v = nnx.view(m, deterministic=False)
    assert not v.deterministic and m.deterministic
    m.train()
    assert not m.deterministic
    # no rngs and no key in training mode: a clear error (raised before any compute)
    m3 = jflax.RNN.from_params(cell, m.params_tree(), dropout=0.5)
    with pytest.raises(ValueError, match="key"):
        m3(xs)
    # carries hold no randomness: the structure of the zero carries
    cs = jax.eval_shape(lambda: m(xs, key=key)[1])
    assert jax.tree.structure(cs) == jax.tree.structure(m.initial_carries(3))


def test_optax_step_lowers_loss():
    m = jflax.RNN(jrnn.lstm(8), 5, rngs=nnx.Rngs(0))
    xs, lengths = _batch(jax.random.key(1))
    target = jax.random.normal(jax.random.key(2), (3, 6, 8))
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)

    def loss_fn(model):
        ys, _ = model(xs, lengths=lengths)
        return jnp.mean((ys - target) ** 2)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        with jax.numpy_dtype_promotion("standard"):
            opt.update(model, grads)
        return loss

    l0 = step(m, opt)
    l1 = step(m, opt)  # the loss after the first update
    assert float(l1) < float(l0)


def test_make_cell():
    assert jflax.make_cell("lstm", 8).name == "lstm"
    c = jflax.make_cell({"name": "lstm", "layer_norm": True}, 8, dtype=jnp.bfloat16)
    assert c.option("layer_norm") and c.option("dtype") == "bfloat16"
    cell = jrnn.gru(3)
    assert jflax.make_cell(cell, 99) is cell
    assert jflax.make_cell("seed_rnn", 4).hidden_size == 4
    with pytest.raises(ValueError, match="cell must be one of"):
        jflax.make_cell("transformer", 8)
    with pytest.raises(TypeError, match="cell must be"):
        jflax.make_cell(3, 8)
    for name in ("min_gru", "min_lstm"):
        if hasattr(jrnn, name):
            assert jflax.make_cell(name, 8).hidden_size == 8
        else:
            with pytest.raises(ValueError, match="not available"):
                jflax.make_cell(name, 8)


def test_bad_params_and_tokens():
    cell = jrnn.lstm(4)
    with pytest.raises(
        ValueError,
        match=r"params: got LSTMParams\(w_ih \[5, 16\].* but the cell lstm\(4\) with input_size 6 "
        r"expects LSTMParams\(w_ih \[6, 16\]",
    ):
        jflax.RNNCell(cell, 6, params=cell.init(jax.random.key(0), 5))
    layer_params = jrnn.rnn(cell, 3).init(jax.random.key(0), 5)
    with pytest.raises(ValueError, match=r"params: got RNNParams.*num_layers=2"):
        jflax.RNN(cell, 5, 2, params=layer_params)
    with pytest.raises(TypeError, match="RNNParams"):
        jflax.RNN(cell, 5, params=cell.init(jax.random.key(0), 5))
    with pytest.raises(ValueError, match="rngs"):
        jflax.RNN(cell, 5)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 128\)"):
        jflax.check_tokens(np.array([[1, 200]]), 128)
    with pytest.raises(TypeError, match="integer"):
        jflax.check_tokens(np.zeros((2, 3), np.float32), 128)
