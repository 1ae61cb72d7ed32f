"""The three task models: architecture checks against hand computations, training, decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jrnn
from jrnn.models import (
    ByteClassifier,
    CharLM,
    Sorter,
    char_lm_loss,
    classifier_loss,
    sorter_loss,
)

ATOL = 1e-5


def _linear(lin, x):
    return x @ lin.kernel[...] + lin.bias[...][None]


def test_classifier_reads_forward_at_lengths_minus_one():
    clf = ByteClassifier(num_classes=3, hidden_size=6, num_layers=1, embed_size=5, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 7), 0, 128)
    lengths = jnp.array([7, 4, 1], jnp.int32)
    cell = clf.rnn.layer.cell
    noisy = jnp.where(jnp.arange(7)[None] < lengths[:, None], tokens, 99)

    @jax.jit  # one program for the model and the hand computation
    def run(tokens, noisy, lengths):
        logits = clf(tokens, lengths)
        # by hand: each direction with jrnn.unroll, the backward one length-aware reversed
        first = clf.rnn.params_tree().first
        p_f, p_b = (jax.tree.map(lambda a, d=d: a[d], first) for d in (0, 1))
        _, y_f = jrnn.unroll(cell, p_f, tokens, lengths=lengths)
        _, y_b = jrnn.unroll(cell, p_b, tokens, lengths=lengths, reverse=True)
        f = jnp.stack([y_f[b, lengths[b] - 1] for b in range(3)])
        g = y_b[:, 0]
        want = _linear(clf.classifier, _linear(clf.proj_fwd, f) + _linear(clf.proj_bwd, g))
        return logits, want, clf(noisy, lengths)

    logits, want, from_noisy = run(tokens, noisy, lengths)
    np.testing.assert_allclose(logits, want, atol=ATOL)
    np.testing.assert_allclose(from_noisy, logits, atol=ATOL)  # padding values do not matter
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 128\)"):
        clf(np.full((1, 3), 200, np.int32))


def _one_step(model, loss_fn, batch):
    """Two jitted Adam steps on a fixed batch; returns the loss before and after the first."""
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, batch):
        def f(m):
            loss, (metrics, _) = loss_fn(m, batch, None, None)
            return loss, metrics

        (loss, metrics), grads = nnx.value_and_grad(f, has_aux=True)(model)
        with jax.numpy_dtype_promotion("standard"):
            opt.update(model, grads)
        return loss, metrics

    l0, m0 = step(model, opt, batch)
    l1, _ = step(model, opt, batch)
    assert np.isfinite(float(l0)) and float(l1) < float(l0)
    np.testing.assert_allclose(m0["loss"], l0)
    return m0


def test_train_step_lowers_loss_classifier():
    clf = ByteClassifier(num_classes=4, hidden_size=8, num_layers=1, cell="gru", rngs=nnx.Rngs(0))
    batch = {
        "tokens": jax.random.randint(jax.random.key(1), (4, 8), 0, 128),
        "lengths": jnp.array([8, 5, 3, 8], jnp.int32),
        "labels": jnp.array([0, 1, 2, 3], jnp.int32),
        "mask": jnp.array([True, True, True, False]),
    }
    m = _one_step(clf, classifier_loss, batch)
    assert float(m["count"]) == 3.0 and float(m["tokens"]) == 32.0


def test_train_step_lowers_loss_char_lm_and_carry_threading():
    lm = CharLM(hidden_size=8, num_layers=2, rngs=nnx.Rngs(0))
    stream = jax.random.randint(jax.random.key(1), (2, 13), 0, 128)

    @jax.jit
    def halves(stream):
        # truncated BPTT: two halves with the carry threaded == the whole sequence at once
        whole, c_whole = lm(stream[:, :12])
        batch = {"inputs": stream[:, :6], "targets": stream[:, 1:7]}
        _, (_, carry) = char_lm_loss(lm, batch, None)
        second, c_second = lm(stream[:, 6:12], carry)
        return whole, c_whole, second, c_second

    whole, c_whole, second, c_second = halves(stream)
    np.testing.assert_allclose(second, whole[:, 6:], atol=ATOL)
    for a, b in zip(jax.tree.leaves(c_second), jax.tree.leaves(c_whole), strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    small = CharLM(hidden_size=8, num_layers=1, rngs=nnx.Rngs(0))
    _one_step(small, char_lm_loss, {"inputs": stream[:, :12], "targets": stream[:, 1:]})


@pytest.mark.parametrize("attention", [False, True])
def test_train_step_lowers_loss_sorter(attention):
    s = Sorter(vocab_size=10, hidden_size=8, num_layers=1, attention=attention, rngs=nnx.Rngs(0))
    src = jax.random.randint(jax.random.key(1), (4, 6), 0, 10)
    batch = {"src": src, "tgt": jnp.sort(src, axis=1), "lengths": jnp.array([6, 4, 2, 6])}
    m = _one_step(s, sorter_loss, batch)
    assert float(m["count"]) == 18.0


def test_dropout_only_with_key_in_train_mode():
    lm = CharLM(hidden_size=8, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    batch = {"inputs": jnp.ones((2, 5), jnp.int32), "targets": jnp.ones((2, 5), jnp.int32)}
    graphdef, state = nnx.split(lm)

    @jax.jit
    def run(state, k1, k2):
        m = nnx.merge(graphdef, state)
        out = [char_lm_loss(m, batch, k)[0] for k in (None, k1, k2)]
        m.eval()
        return out + [char_lm_loss(m, batch, k1)[0]]

    l_none, l_a, l_b, l_eval = run(state, jax.random.key(1), jax.random.key(2))
    assert float(l_a) != float(l_none) and float(l_a) != float(l_b)
    assert float(l_eval) == pytest.approx(float(l_none), abs=1e-6)


def test_bf16_compute_close_to_float32():
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 128)
    f32 = CharLM(hidden_size=16, num_layers=2, rngs=nnx.Rngs(0))
    bf16 = CharLM(hidden_size=16, num_layers=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    (a, _), (b, cb) = jax.jit(lambda t: (f32(t), bf16(t)))(tokens)
    assert b.dtype == jnp.float32 and all(x.dtype == jnp.float32 for x in jax.tree.leaves(cb))
    assert float(jnp.abs(a - b).max()) < 0.05 and float(jnp.abs(a - b).max()) > 0


def test_greedy_and_beam_search():
    model = Sorter(vocab_size=8, hidden_size=12, num_layers=1, rngs=nnx.Rngs(3))
    src = jax.random.randint(jax.random.key(4), (6, 5), 0, 8)
    teacher_forced = jax.jit(lambda src, seq: model(src, model.teacher_inputs(seq)))

    def model_score(seq):
        logp = jax.nn.log_softmax(teacher_forced(src, seq), -1)
        return np.asarray(jnp.take_along_axis(logp, seq[..., None], -1)[..., 0].sum(-1))

    g, gs = model.decode(src, return_scores=True)
    b1, b1s = model.decode(src, method="beam", beam_width=1, return_scores=True)
    seq, bs = model.decode(src, method="beam", beam_width=4, return_scores=True)
    # greedy == beam search of width 1
    np.testing.assert_array_equal(g, b1)
    np.testing.assert_allclose(gs, b1s, atol=ATOL)
    # greedy is the argmax of the teacher-forced logits on its own output
    np.testing.assert_array_equal(jnp.argmax(teacher_forced(src, g), -1), g)
    # the decoders' score bookkeeping equals the model's log-probability of their outputs
    np.testing.assert_allclose(gs, model_score(g), atol=1e-4)
    np.testing.assert_allclose(bs, model_score(seq), atol=1e-4)
    # the beam of width 4 scores at least as well as greedy, and better somewhere
    assert np.all(np.asarray(bs) >= np.asarray(gs) - 1e-5)
    assert np.any(np.asarray(bs) > np.asarray(gs) + 1e-4)


def test_beam_finds_the_best_sequence_on_a_tiny_space():
    model = Sorter(vocab_size=3, hidden_size=6, num_layers=1, rngs=nnx.Rngs(5))
    src = jnp.array([[2, 0, 1], [1, 1, 0]], jnp.int32)
    seqs = jnp.array(np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3))
    log_prob = jax.jit(
        jax.vmap(lambda s: model.sequence_log_prob(src, jnp.broadcast_to(s, (2, 3))))
    )
    scores = log_prob(seqs)  # [27, 2]: every possible output
    # width 9 = vocab * (length - 1) keeps every prefix: exhaustive on 3 steps
    best, best_score = model.decode(src, method="beam", beam_width=9, return_scores=True)
    np.testing.assert_allclose(best_score, scores.max(0), atol=1e-5)
    np.testing.assert_array_equal(best, seqs[jnp.argmax(scores, 0)])


def test_sorter_variants():
    src = jnp.array([[5, 1, 3, 0, 0], [2, 7, 4, 6, 1]], jnp.int32)
    lengths = jnp.array([3, 5], jnp.int32)
    tgt_in = jnp.array([[8, 1, 3, 5, 0], [8, 1, 2, 4, 6]], jnp.int32)
    noisy = src.at[0, 3:].set(7)  # padding of row 0 changed: encoder and attention ignore it
    att = Sorter(vocab_size=8, hidden_size=8, num_layers=2, attention=True, rngs=nnx.Rngs(0))
    zeros = Sorter(
        vocab_size=8, hidden_size=8, num_layers=2, decoder_input="zeros", rngs=nnx.Rngs(0)
    )

    @jax.jit
    def run(src, noisy, tgt_in):
        return (
            att(src, tgt_in, lengths),
            att(noisy, tgt_in, lengths),
            zeros(src, tgt_in),
            zeros(src, jnp.zeros_like(tgt_in)),
        )

    a, a_noisy, z1, z2 = run(src, noisy, tgt_in)
    np.testing.assert_allclose(a_noisy, a, atol=ATOL)
    np.testing.assert_allclose(z1, z2, atol=ATOL)  # the lecture's decoder ignores tgt_in
    out = att.decode(src, lengths, method="beam", beam_width=3)
    assert out.shape == (2, 5) and int(jnp.abs(out[0, 3:]).sum()) == 0
    assert zeros.bos_id == 8
    with pytest.raises(ValueError, match="decoder_input"):
        Sorter(vocab_size=8, hidden_size=8, decoder_input="ones", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="method"):
        att.decode(src, method="sample")
    with pytest.raises(ValueError, match="beam_width"):
        att.decode(src, method="beam", beam_width=0)


@pytest.mark.parametrize("cell", ["elman", "seed_rnn"])
def test_cells_by_name(cell):
    clf = ByteClassifier(num_classes=2, hidden_size=6, num_layers=1, cell=cell, rngs=nnx.Rngs(0))
    out = jax.jit(clf)(jnp.ones((2, 4), jnp.int32), jnp.array([4, 2], jnp.int32))
    assert out.shape == (2, 2) and bool(jnp.isfinite(out).all())


def test_byte_classifier_sequence_features_and_head_match_the_call():
    import numpy as np
    from flax import nnx

    from jrnn.models import ByteClassifier

    clf = ByteClassifier(num_classes=3, hidden_size=6, num_layers=2, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).integers(1, 128, size=(3, 9)).astype(np.int32)
    lengths = np.array([9, 4, 1], np.int32)
    ys, fwd, bwd = clf.sequence_features(x, lengths, deterministic=True)
    ys = np.asarray(ys)
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(np.asarray(fwd)[i], ys[i, n - 1, :6])
        np.testing.assert_array_equal(np.asarray(bwd)[i], ys[i, 0, 6:])
    np.testing.assert_allclose(
        np.asarray(clf.head(fwd, bwd)), np.asarray(clf(x, lengths, deterministic=True)), rtol=1e-6
    )
    # head() is linear in the summed projections (the lecture's head has no activation).
    w = np.asarray(clf.classifier.kernel[...])
    expected = (
        np.asarray(fwd) @ np.asarray(clf.proj_fwd.kernel[...])
        + np.asarray(clf.proj_fwd.bias[...])
        + np.asarray(bwd) @ np.asarray(clf.proj_bwd.kernel[...])
        + np.asarray(clf.proj_bwd.bias[...])
    ) @ w + np.asarray(clf.classifier.bias[...])
    np.testing.assert_allclose(np.asarray(clf.head(fwd, bwd)), expected, rtol=1e-5, atol=1e-6)
