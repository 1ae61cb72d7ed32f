"""The core contract on bad and unusual inputs: padding garbage, float64, key forms, factory
arguments, mismatched params. Each test failed before the fix it guards (docs/reliability.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src import backends
from jrnn._src.cells.linear import min_gru, min_lstm

B, T, H, I, VOCAB = 2, 5, 4, 3, 6
LENGTHS = np.array([5, 3], np.int32)
FACTORIES = {
    "lstm": jrnn.lstm,
    "gru": jrnn.gru,
    "elman": jrnn.elman,
    "seed_rnn": jrnn.seed_rnn,
    "min_gru": min_gru,
    "min_lstm": min_lstm,
}
BACKENDS = ("reference", "xla", "fused", "associative", "pallas")


def _supported(backend, cell, **features):
    if backend == "reference":
        return True
    return backends.available(backend) and backends.get(backend).supports(cell, **features) is None


def _loss(params, xs, cell, backend, reverse):
    carry, ys = jrnn.unroll(cell, params, xs, lengths=LENGTHS, backend=backend, reverse=reverse)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))


_loss_and_grad = jax.jit(jax.value_and_grad(_loss), static_argnums=(2, 3, 4))


def _grads(cell, params, xs, backend, reverse=False):
    return _loss_and_grad(params, xs, cell, backend, reverse)


def _features(garbage):
    xs = np.array(jax.random.normal(jax.random.key(1), (B, T, I)))
    xs[1, 3:] = garbage
    return jnp.asarray(xs)


def _tokens(pad):
    toks = np.array([[0, 1, 2, 5, 4], [1, 2, 0, 0, 0]], np.int32)
    toks[1, 3:] = pad
    return jnp.asarray(toks)


# ----------------------------------------------------------------------------- (a) padding


@pytest.mark.parametrize(
    "name",
    # gru (reference, xla, fused, pallas) and min_gru (associative) cover every backend in
    # the quick tier; the other families run in the slow tier.
    ["gru", "min_gru"]
    + [pytest.param(n, marks=pytest.mark.slow) for n in ("lstm", "elman", "seed_rnn", "min_lstm")],
)
def test_padding_garbage_gives_reference_gradients_on_every_backend(name):
    """NaN/inf features and PAD ids -1 / vocab in padding: finite, reference-equal grads."""
    cell = FACTORIES[name](H)
    size = {"features": I, "tokens": VOCAB}
    for kind, clean, dirty_inputs in (
        ("features", _features(0.0), [_features(np.nan), _features(np.inf)]),
        ("tokens", _tokens(0), [_tokens(-1), _tokens(VOCAB)]),
    ):
        params = cell.init(jax.random.key(0), size[kind])
        want_loss, want = _grads(cell, params, clean, "reference")
        assert np.isfinite(float(want_loss))
        for backend in BACKENDS:
            if not _supported(backend, cell, tokens=kind == "tokens", lengths=True):
                continue
            for xs in dirty_inputs:
                got_loss, got = _grads(cell, params, xs, backend)
                np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, err_msg=backend)
                for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                    assert np.isfinite(np.asarray(g)).all(), (name, backend, kind)
                    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=backend)


def test_padding_garbage_reverse_and_time_checkpointing():
    """The same with reverse=True and with remat chunks (padding crosses chunk borders)."""
    cell = jrnn.gru(H)
    params = cell.init(jax.random.key(0), I)
    want = _grads(cell, params, _features(0.0), "reference", reverse=True)[1]
    got = _grads(cell, params, _features(np.nan), "xla", reverse=True)[1]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)

    def loss(p, xs):
        ys = jrnn.unroll(cell, p, xs, lengths=LENGTHS, remat=2)[1]
        return jnp.sum(jnp.sin(ys))

    g_nan = jax.grad(loss)(params, _features(np.nan))
    g_zero = jax.grad(loss)(params, _features(0.0))
    for g, w in zip(jax.tree.leaves(g_nan), jax.tree.leaves(g_zero), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_padding_garbage(bidirectional):
    """jrnn.rnn stacks (2 layers, bidirectional) with NaN padding: grads equal the clean ones."""
    net = jrnn.rnn(jrnn.lstm(H), num_layers=2, bidirectional=bidirectional)
    params = net.init(jax.random.key(0), I)

    def loss(p, xs, backend):
        ys, carries = net.apply(p, xs, lengths=LENGTHS, backend=backend)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carries))

    grad = jax.jit(jax.grad(loss), static_argnums=2)
    for backend in ("xla", "fused"):
        want = grad(params, _features(0.0), backend)
        got = grad(params, _features(np.nan), backend)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert np.isfinite(np.asarray(g)).all(), backend
            np.testing.assert_array_equal(g, w, err_msg=backend)


def test_resets_in_padding_do_not_move_the_frozen_carry():
    """A reset flag at a padded step leaves the final carry at the last valid step's carry."""
    cell = jrnn.gru(H)
    params = cell.init(jax.random.key(0), I)
    xs = _features(0.0)
    resets = np.zeros((B, T), bool)
    resets[1, 4] = True  # padding of sequence 1 (length 3)
    for reverse in (False, True):
        want, ys_want = jrnn.unroll(cell, params, xs, lengths=LENGTHS, reverse=reverse)
        for backend in ("reference", "xla", "fused"):
            got, ys = jrnn.unroll(
                cell, params, xs, lengths=LENGTHS, resets=resets, reverse=reverse, backend=backend
            )
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=backend)
            np.testing.assert_allclose(ys, ys_want, rtol=1e-5, atol=1e-6, err_msg=backend)


def test_out_of_range_token_at_a_valid_step_is_nan():
    """Garbage is only forgiven in padding: an out-of-range id at a valid step gives NaN."""
    cell = jrnn.gru(H)
    params = cell.init(jax.random.key(0), VOCAB)
    toks = _tokens(-1)
    toks = toks.at[0, 1].set(VOCAB)  # valid step of sequence 0
    _, ys = jrnn.unroll(cell, params, toks, lengths=LENGTHS, backend="xla")
    assert np.isnan(np.asarray(ys[0, 1:])).all()
    assert np.isfinite(np.asarray(ys[0, 0])).all() and np.isfinite(np.asarray(ys[1])).all()


# ----------------------------------------------------------------------------- (b) float64


@pytest.mark.parametrize(
    "name",
    ["lstm", "min_gru", "min_lstm"]
    + [pytest.param(n, marks=pytest.mark.slow) for n in ("elman", "gru", "seed_rnn")],
)
def test_float64_cells_carry_float64(name):
    """dtype=float64 (under x64): the carry, outputs and grads are float64 on every backend."""
    with jax.enable_x64(True):
        cell = FACTORIES[name](H, dtype=jnp.float64, param_dtype=jnp.float64)
        params = cell.init(jax.random.key(0), I)
        xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
        assert all(c.dtype == jnp.float64 for c in jax.tree.leaves(cell.initial_carry(B)))
        want = None
        for backend in ("reference", "xla", "fused", "associative"):
            if not _supported(backend, cell, lengths=True):
                continue
            carry, ys = jrnn.unroll(cell, params, xs, lengths=LENGTHS, backend=backend)
            assert ys.dtype == jnp.float64, backend
            assert all(c.dtype == jnp.float64 for c in jax.tree.leaves(carry)), backend
            if want is None:
                want = ys
            np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-12, err_msg=backend)


# ----------------------------------------------------------------------------- (c) keys


def test_legacy_and_typed_keys_give_the_same_dropout():
    """PRNGKey(s) and key(s) both work in a 2-layer stack with every dropout and give equal ys."""
    net = jrnn.rnn(
        jrnn.lstm(H),
        num_layers=2,
        dropout=0.5,
        input_dropout=0.2,
        recurrent_dropout=0.3,
        zoneout=0.1,
    )
    params = net.init(jax.random.PRNGKey(0), I)
    np.testing.assert_array_equal(params.first.w_ih, net.init(jax.random.key(0), I).first.w_ih)
    xs = _features(0.0)
    run = jax.jit(lambda p, k: net.apply(p, xs, lengths=LENGTHS, key=k)[0])
    ys_legacy = run(params, jax.random.PRNGKey(3))
    ys_typed = run(params, jax.random.key(3))
    np.testing.assert_array_equal(ys_legacy, ys_typed)
    assert not np.allclose(ys_typed, run(params, jax.random.key(4)))  # dropout did act
    with pytest.raises(TypeError, match="key must be a jax.random.key"):
        net.apply(params, xs, key=3)
    with pytest.raises(ValueError, match="key must be one key"):
        net.apply(params, xs, key=jax.random.split(jax.random.key(0)))


def test_flax_rnn_takes_legacy_keys():
    nnx = pytest.importorskip("flax.nnx")
    import jrnn.flax

    m = jrnn.flax.RNN(jrnn.gru(H), I, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    xs = _features(0.0)
    a, _ = m(xs, key=jax.random.PRNGKey(1))
    b, _ = m(xs, key=jax.random.key(1))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- (d) factories


def test_factories_validate_before_the_cache():
    jrnn.elman(7)  # now cached
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int, got 7\.0"):
        jrnn.elman(7.0)
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got True"):
        jrnn.gru(True)
    jrnn.lstm(8, peepholes=True)
    with pytest.raises(TypeError, match="peepholes must be a bool, got 1"):
        jrnn.lstm(8, peepholes=1)
    with pytest.raises(TypeError, match="forget_bias must be a float, got '1'"):
        jrnn.lstm(8, forget_bias="1")
    with pytest.raises(ValueError, match="forget_bias must be finite"):
        jrnn.lstm(8, forget_bias=float("nan"))
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        jrnn.gru(8, dtype=None)
    with pytest.raises(TypeError, match="param_dtype must be a floating dtype"):
        min_gru(8, param_dtype=jnp.int32)
    with pytest.raises(ValueError, match="output_size must be a positive int"):
        jrnn.seed_rnn(8, 0)
    with pytest.raises(TypeError, match="positive must be a bool"):
        min_lstm(8, positive="yes")
    with pytest.raises(ValueError, match="activation must be one of"):
        jrnn.elman(8, activation="sigmoid")


def test_defaults_spelled_out_give_the_same_cell():
    assert jrnn.gru(8) is jrnn.gru(8, dtype="float32")
    assert jrnn.gru(8) is jrnn.gru(8, dtype=jnp.float32, param_dtype=np.dtype("float32"))
    assert jrnn.gru(np.int64(8)) is jrnn.gru(8, reset_after=np.bool_(True))
    assert jrnn.lstm(8, forget_bias=1) is jrnn.lstm(8)
    assert jrnn.seed_rnn(8) is jrnn.seed_rnn(8, None, init="default")
    assert min_gru(8, gate_bias=0) is min_gru(8)
    assert jrnn.lstm(8) is not jrnn.lstm(8, forget_bias=0.0)


# ----------------------------------------------------------------------------- (e) params


def test_params_of_another_cell_name_params_and_the_expected_cell():
    lstm, gru = jrnn.lstm(8), jrnn.gru(8)
    p_gru = gru.init(jax.random.key(0), 4)
    xs = jnp.ones((2, 3, 4))
    msg = (
        r"params: got GRUParams\(w_ih \[4, 24\], w_hh \[8, 24\], b_ih \[24\], b_hh \[24\]\) "
        r"but the cell lstm\(8\) expects LSTMParams\(w_ih \[4, 32\], w_hh \[8, 32\], b \[32\]\)"
    )
    with pytest.raises(ValueError, match=msg):
        jrnn.unroll(lstm, p_gru, xs)
    with pytest.raises(ValueError, match=msg):
        jax.jit(lambda p: jrnn.unroll(lstm, p, xs))(p_gru)  # at trace time, before XLA
    with pytest.raises(ValueError, match=msg):
        lstm.step(p_gru, lstm.initial_carry(2), xs[:, 0])
    p16 = jrnn.lstm(16).init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"w_hh \[16, 64\].*lstm\(8\) expects"):
        jrnn.unroll(lstm, p16, xs)
    with pytest.raises(ValueError, match=r"lstm\(8, peepholes=True\) expects .*w_peep \[3, 8\]"):
        jrnn.unroll(jrnn.lstm(8, peepholes=True), lstm.init(jax.random.key(0), 4), xs)
    with pytest.raises(ValueError, match=r"got \{'w': \[4, 32\]\}.*w_ih \[input_size, 32\]"):
        jrnn.unroll(lstm, {"w": jnp.ones((4, 32))}, xs)
    bad_dtype = lstm.init(jax.random.key(0), 4)._replace(b=jnp.zeros(32, jnp.int32))
    with pytest.raises(TypeError, match="params leaves must be float"):
        jrnn.unroll(lstm, bad_dtype, xs)


def test_step_checks_the_carry():
    cell = jrnn.lstm(8)
    params = cell.init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"carry: got \[2, 8\] but the cell lstm\(8\) carries"):
        cell.step(params, jnp.zeros((2, 8)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="carry: got"):
        cell.step(params, (jnp.zeros((2, 5)), jnp.zeros((2, 8))), jnp.ones((2, 4)))
    with pytest.raises(TypeError, match="x must be"):
        cell.step(params, cell.initial_carry(2), None)


def test_layer_params_of_another_depth_or_cell():
    net = jrnn.rnn(jrnn.lstm(8), num_layers=2)
    xs = jnp.ones((2, 3, 4))
    deeper = jrnn.rnn(jrnn.lstm(8), num_layers=3).init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"params: got RNNParams.*rnn\(lstm\(8\), num_layers=2\)"):
        net.apply(deeper, xs)
    other = jrnn.rnn(jrnn.gru(8), num_layers=2).init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"got RNNParams\(first=GRUParams"):
        net.apply(other, xs)
    bi = jrnn.rnn(jrnn.lstm(8), num_layers=2, bidirectional=True).init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match="params: got RNNParams"):
        net.apply(bi, xs)
    with pytest.raises(TypeError, match="params: got LSTMParams"):
        net.apply(jrnn.lstm(8).init(jax.random.key(0), 4), xs)


def test_bad_batch_shapes_and_xs():
    cell = jrnn.gru(4)
    params = cell.init(jax.random.key(0), 3)
    for bad in (-1, (2, -1)):
        with pytest.raises(ValueError, match="batch_shape must be an int or a tuple of ints"):
            cell.initial_carry(bad)
    for bad in (2.5, (2, 1.0), "2"):
        with pytest.raises(TypeError, match="batch_shape must be an int or a tuple of ints"):
            cell.initial_carry(bad)
    with pytest.raises(TypeError, match="xs must be float features .* got None"):
        jrnn.unroll(cell, params, None)
    with pytest.raises(TypeError, match="xs must be .* dtype bool"):
        jrnn.unroll(cell, params, jnp.ones((2, 3, 3), bool))
    with pytest.raises(ValueError, match=r"xs must have shape \[batch..., time, input_size\]"):
        jrnn.unroll(cell, params, jnp.ones(3))
    with pytest.raises(ValueError, match="xs has input_size 5 but params expect 3"):
        jrnn.unroll(cell, params, jnp.ones((2, 3, 5)))


def test_dropout_without_a_key_is_explicit():
    """key=None stays evaluation (DESIGN); deterministic=False without a key raises."""
    net = jrnn.rnn(jrnn.gru(4), num_layers=2, dropout=0.5)
    params = net.init(jax.random.key(0), 3)
    xs = _features(0.0)
    ys_eval, _ = net.apply(params, xs)
    with pytest.raises(ValueError, match="deterministic=False .* key is None"):
        net.apply(params, xs, deterministic=False)
    ys_det, _ = net.apply(params, xs, key=jax.random.key(1), deterministic=True)
    np.testing.assert_array_equal(ys_det, ys_eval)
    ys_train, _ = net.apply(params, xs, key=jax.random.key(1), deterministic=False)
    assert not np.allclose(ys_train, ys_eval)
    with pytest.raises(TypeError, match="deterministic must be a bool"):
        net.apply(params, xs, deterministic="no")
    # A stack without randomness has nothing to draw: deterministic=False needs no key.
    plain = jrnn.rnn(jrnn.gru(4), num_layers=2)
    p2 = plain.init(jax.random.key(0), 3)
    np.testing.assert_array_equal(
        plain.apply(p2, xs, deterministic=False)[0], plain.apply(p2, xs)[0]
    )


@pytest.mark.slow
def test_models_take_legacy_keys():
    """A task model with dropout: PRNGKey(s) and key(s) give the same logits and samples."""
    nnx = pytest.importorskip("flax.nnx")
    from jrnn.models import CharLM

    lm = CharLM(vocab_size=16, hidden_size=8, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.arange(12, dtype=np.int32).reshape(2, 6) % 16)
    a, _ = lm(tokens, key=jax.random.PRNGKey(2))
    b, _ = lm(tokens, key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
