"""Sorter presets: ``smoke`` and ``smoke_attention`` (seconds); ``cpu`` (t = 16), ``cpu_t32``,
``cpu_t32_attention`` (about 6 and 8 minutes on one CPU core) and ``cpu_t64_attention`` (about
22 minutes); ``full`` (t = 64, no attention) and ``full_attention`` (t = 256, Luong attention).

``full`` is the lecture's many-to-one-to-many model: a 4-layer LSTM encoder of 512 reads integers
in ``[0, vocab_size)`` (one-hot 128), its final carries start a 4-layer LSTM decoder that emits
the sorted sequence; trained with teacher forcing.

Example:
  >>> from experiments.sorter.config import get_config
  >>> get_config("full_attention").attention
  True
"""

from __future__ import annotations

import dataclasses

from jrnn.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Config:
    """One sorter experiment.

    Attributes:
      name: the preset's name.
      vocab_size: v: values are drawn uniformly from ``[0, v)``.
      seq_len: t, the longest sequence trained on.
      min_length: None: every sequence has length t; an int: lengths uniform in
        ``[min_length, t]`` (padded, with ``lengths``), so one model sorts every length.
      curriculum_steps: 0: no curriculum; n: the trained length grows linearly from
        ``curriculum_start`` to t over n steps (a recompile per new length).
      curriculum_start: first length of the curriculum.
      cell: cell name.
      hidden_size: h (encoder and decoder).
      num_layers: layers of the encoder and of the decoder.
      attention: Luong attention over the encoder outputs (beyond the lecture).
      decoder_input: ``"tokens"`` (teacher forcing) or ``"zeros"`` (the lecture's constant input).
      dropout: inter-layer dropout.
      eval_lengths: lengths of the final by-length table (None: t/4, t/2, 3t/4, t).
      eval_examples: sequences per length in evaluation.
      beam_width: beam width of the final beam-search evaluation (0: greedy only).
      max_seconds: wall-clock budget of training (None: ``train.steps`` only).
      seed: model init seed; the data stream uses ``train.seed``, evaluation ``train.seed + 1``.
      train: optimizer and loop settings.
    """

    name: str
    vocab_size: int = 128
    seq_len: int = 64
    min_length: int | None = None
    curriculum_steps: int = 0
    curriculum_start: int = 4
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 4
    attention: bool = False
    decoder_input: str = "tokens"
    dropout: float = 0.0
    eval_lengths: tuple[int, ...] | None = None
    eval_examples: int = 512
    beam_width: int = 4
    max_seconds: float | None = None
    seed: int = 0
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        from experiments import common  # field types and ranges, naming the bad field

        common.check_config(
            self,
            positive=(
                "vocab_size",
                "seq_len",
                "min_length",
                "curriculum_start",
                "hidden_size",
                "num_layers",
                "eval_examples",
                "max_seconds",
            ),
            non_negative=("curriculum_steps", "beam_width", "seed"),
            fraction=("dropout",),
            choices={"decoder_input": ("tokens", "zeros")},
        )

    def replace(self, **changes) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def lengths_to_evaluate(self) -> tuple[int, ...]:
        """``eval_lengths``, or t/4, t/2, 3t/4, t."""
        if self.eval_lengths is not None:
            return tuple(self.eval_lengths)
        t = self.seq_len
        return tuple(sorted({max(1, t // 4), max(1, t // 2), max(1, 3 * t // 4), t}))


def smoke() -> Config:
    """Seconds on a CPU: sort 4 values from [0, 4) (tests use it)."""
    return Config(
        name="smoke",
        vocab_size=4,
        seq_len=4,
        hidden_size=32,
        num_layers=1,
        eval_lengths=(2, 4),
        eval_examples=64,
        beam_width=2,
        train=TrainConfig(
            steps=80,
            batch_size=32,
            learning_rate=1e-2,
            warmup_steps=10,
            eval_every=40,
            log_every=25,
            checkpoint_every=0,
            progress=False,
        ),
    )


def smoke_attention() -> Config:
    """:func:`smoke` with Luong attention (the notebook runs it in its smoke mode)."""
    return smoke().replace(name="smoke_attention", attention=True)


def cpu() -> Config:
    """About 9 minutes on a busy 2-core CPU: t = 16, values in [0, 16), 1 x LSTM-256."""
    return Config(
        name="cpu",
        vocab_size=16,
        seq_len=16,
        min_length=2,
        hidden_size=256,
        num_layers=1,
        eval_examples=512,
        max_seconds=480.0,
        train=TrainConfig(
            steps=800,
            batch_size=64,
            learning_rate=3e-3,
            warmup_steps=50,
            eval_every=200,
            log_every=25,
            checkpoint_every=200,
        ),
    )


def cpu_t32() -> Config:
    """About 6 minutes on one CPU core: t = 32, values in [0, 16), 1 x LSTM-256, no attention,
    2,000 steps (training stops after 25 minutes at the latest)."""
    return cpu().replace(
        name="cpu_t32",
        seq_len=32,
        max_seconds=1500.0,
        train=cpu().train.replace(steps=2000, eval_every=250, checkpoint_every=500),
    )


def cpu_t32_attention() -> Config:
    """:func:`cpu_t32` with Luong attention over the encoder outputs (about 8 minutes on one
    CPU core)."""
    return cpu_t32().replace(name="cpu_t32_attention", attention=True)


def cpu_t64_attention() -> Config:
    """About 22 minutes on one CPU core: :func:`cpu_t32_attention` at t = 64, 3,000 steps
    (training stops after 26 minutes at the latest)."""
    return cpu_t32_attention().replace(
        name="cpu_t64_attention",
        seq_len=64,
        max_seconds=1560.0,
        train=cpu_t32().train.replace(steps=3000, eval_every=500),
    )


def full() -> Config:
    """The lecture's size for a Colab TPU/GPU: t = 64, 4 x LSTM-512, no attention."""
    return Config(
        name="full",
        vocab_size=128,
        seq_len=64,
        min_length=2,
        hidden_size=512,
        num_layers=4,
        eval_examples=1024,
        train=TrainConfig(
            steps=20_000,
            batch_size=128,
            learning_rate=1e-3,
            warmup_steps=500,
            eval_every=1000,
            log_every=50,
            checkpoint_every=1000,
        ),
    )


def full_attention() -> Config:
    """t = 256 with Luong attention over the encoder outputs (the variant beyond the lecture)."""
    return full().replace(name="full_attention", seq_len=256, attention=True)


def tpu() -> Config:
    """One v5e TPU chip (Colab's free TPU) in under ~30 minutes: :func:`full` (t = 64) with a
    25-minute training budget (docs/colab.md has the FLOP estimate)."""
    return full().replace(name="tpu", max_seconds=1500.0)


def tpu_attention() -> Config:
    """:func:`tpu` with Luong attention at t = 128 for 10,000 steps (t = 256 would take about
    four times :func:`tpu`'s compute)."""
    return tpu().replace(
        name="tpu_attention", seq_len=128, attention=True, train=tpu().train.replace(steps=10_000)
    )


CONFIGS = {
    "smoke": smoke,
    "smoke_attention": smoke_attention,
    "cpu": cpu,
    "cpu_t32": cpu_t32,
    "cpu_t32_attention": cpu_t32_attention,
    "cpu_t64_attention": cpu_t64_attention,
    "full": full,
    "full_attention": full_attention,
    "tpu": tpu,
    "tpu_attention": tpu_attention,
}


def get_config(name: str) -> Config:
    """The preset called ``name`` (one of ``CONFIGS``)."""
    if name not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    return CONFIGS[name]()
