"""Trains the encoder-decoder sorter (many-to-one-to-many) and measures accuracy by length.

Usage (from the repository root)::

    python -m experiments.sorter.train --config cpu --workdir runs/sorter_cpu_t16
    python -m experiments.sorter.train --config full_attention --workdir runs/sorter_attn

Data: integers uniform in ``[0, V)`` drawn on the fly, deterministic from ``(seed, step)``;
targets are the same integers sorted. Training uses teacher forcing; evaluation decodes freely
(greedy, and beam search at the end) and reports exact match (every position right) and
per-token accuracy for each evaluation length. In Colab: ``from experiments.sorter import
config, train`` and ``train.train_and_evaluate(config.get_config("full"), "runs/sorter")``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

import jrnn.data as jd
from experiments import common
from experiments.sorter import config as config_lib
from jrnn import train as jtrain
from jrnn.models import Sorter, losses


def make_model(config: config_lib.Config) -> Sorter:
    """The :class:`jrnn.models.Sorter` of ``config``."""
    return Sorter(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        cell=config.cell,
        attention=config.attention,
        decoder_input=config.decoder_input,
        dropout=config.dropout,
        rngs=nnx.Rngs(config.seed),
    )


def length_schedule(config: config_lib.Config) -> int | Callable[[int], int]:
    """The trained length: ``seq_len``, or the curriculum as a function of the step."""
    if not config.curriculum_steps:
        return config.seq_len
    if config.min_length is not None and config.min_length > config.curriculum_start:
        raise ValueError(
            f"min_length={config.min_length} must be <= curriculum_start={config.curriculum_start}"
        )
    return lambda step: jd.curriculum_length(
        step, config.curriculum_start, config.seq_len, config.curriculum_steps
    )


def _as_dict(batch: jd.SortBatch) -> dict[str, np.ndarray]:
    out = {"src": batch.src, "tgt": batch.target}
    if batch.lengths is not None:
        out["lengths"] = batch.lengths
    return out


def train_batches(
    config: config_lib.Config, start_step: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Endless teacher-forcing batches ``{src, tgt[, lengths]}``; this host's rows only."""
    index, count = common.shard()
    stream = jd.sort_batches(
        config.train.seed,
        config.train.batch_size,
        length_schedule(config),
        config.vocab_size,
        min_length=config.min_length,
        start_step=start_step,
        shard_index=index,
        shard_count=count,
    )
    for batch in stream:
        yield _as_dict(batch)


def decode_accuracy(
    model: Sorter,
    config: config_lib.Config,
    length: int,
    *,
    method: str = "greedy",
    num_examples: int | None = None,
) -> dict[str, float]:
    """Free-running accuracy on ``num_examples`` fresh sequences of exactly ``length`` values.

    Returns ``{"exact_match", "token_accuracy"}``: the fraction of sequences decoded entirely
    right, and of positions right.
    """
    n = config.eval_examples if num_examples is None else num_examples
    batch = jd.sort_batch((config.train.seed + 1, length), n, length, config.vocab_size)
    out = np.asarray(model.decode(batch.src, method=method, beam_width=max(config.beam_width, 1)))
    right = out == batch.target
    return {
        "exact_match": float(right.all(axis=1).mean()),
        "token_accuracy": float(right.mean()),
    }


def eval_batch(config: config_lib.Config) -> dict[str, np.ndarray]:
    """A fixed teacher-forcing evaluation batch at the full length ``seq_len``."""
    b = jd.sort_batch(
        (config.train.seed + 1, 0), config.eval_examples, config.seq_len, config.vocab_size
    )
    return _as_dict(b)


def train_and_evaluate(
    config: config_lib.Config,
    workdir: str | None,
    *,
    resume: bool = True,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains, then tabulates greedy (and beam) exact match / token accuracy by length.

    Args:
      config: a :class:`~experiments.sorter.config.Config`.
      workdir: output folder (``metrics.jsonl``, ``checkpoints/``, ``curves.png``,
        ``summary.json``); None writes nothing.
      resume: continue from a checkpoint in ``workdir``.
      allow_config_change: resume even if the learning rate, steps, schedule or other
        trajectory fields differ from the checkpoint's config.

    Returns:
      The summary: config, steps, wall time, ``by_length`` (length -> greedy and beam
      metrics), machine.
    """
    t0 = time.perf_counter()
    common.check_eval_batches(eval_examples=config.eval_examples)
    model = make_model(config)
    fixed = eval_batch(config)
    common.log(
        f"sorter[{config.name}]: sort {config.seq_len} values from [0, {config.vocab_size}), "
        f"attention={config.attention}"
    )

    def batches(start_step: int) -> Iterator[dict[str, np.ndarray]]:
        it = train_batches(config, start_step)
        if jax.process_count() == 1:
            it = common.time_limited(it, config.max_seconds)
        return it

    def eval_fn(m: Sorter) -> dict[str, float]:
        out = jtrain.evaluate(m, losses.sorter_loss, [fixed])
        greedy = decode_accuracy(m, config, config.seq_len)
        out.update({f"greedy_{k}": v for k, v in greedy.items()})
        common.log(
            f"  eval: teacher-forced loss {out['loss']:.4f}; greedy at t={config.seq_len}: "
            f"exact {greedy['exact_match']:.4f}, token {greedy['token_accuracy']:.4f}"
        )
        return out

    result = jtrain.fit(
        model,
        losses.sorter_loss,
        batches,
        config.train,
        eval_fn=eval_fn,
        workdir=workdir,
        resume=resume,
        allow_config_change=allow_config_change,
        run_config=common.run_config(
            config, ignore=("eval_lengths", "eval_examples", "beam_width")
        ),
    )
    if result.interrupted:
        return common.interrupted("sorter", result, workdir)
    by_length: dict[int, dict[str, float]] = {}
    for length in config.lengths_to_evaluate():
        row = {f"greedy_{k}": v for k, v in decode_accuracy(model, config, length).items()}
        if config.beam_width > 1:
            beam = decode_accuracy(model, config, length, method="beam")
            row.update({f"beam{config.beam_width}_{k}": v for k, v in beam.items()})
        by_length[length] = row
        common.log(f"  t={length:4d}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    summary = {
        "task": "sorter",
        "config": config,
        "steps": result.steps_done,
        "train_seconds": result.wall_time,
        "final_train": result.metrics,
        "by_length": by_length,
        "total_seconds": time.perf_counter() - t0,
        "machine": common.machine(),
    }
    common.log(f"sorter[{config.name}]: {result.steps_done} steps in {result.wall_time:.0f} s")
    common.write_summary(workdir, summary)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[config_lib.Config, Any]:
    """The config named by ``--config`` with the command line's changes applied, and the
    parsed arguments."""
    parser = common.build_parser(__doc__.splitlines()[0], config_lib.CONFIGS)
    args = parser.parse_args(argv)
    config = common.apply_overrides(config_lib.get_config(args.config), args.overrides)
    return config, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--config``, ``--workdir``, ``--set``, ``--distributed``."""
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
