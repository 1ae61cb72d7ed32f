"""Text generation: filters, sampling, prefill + scan against a step-by-step loop, compile reuse."""

import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jrnn._src import generate as gen
from jrnn.models import CharLM
from jrnn.models import char_lm as char_lm_lib

LENGTH = 12  # every model-level test uses this length and 2 samples: one compiled program


@pytest.fixture(scope="module")
def lm():
    return CharLM(hidden_size=8, num_layers=2, rngs=nnx.Rngs(0))


def _np_filter(logits, k, p):
    """float64 reference of filter_logits: keep-set per row."""
    keep = np.ones_like(logits, bool)
    order = np.argsort(-logits, axis=-1, kind="stable")
    for r in range(logits.shape[0]):
        row = logits[r]
        if 0 < k < row.size:
            keep[r] = row >= row[order[r, k - 1]]
        if p < 1:
            z = np.where(keep[r], row, -np.inf)
            probs = np.exp(z - z.max())
            probs /= probs.sum()
            srt = probs[order[r]]
            before = np.cumsum(srt) - srt
            n = max(int(np.sum(before < p)), 1)
            keep[r] &= row >= row[order[r, n - 1]]
    return keep


@pytest.mark.parametrize("k,p", [(0, 1.0), (1, 1.0), (5, 1.0), (0, 0.5), (0, 0.9), (4, 0.6)])
def test_filter_logits_matches_numpy(k, p):
    logits = np.asarray(jax.random.normal(jax.random.key(k), (6, 30)) * 2.0)
    got = np.asarray(gen.filter_logits(jnp.asarray(logits), k, p))
    keep = _np_filter(logits.astype(np.float64), k, p)
    np.testing.assert_array_equal(np.isfinite(got), keep)
    np.testing.assert_array_equal(got[keep], logits[keep].astype(np.float32))


@jax.jit
def _draws_jit(keys, logits, temperature, top_k, top_p):
    return jax.vmap(lambda k: gen.sample_token(k, logits, temperature, top_k, top_p))(keys)


def _draws(logits, n, temperature=1.0, top_k=0, top_p=1.0):
    """n independent draws per row, ``[n, b]`` (the knobs are traced: one compile per n)."""
    keys = jax.random.split(jax.random.key(3), n)
    return np.asarray(
        _draws_jit(keys, logits, np.float32(temperature), np.int32(top_k), np.float32(top_p))
    )


def test_top_k_and_top_p_never_sample_outside():
    logits = jax.random.normal(jax.random.key(1), (3, 16)) * 1.5
    ln = np.asarray(logits, np.float64)
    top3 = np.argsort(-ln, axis=-1)[:, :3]
    draws = _draws(logits, 3000, temperature=1.0, top_k=3)
    for r in range(3):
        assert set(draws[:, r]) == set(top3[r])  # inside the top 3, and all of them occur
    nucleus = _np_filter(ln, 0, 0.7)
    draws = _draws(logits, 3000, temperature=1.0, top_p=0.7)
    for r in range(3):
        assert set(draws[:, r]) == set(np.flatnonzero(nucleus[r]))
    # without filters the empirical frequencies follow softmax(logits / T)
    t = 0.7
    draws = _draws(logits, 3000, temperature=t)
    probs = np.exp(ln[0] / t) / np.exp(ln[0] / t).sum()
    freq = np.bincount(draws[:, 0], minlength=16) / 3000
    np.testing.assert_allclose(freq, probs, atol=0.04)


def test_temperature_zero_is_argmax():
    logits = jax.random.normal(jax.random.key(2), (3, 16)) * 3.0
    greedy = np.argmax(np.asarray(logits), -1)
    np.testing.assert_array_equal(_draws(logits, 3000, temperature=0.0), np.tile(greedy, (3000, 1)))
    np.testing.assert_array_equal(
        _draws(logits, 3000, temperature=1e-4), np.tile(greedy, (3000, 1))
    )


def test_helpers():
    assert [gen.bucket_length(n) for n in (1, 16, 17, 64, 65)] == [16, 16, 32, 64, 128]
    toks, lens = gen.encode_prompts(["ab£", ""], 2)  # £ -> '#', '' -> '\n'
    assert toks.shape == (4, 16) and lens.tolist() == [3, 3, 1, 1]
    assert bytes(toks[0, :3].astype(np.uint8)).decode() == "ab#" and toks[2, 0] == 10
    table = gen.printable_feedback(128)
    for i in range(128):
        assert table[i] == (i if chr(i) in string.printable else ord("_"))
    assert gen.decode_texts(np.array([[72, 7, 33, 72]]), stop="!") == ["H_!"]


def _reference_loop(lm, prompts, key, length, temperature, top_k, top_p):
    """Step by step: each prompt fed one character at a time, then one sampling step per char."""
    graphdef, state = nnx.split(lm)

    @jax.jit
    def step(state, tok, carries):
        m = nnx.merge(graphdef, state)
        logits, carries = m(tok[:, None], carries, deterministic=True)
        return logits[:, 0], carries

    rows = []
    for p in prompts:
        carries = lm.initial_carries(1)
        for ch in p.encode():
            logits, carries = step(state, jnp.array([ch], jnp.int32), carries)
        rows.append((logits, carries))
    logits = jnp.concatenate([r[0] for r in rows])
    carries = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *[r[1] for r in rows])
    feedback = jnp.asarray(gen.printable_feedback(128))
    out = []
    for k in jax.random.split(key, length):
        tok = gen.sample_token(k, logits, temperature, top_k, top_p)
        tok = feedback[tok]
        out.append(np.asarray(tok))
        logits, carries = step(state, tok, carries)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.8, 20, 0.9)])
def test_prefill_scan_equals_step_by_step(lm, temperature, top_k, top_p):
    prompts = ["ROMEO: ", "O"]  # different lengths: masking in the prefill
    toks, lens = gen.encode_prompts(prompts, 1)
    key = jax.random.key(11)
    got = lm.sample(
        toks,
        lens,
        key=key,
        length=LENGTH,
        temperature=temperature,
        top_k=top_k or None,
        top_p=top_p,
    )
    want = _reference_loop(lm, prompts, key, LENGTH, temperature, top_k, top_p)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_generate_deterministic_per_key_and_no_recompile(lm):
    kw = dict(length=LENGTH, num_samples=2, temperature=1.0)
    a = lm.generate("ROMEO:", key=jax.random.key(0), **kw)
    size = char_lm_lib._sample_jit._cache_size()
    b = lm.generate("ROMEO:", key=jax.random.key(0), **kw)
    c = lm.generate("ROMEO:", key=jax.random.key(1), **kw)
    assert a == b and a != c
    assert len(a) == 2 and all(len(t) == LENGTH for t in a)
    assert all(ch in string.printable for t in a + c for ch in t)
    # another prompt of the same bucket, and other knob values: no new compilation
    lm.generate("JULIET, my love", key=jax.random.key(2), **kw)
    lm.generate("X", key=jax.random.key(2), length=LENGTH, num_samples=2, top_k=3, top_p=0.5)
    assert char_lm_lib._sample_jit._cache_size() == size
    # a longer prompt falls in the next bucket: exactly one new program
    lm.generate("x" * 20, key=jax.random.key(2), **kw)
    assert char_lm_lib._sample_jit._cache_size() == size + 1


def test_generate_options(lm):
    kw = dict(length=LENGTH, num_samples=2)
    greedy = lm.generate(["ab", "cd"], key=jax.random.key(0), temperature=0.0, **kw)
    top1 = lm.generate(["ab", "cd"], key=jax.random.key(5), temperature=1.0, top_k=1, **kw)
    assert greedy == top1 and len(greedy) == 4
    assert greedy[0] == greedy[1]  # greedy: both samples of a prompt agree
    full = lm.generate("ab", key=jax.random.key(3), temperature=1.0, **kw)
    stop = full[0][3]
    cut = lm.generate("ab", key=jax.random.key(3), temperature=1.0, stop=stop, **kw)
    assert cut[0] == full[0][: full[0].index(stop) + 1]
    with_prompt = lm.generate(
        "ab", key=jax.random.key(3), temperature=1.0, include_prompt=True, **kw
    )
    assert with_prompt == ["ab" + t for t in full]
    with pytest.raises(ValueError, match="temperature"):
        lm.generate("a", key=jax.random.key(0), temperature=-1.0, **kw)
    with pytest.raises(ValueError, match="top_p"):
        lm.generate("a", key=jax.random.key(0), top_p=0.0, **kw)
    with pytest.raises(ValueError, match="length"):
        lm.generate("a", key=jax.random.key(0), length=0)
