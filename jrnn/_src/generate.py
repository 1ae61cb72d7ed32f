"""Autoregressive sampling from a recurrent model: one prefill, then one ``lax.scan``.

The model is seen through one function,
``apply_fn(tokens [b, t], carries | None, lengths [b] | None) -> (logits [b, t, v], carries)``,
whose carries are frozen after ``lengths`` (as :func:`jrnn.unroll` does). Generation is

1. *prefill*: one call over the prompts, right-padded to a common (bucketed) length ``p`` and
   masked by their lengths; the carries after each prompt's last character and the logits at
   ``lengths - 1`` are kept;
2. *sampling*: one ``lax.scan`` of ``length`` steps; step ``s`` draws the next token for every
   row with key ``keys[s]`` (``keys = jax.random.split(key, length)``) from the filtered
   distribution, maps it through ``feedback`` (e.g. non-printable -> ``'_'``), and feeds it back.

The filters (temperature, top-k, top-p) are traced scalars: changing them does not recompile.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def filter_logits(logits: Array, top_k: Any = 0, top_p: Any = 1.0) -> Array:
    """Sets the logits outside the top-k and the nucleus (top-p) to ``-inf``.

    Top-k keeps the ``k`` largest logits (ties with the k-th are kept too); ``k <= 0`` or
    ``k >= v`` keeps everything. Top-p then keeps, of the remaining distribution
    ``softmax(logits)`` sorted in decreasing order, every token whose preceding cumulative
    probability is below ``top_p``: the smallest prefix whose mass reaches ``top_p`` (always at
    least the most likely token); ``top_p >= 1`` keeps everything.

    Args:
      logits: ``[..., v]``.
      top_k: int scalar (may be traced).
      top_p: float scalar in ``(0, 1]`` (may be traced).

    Returns:
      ``[..., v]`` float32, ``-inf`` outside the kept set.

    Example:
      >>> import jax.numpy as jnp
      >>> filter_logits(jnp.array([1.0, 3.0, 2.0]), top_k=2).tolist()
      [-inf, 3.0, 2.0]
    """
    logits = logits.astype(jnp.float32)
    v = logits.shape[-1]
    neg_inf = jnp.full((), -jnp.inf, jnp.float32)
    top_k = jnp.asarray(top_k, jnp.int32)
    k = jnp.clip(jnp.where(top_k <= 0, v, top_k), 1, v)
    desc = -jnp.sort(-logits, axis=-1)
    kth = jnp.take_along_axis(desc, jnp.broadcast_to(k - 1, desc.shape[:-1] + (1,)), axis=-1)
    logits = jnp.where(logits >= kth, logits, neg_inf)
    rank = jnp.arange(v, dtype=jnp.int32).reshape((1,) * (desc.ndim - 1) + (v,))
    desc = jnp.where(rank < k, desc, neg_inf)
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    top_p = jnp.asarray(top_p, jnp.float32)
    keep_n = jnp.sum((before < top_p) | (rank == 0), axis=-1, keepdims=True)
    keep_n = jnp.where(top_p >= 1.0, k, jnp.minimum(keep_n, k))
    threshold = jnp.take_along_axis(desc, keep_n - 1, axis=-1)
    return jnp.where(logits >= threshold, logits, neg_inf)


def sample_token(
    key: Array, logits: Array, temperature: Any = 1.0, top_k: Any = 0, top_p: Any = 1.0
) -> Array:
    """Draws one token per row from ``softmax(filter(logits / temperature))``.

    ``temperature == 0`` gives the argmax (greedy); the filters of :func:`filter_logits` apply to
    the temperature-scaled logits.

    Args:
      key: PRNG key (one draw for all rows).
      logits: ``[b, v]``.
      temperature: float scalar >= 0 (may be traced).
      top_k: int scalar, 0 = off.
      top_p: float scalar, 1 = off.

    Returns:
      int32 ``[b]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> int(sample_token(jax.random.key(0), jnp.array([[0.0, 5.0, 1.0]]), 0.0)[0])
      1
    """
    logits = logits.astype(jnp.float32)
    temperature = jnp.asarray(temperature, jnp.float32)
    safe_t = jnp.where(temperature > 0, temperature, jnp.ones((), jnp.float32))
    filtered = filter_logits(logits / safe_t, top_k, top_p)
    sampled = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy)


def generate_tokens(
    apply_fn: Callable[..., tuple[Array, Any]],
    prompt: Array,
    prompt_lengths: Array,
    key: Array,
    *,
    length: int,
    temperature: Any = 1.0,
    top_k: Any = 0,
    top_p: Any = 1.0,
    feedback: Array | None = None,
) -> Array:
    """Prefills ``apply_fn`` with the prompts, then samples ``length`` tokens in one scan.

    Traceable (call it under ``jit``); ``length`` must be static.

    Args:
      apply_fn: ``(tokens [b, t], carries | None, lengths [b] | None) -> (logits [b, t, v],
        carries)``, carries frozen after ``lengths``.
      prompt: int ``[b, p]``, right-padded.
      prompt_lengths: int ``[b]`` in ``[1, p]``.
      key: PRNG key; step ``s`` uses ``jax.random.split(key, length)[s]``.
      length: tokens to generate.
      temperature: see :func:`sample_token`.
      top_k: see :func:`filter_logits`.
      top_p: see :func:`filter_logits`.
      feedback: optional int ``[v]`` table: the sampled id ``i`` is emitted and fed back as
        ``feedback[i]``.

    Returns:
      int32 ``[b, length]``.
    """
    logits, carries = apply_fn(prompt, None, prompt_lengths)
    last = jnp.clip(prompt_lengths.astype(jnp.int32) - 1, 0, prompt.shape[1] - 1)
    logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
    keys = jax.random.split(key, length)

    def body(state, k):
        carries, logits = state
        token = sample_token(k, logits, temperature, top_k, top_p)
        if feedback is not None:
            token = jnp.take(feedback, token, axis=0)
        new_logits, carries = apply_fn(token[:, None], carries, None)
        return (carries, new_logits[:, 0].astype(jnp.float32)), token

    _, tokens = jax.lax.scan(body, (carries, logits.astype(jnp.float32)), keys)
    return jnp.moveaxis(tokens, 0, 1)


# ----------------------------------------------------------------------------- text helpers


def bucket_length(n: int, minimum: int = 16) -> int:
    """The padded prompt length for a prompt of ``n`` tokens: the next power of two, at least
    ``minimum`` (so prompts of similar length share one compiled program).

    Example:
      >>> [bucket_length(n) for n in (1, 16, 17, 100)]
      [16, 16, 32, 128]
    """
    n = max(int(n), 1, int(minimum))
    return 1 << (n - 1).bit_length()


def printable_feedback(vocab_size: int) -> np.ndarray:
    """``[v]`` int32 table mapping every id that is not in ``string.printable`` to ``'_'``.

    This is the 2017 lecture's ``generate_text`` rule (it replaced a non-printable sample by
    ``'_'`` and fed the ``'_'`` back). Ids >= 128 are non-printable. If ``'_'`` (95) is outside
    the vocabulary the table is the identity.

    Example:
      >>> printable_feedback(128)[[65, 7, 10]].tolist()
      [65, 95, 10]
    """
    ids = np.arange(vocab_size, dtype=np.int32)
    underscore = ord("_")
    if underscore >= vocab_size:
        return ids
    printable = np.array([i < 128 and chr(i) in string.printable for i in ids])
    return np.where(printable, ids, underscore).astype(np.int32)


def encode_prompts(
    prompts: str | Sequence[str], num_samples: int, *, minimum_bucket: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes prompts as ASCII bytes, repeated ``num_samples`` times, right-padded to a bucket.

    Characters outside ASCII become their ``jrnn.data.to_ascii`` stand-ins; an empty prompt
    becomes ``"\\n"`` (the start of a line; the model needs one token to condition on).

    Args:
      prompts: one prompt or a list of them.
      num_samples: samples per prompt.
      minimum_bucket: smallest padded length.

    Returns:
      ``(tokens int32 [n * num_samples, p], lengths int32 [n * num_samples])``, prompt-major
      (all samples of prompt 0 first).

    Example:
      >>> toks, lens = encode_prompts(["ab", "c"], 2)
      >>> toks.shape, lens.tolist()
      ((4, 16), [2, 2, 1, 1])
    """
    from jrnn.data import to_ascii

    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompt must be a str or a non-empty list of str, got {prompts!r:.80}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    encoded = [to_ascii(p) if p else np.frombuffer(b"\n", np.uint8) for p in prompts]
    p = bucket_length(max(len(e) for e in encoded), minimum_bucket)
    tokens = np.zeros((len(encoded) * num_samples, p), np.int32)
    lengths = np.zeros((len(encoded) * num_samples,), np.int32)
    for i, e in enumerate(encoded):
        rows = slice(i * num_samples, (i + 1) * num_samples)
        tokens[rows, : len(e)] = e
        lengths[rows] = len(e)
    return tokens, lengths


def decode_texts(tokens: Any, stop: str | None = None) -> list[str]:
    """Renders ``[b, t]`` byte ids as text (non-printable -> ``'_'``), cut after ``stop``.

    Example:
      >>> decode_texts(np.array([[72, 105, 7, 33, 33]]), stop="!")
      ['Hi_!']
    """
    from jrnn.data import decode

    texts = [decode(np.asarray(row)) for row in np.asarray(tokens)]
    if stop:
        texts = [t[: t.index(stop) + len(stop)] if stop in t else t for t in texts]
    return texts
