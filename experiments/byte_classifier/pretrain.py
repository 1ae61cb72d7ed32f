"""Language-model pre-training of the byte classifier's two RNN directions (Dai & Le, 2015).

Before the classifier is trained, its bidirectional RNN is trained as two byte language models
on the full text of the *training* articles (the test articles are never read): the forward
direction's output at byte ``t`` predicts byte ``t + 1``, the backward direction's output at
``t`` (it has read bytes ``t .. T - 1``) predicts byte ``t - 1``. Each direction has its own
softmax head (a linear map to the 128 byte values), dropped after pre-training; the RNN weights
stay in the classifier, which is then fine-tuned on the labels.

Training reads truncated windows of ``pretrain_seq_len`` bytes at uniformly random offsets of
the concatenated training articles (every byte of them can be drawn), ``pretrain_batch_size``
windows per step, AdamW with warmup and cosine decay (``jrnn.train.make_optimizer``), gradient
clipping at 1.0. The loss is the mean of the two directions' cross-entropies (nats per byte).

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jrnn.models import ByteClassifier
  >>> clf = ByteClassifier(num_classes=4, hidden_size=8, num_layers=1, rngs=nnx.Rngs(0))
  >>> lm = BidirectionalLM(clf, rngs=nnx.Rngs(1))
  >>> loss, (fwd, bwd) = lm_loss(lm, np.ones((2, 5), np.int32))
  >>> loss.shape
  ()
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import common
from jrnn import train as jtrain
from jrnn.models import ByteClassifier


class BidirectionalLM(nnx.Module):
    """The classifier's RNN (shared, not copied) with one byte softmax head per direction.

    Args:
      classifier: a :class:`jrnn.models.ByteClassifier`; its ``rnn`` is trained in place.
      rngs: ``nnx.Rngs`` for the two heads.
    """

    def __init__(self, classifier: ByteClassifier, *, rngs: nnx.Rngs):
        self.rnn = classifier.rnn
        self.vocab_size = classifier.vocab_size
        h = classifier.proj_fwd.in_features  # the RNN's output size per direction
        self.head_fwd = nnx.Linear(h, self.vocab_size, rngs=rngs)
        self.head_bwd = nnx.Linear(h, self.vocab_size, rngs=rngs)

    def __call__(self, tokens: Any) -> tuple[jax.Array, jax.Array]:
        """``(forward logits, backward logits)``, each ``[b, t, vocab]`` float32: the forward
        ones at ``t`` are for byte ``t + 1``, the backward ones at ``t`` for byte ``t - 1``."""
        tokens = jnp.asarray(tokens, jnp.int32)
        b, t = tokens.shape
        ys, _ = self.rnn(tokens, lengths=jnp.full((b,), t, jnp.int32), deterministic=True)
        h = ys.shape[-1] // 2
        return (
            self.head_fwd(ys[..., :h]).astype(jnp.float32),
            self.head_bwd(ys[..., h:]).astype(jnp.float32),
        )


def lm_loss(lm: BidirectionalLM, tokens: Any) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``(mean of the two, (forward, backward))`` cross-entropies in nats per byte over the
    ``t - 1`` predictable bytes of each full-length window ``tokens [b, t]``."""
    tokens = jnp.asarray(tokens, jnp.int32)
    fwd, bwd = lm(tokens)
    ce = optax.softmax_cross_entropy_with_integer_labels
    loss_f = ce(fwd[:, :-1], tokens[:, 1:]).mean()
    loss_b = ce(bwd[:, 1:], tokens[:, :-1]).mean()
    return 0.5 * (loss_f + loss_b), (loss_f, loss_b)


def text_stream(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The rows' valid bytes concatenated in order (uint8 ``[sum(lengths)]``)."""
    return np.concatenate(
        [np.asarray(r[:n], np.uint8) for r, n in zip(tokens, lengths, strict=True)]
    )


def random_windows(
    stream: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> np.ndarray:
    """``batch_size`` windows of ``seq_len`` bytes at uniform random offsets of ``stream``
    (int32 ``[batch_size, seq_len]``)."""
    if len(stream) < seq_len:
        raise ValueError(f"the text has {len(stream)} bytes, fewer than seq_len={seq_len}")
    starts = rng.integers(0, len(stream) - seq_len + 1, size=batch_size)
    return stream[starts[:, None] + np.arange(seq_len)].astype(np.int32)


def pretrain(
    classifier: ByteClassifier,
    stream: np.ndarray,
    cfg: jtrain.TrainConfig,
    *,
    seq_len: int,
    max_seconds: float | None = None,
    seed: int = 0,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Trains ``classifier.rnn`` in place as the two byte LMs on ``stream``.

    Args:
      classifier: the classifier whose RNN is pre-trained.
      stream: uint8 training text (the concatenated training articles).
      cfg: steps, batch size, learning rate, warmup, weight decay, clipping, ``log_every``.
      seq_len: window length (truncated back-propagation through time).
      max_seconds: stop after this much wall time (None: ``cfg.steps`` only).
      seed: seed of the heads' init and of the window offsets.
      workdir: where ``pretrain.jsonl`` goes (one row per ``log_every`` steps); None: nowhere.

    Returns:
      ``{"steps", "seconds", "loss", "loss_fwd", "loss_bwd"}`` (mean of the last log window).
    """
    lm = BidirectionalLM(classifier, rngs=nnx.Rngs(seed + 1))
    tx = jtrain.make_optimizer(cfg)
    lr_schedule = jtrain.make_schedule(cfg)
    graphdef, params, rest = nnx.split(lm, nnx.Param, ...)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int counts
        opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, rest, x):
        def f(p):
            return lm_loss(nnx.merge(graphdef, p, rest), x)

        (loss, parts), grads = jax.value_and_grad(f, has_aux=True)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int counts
            updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jnp.stack([loss, *parts])

    rng = np.random.default_rng(seed)
    path = None
    if workdir is not None and common.is_writer():
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "pretrain.jsonl")
        open(path, "w").close()
    t0 = time.perf_counter()
    window: list[np.ndarray] = []
    last = np.full(3, np.nan)
    done = 0
    for s in range(cfg.steps):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        x = random_windows(stream, cfg.batch_size, seq_len, rng)
        params, opt_state, out = step(params, opt_state, rest, x)
        window.append(out)
        done = s + 1
        if done % max(cfg.log_every, 1) == 0 or done == cfg.steps:
            last = np.mean(np.asarray(jax.device_get(window)), axis=0)
            window = []
            row = {
                "step": done,
                "loss": float(last[0]),
                "loss_fwd": float(last[1]),
                "loss_bwd": float(last[2]),
                "lr": float(lr_schedule(done - 1)),
                "seconds": time.perf_counter() - t0,
            }
            common.log(
                f"  pretrain step {done}: LM loss {row['loss']:.3f} nats/byte "
                f"(forward {row['loss_fwd']:.3f}, backward {row['loss_bwd']:.3f}), "
                f"{row['seconds']:.0f} s"
            )
            if path is not None:
                with open(path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    if window:
        last = np.mean(np.asarray(jax.device_get(window)), axis=0)
    nnx.update(lm, params)  # the RNN is the classifier's: it now holds the trained weights
    return {
        "steps": done,
        "seconds": time.perf_counter() - t0,
        "loss": float(last[0]),
        "loss_fwd": float(last[1]),
        "loss_bwd": float(last[2]),
    }
