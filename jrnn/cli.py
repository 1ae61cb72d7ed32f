"""The ``jrnn`` command: train a character language model on a text file and sample from it.

Usage::

    jrnn train-lm --text my.txt --workdir runs/my_lm            # the cpu preset (~1 hour)
    jrnn train-lm --text my.txt --workdir runs/my_lm --preset smoke --steps 50
    jrnn sample --workdir runs/my_lm --prompt "ROMEO:" --length 300 --num-samples 3 --seed 1

``python -m jrnn ...`` is the same command. ``train-lm`` resumes from the latest checkpoint in
the workdir (``--no-resume`` starts over). The same functions are importable (the Colab
notebook uses them): :func:`train_lm`, :func:`load_lm`, :data:`PRESETS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jrnn._src.lm_task import PRESETS, LMPreset, get_preset, load_lm, train_lm

__all__ = ["PRESETS", "LMPreset", "get_preset", "load_lm", "main", "sample", "train_lm"]


def sample(
    workdir: str,
    prompt: str = "",
    *,
    length: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 0,
    step: int | None = None,
) -> list[str]:
    """Texts sampled from the model :func:`train_lm` trained in ``workdir``.

    Args:
      workdir: a folder written by ``jrnn train-lm``.
      prompt: the text to continue (``""`` conditions on a newline).
      length: characters generated per sample.
      temperature: >= 0; 0 is greedy.
      top_k: keep the k most likely characters (None: all).
      top_p: nucleus sampling mass in (0, 1] (None: all).
      num_samples: how many texts.
      seed: the sampling seed; the same seed gives the same texts.
      step: which checkpoint (None: the latest).

    Returns:
      ``num_samples`` strings, each starting with ``prompt``.

    Raises:
      FileNotFoundError: if ``workdir`` holds no trained model.

    Example:
      >>> from jrnn import cli
      >>> cli.sample("runs/my_lm", "ROMEO:", length=100, seed=1)  # doctest: +SKIP
    """
    import jax

    model = load_lm(workdir, step=step)
    return model.generate(
        prompt,
        length,
        key=jax.random.key(seed),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        num_samples=num_samples,
        include_prompt=True,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jrnn", description="Train a character language model on a text file; sample it."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train-lm", help="train a char LM on a text file (or folder of .txt)")
    t.add_argument("--text", required=True, help="a text file, or a folder of .txt files")
    t.add_argument("--workdir", required=True, help="output folder (checkpoints, metrics)")
    t.add_argument(
        "--preset",
        default="cpu",
        choices=sorted(PRESETS),
        help="model and training sizes (default: cpu, under an hour on one core; smoke: seconds; "
        "tpu: one TPU/GPU chip)",
    )
    t.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    t.add_argument(
        "--prompt",
        action="append",
        help="prompt of a sample printed at the end (repeatable; default: a newline)",
    )
    t.add_argument("--length", type=int, default=200, help="characters per final sample")
    t.add_argument("--no-resume", dest="resume", action="store_false", help="start over")

    s = sub.add_parser("sample", help="generate text from a trained workdir")
    s.add_argument("--workdir", required=True, help="a folder written by train-lm")
    s.add_argument("--prompt", default="", help="text to continue")
    s.add_argument("--length", type=int, default=200, help="characters to generate")
    s.add_argument("--temperature", type=float, default=0.8, help=">= 0; 0 is greedy")
    s.add_argument("--top-k", type=int, default=None, help="keep the k most likely characters")
    s.add_argument("--top-p", type=float, default=None, help="nucleus mass in (0, 1]")
    s.add_argument("--num-samples", type=int, default=1, help="how many texts")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jrnn`` command line; returns the exit status.

    Example:
      >>> from jrnn import cli
      >>> cli.main(["sample", "--workdir", "runs/my_lm", "--prompt", "ROMEO:"])  # doctest: +SKIP
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train-lm":
        if not os.path.exists(args.text):
            parser.error(f"--text {args.text!r}: no such file or folder")
        if args.steps is not None and args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        try:
            train_lm(
                args.text,
                args.workdir,
                args.preset,
                steps=args.steps,
                resume=args.resume,
                prompts=tuple(args.prompt or ("\n",)),
                sample_length=args.length,
                log=lambda line: print(line, flush=True),
            )
        except (FileNotFoundError, ValueError) as e:
            parser.error(str(e))
        return 0
    try:
        texts = sample(
            args.workdir,
            args.prompt,
            length=args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            num_samples=args.num_samples,
            seed=args.seed,
            step=args.step,
        )
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    for i, text in enumerate(texts):
        if i:
            print("-" * 72)
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
