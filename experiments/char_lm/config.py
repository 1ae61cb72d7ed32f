"""Character language model presets: ``smoke`` (seconds), ``cpu`` (under an hour on one CPU
core), ``full`` and ``tpu`` (accelerators).

``full`` is the lecture's many-to-many model: 3 LSTM layers of 512 over 128 one-hot bytes, 256
characters per truncated-BPTT window — sized for a Colab TPU/GPU.

Example:
  >>> from experiments.char_lm.config import get_config
  >>> get_config("full").hidden_size
  512
"""

from __future__ import annotations

import dataclasses

from jrnn._src import lm_task
from jrnn.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Config:
    """One char-LM experiment.

    Attributes:
      name: the preset's name.
      cell: cell name (``"lstm"``, ``"gru"``, ...).
      hidden_size: h.
      num_layers: stacked layers.
      dropout: dropout between layers and on the last outputs.
      seq_len: t, the truncated-BPTT window (the carry is passed across windows).
      eval_batch_size: rows of the held-out stream evaluated together.
      eval_bytes: periodic evaluations read the first this many held-out bytes (None: all);
        the final evaluation always reads the whole held-out split.
      corpus: a text file or folder (None: Shakespeare, held-out plays).
      max_train_bytes: use only the first this many training bytes (None: all).
      max_seconds: wall-clock budget of training (None: ``train.steps`` only).
      prompts: prompts of the samples printed at the end.
      sample_length: characters per sample.
      temperature: sampling temperature.
      seed: model init seed (the data stream uses ``train.seed``).
      backend: the RNN time-loop backend (``"auto"``, ``"xla"``, ``"cpu"``, ...; see
        docs/backends.md).
      train: optimizer and loop settings.
    """

    name: str
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.0
    seq_len: int = 256
    eval_batch_size: int = 32
    eval_bytes: int | None = None
    corpus: str | None = None
    max_train_bytes: int | None = None
    max_seconds: float | None = None
    prompts: tuple[str, ...] = ("ROMEO:", "KING HENRY:\n", "First Citizen:\n")
    sample_length: int = 300
    temperature: float = 0.8
    seed: int = 0
    backend: str = "auto"
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        from experiments import common  # field types and ranges, naming the bad field

        common.check_config(
            self,
            positive=(
                "hidden_size",
                "num_layers",
                "seq_len",
                "eval_batch_size",
                "eval_bytes",
                "max_train_bytes",
                "max_seconds",
                "sample_length",
                "temperature",
            ),
            non_negative=("seed",),
            fraction=("dropout",),
        )

    def replace(self, **changes) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _preset(name: str, **extra) -> Config:
    """The library's preset ``name`` (``jrnn._src.lm_task.PRESETS``)."""
    preset = lm_task.get_preset(name)
    fields = {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)}
    return Config(**fields, **extra)


def smoke() -> Config:
    """Seconds on a CPU: a tiny model on a little text (tests use it)."""
    return _preset("smoke", max_train_bytes=20_000, prompts=("ROMEO:",), sample_length=40)


def cpu() -> Config:
    """Under an hour on one CPU core, the whole command (56 min measured with ``taskset -c 0``,
    1.536 nats/char held out): 2 x LSTM-384, t = 128, batch 32, no dropout, the ``"cpu"`` kernel
    backend, lr 3e-3 with a cosine schedule over 4,400 steps (3.9 epochs), and a 55-minute
    training guard (``max_seconds``) that keeps the command under the hour on a slower core."""
    return _preset("cpu")


def full() -> Config:
    """The lecture's size for a Colab TPU/GPU: 3 x LSTM-512, t = 256, batch 128."""
    return Config(
        name="full",
        hidden_size=512,
        num_layers=3,
        dropout=0.2,
        seq_len=256,
        eval_batch_size=128,
        eval_bytes=262_144,
        train=TrainConfig(
            steps=6000,
            batch_size=128,
            learning_rate=2e-3,
            warmup_steps=500,
            eval_every=1000,
            log_every=50,
            checkpoint_every=1000,
        ),
    )


def tpu() -> Config:
    """One v5e TPU chip (Colab's free TPU) in under ~30 minutes: :func:`full`'s model and
    schedule with a 25-minute training budget (docs/colab.md has the FLOP estimate)."""
    return full().replace(
        name="tpu",
        max_seconds=1500.0,
        train=full().train.replace(eval_every=500, checkpoint_every=500),
    )


CONFIGS = {"smoke": smoke, "cpu": cpu, "full": full, "tpu": tpu}


def get_config(name: str) -> Config:
    """The preset called ``name`` (``"smoke"``, ``"cpu"``, ``"full"`` or ``"tpu"``)."""
    if name not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    return CONFIGS[name]()
