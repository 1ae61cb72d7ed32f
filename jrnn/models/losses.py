"""Loss functions of the three task models, in the signature ``jrnn.train.fit`` uses.

Each is ``loss_fn(model, batch, key, carry) -> (loss, (metrics, carry))``:

* ``model``: the NNX module; ``batch``: a dict of arrays; ``carry``: state threaded from one
  batch to the next (only the language model uses it; the others return it unchanged).
* ``key``: the dropout key of this step, or None. Dropout is active only when a key is given
  **and** the model is in training mode (``model.train()``, the default of a new module); a None
  key always gives the deterministic model, so one function serves training and evaluation.
* ``loss``: a float32 scalar, the mean over the valid entries; ``metrics``: a dict of float32
  scalars (``loss`` included) that are means over the same entries, plus ``count``, the number
  of entries averaged (use it to weight means across batches), and ``tokens``, the number of
  input tokens the model read (``jrnn.train.fit`` turns it into ``tokens_per_s``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def _deterministic(key: Array | None) -> bool | None:
    return True if key is None else None


def _size(x: Any) -> Array:
    return jnp.full((), float(jnp.size(x)), jnp.float32)


def _masked_mean(values: Array, weights: Array) -> Array:
    total = jnp.sum(weights)
    return jnp.sum(values * weights) / jnp.maximum(total, jnp.ones((), jnp.float32))


def classifier_loss(model: Any, batch: dict, key: Array | None, carry: Any = None):
    """Cross-entropy of a :class:`~jrnn.models.ByteClassifier`.

    Args:
      model: the classifier.
      batch: ``{"tokens" int [b, t], "lengths" int [b], "labels" int [b]}`` and optionally
        ``"mask"`` (bool/float ``[b]``: rows that count; padding rows of a last batch do not).
      key: dropout key or None.
      carry: passed through.

    Returns:
      ``(loss, ({"loss", "accuracy", "count", "tokens"}, carry))``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jrnn.models import ByteClassifier, losses
      >>> m = ByteClassifier(num_classes=2, hidden_size=8, num_layers=1, rngs=nnx.Rngs(0))
      >>> batch = {"tokens": jnp.ones((2, 4), jnp.int32), "lengths": jnp.array([4, 2]),
      ...          "labels": jnp.array([0, 1])}
      >>> loss, (metrics, _) = losses.classifier_loss(m, batch, None, None)
      >>> sorted(metrics)
      ['accuracy', 'count', 'loss', 'tokens']
    """
    logits = model(
        batch["tokens"], batch.get("lengths"), key=key, deterministic=_deterministic(key)
    )
    labels = jnp.asarray(batch["labels"], jnp.int32)
    weights = jnp.ones(labels.shape, jnp.float32)
    if batch.get("mask") is not None:
        weights = jnp.asarray(batch["mask"]).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    loss = _masked_mean(ce, weights)
    metrics = {
        "loss": loss,
        "accuracy": _masked_mean(correct, weights),
        "count": weights.sum(),
        "tokens": _size(batch["tokens"]),
    }
    return loss, (metrics, carry)


def char_lm_loss(model: Any, batch: dict, key: Array | None, carry: Any = None):
    """Next-character cross-entropy (nats/char) of a :class:`~jrnn.models.CharLM`, with the
    carries threaded across batches (truncated BPTT).

    Args:
      model: the language model.
      batch: ``{"inputs" int [b, t], "targets" int [b, t]}`` (targets are inputs shifted by
        one in the stream), optionally ``"mask"`` (``[b, t]``).
      key: dropout key or None.
      carry: the previous batch's final carries (None: zeros, e.g. at an epoch start). The
        returned carries are wrapped in ``stop_gradient``: gradients stop at the batch boundary.

    Returns:
      ``(loss, ({"loss", "accuracy", "bits_per_char", "count", "tokens"}, carries))``.
    """
    logits, carries = model(batch["inputs"], carry, key=key, deterministic=_deterministic(key))
    targets = jnp.asarray(batch["targets"], jnp.int32)
    weights = jnp.ones(targets.shape, jnp.float32)
    if batch.get("mask") is not None:
        weights = jnp.asarray(batch["mask"]).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    loss = _masked_mean(ce, weights)
    metrics = {
        "loss": loss,
        "accuracy": _masked_mean(correct, weights),
        "bits_per_char": loss / jnp.log(jnp.full((), 2.0, jnp.float32)),
        "count": weights.sum(),
        "tokens": _size(batch["inputs"]),
    }
    return loss, (metrics, jax.lax.stop_gradient(carries))


def sorter_loss(model: Any, batch: dict, key: Array | None, carry: Any = None):
    """Teacher-forced cross-entropy of a :class:`~jrnn.models.Sorter`.

    Args:
      model: the sorter.
      batch: ``{"src" int [b, t], "tgt" int [b, t]}`` and optionally ``"lengths"`` (int
        ``[b]``: positions ``>= lengths`` are padding, excluded from loss and metrics).
      key: dropout key or None.
      carry: passed through.

    Returns:
      ``(loss, ({"loss", "accuracy", "exact_match", "count", "tokens"}, carry))``:
      ``accuracy`` is the per-token accuracy under teacher forcing, ``exact_match`` the
      fraction of rows whose every valid position is predicted right (also under teacher
      forcing; use ``model.decode`` for free-running accuracy).
    """
    src = jnp.asarray(batch["src"], jnp.int32)
    tgt = jnp.asarray(batch["tgt"], jnp.int32)
    lengths = batch.get("lengths")
    logits = model(
        src, model.teacher_inputs(tgt), lengths, key=key, deterministic=_deterministic(key)
    )
    if lengths is None:
        weights = jnp.ones(tgt.shape, jnp.float32)
    else:
        steps = jnp.arange(tgt.shape[1], dtype=jnp.int32)[None, :]
        weights = (steps < jnp.asarray(lengths, jnp.int32)[:, None]).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
    correct = (jnp.argmax(logits, axis=-1) == tgt).astype(jnp.float32)
    wrong_in_row = jnp.sum((1.0 - correct) * weights, axis=-1)
    exact = (wrong_in_row == 0).astype(jnp.float32)
    loss = _masked_mean(ce, weights)
    metrics = {
        "loss": loss,
        "accuracy": _masked_mean(correct, weights),
        "exact_match": jnp.mean(exact),
        "count": weights.sum(),
        "tokens": _size(src) + _size(tgt),
    }
    return loss, (metrics, carry)
