"""Benchmark sizes, workload descriptions and the FLOP model.

The benchmark task is a byte language model: integer tokens ``[b, t]`` of a vocabulary of
``v`` symbols go through a stack of recurrent layers (hidden ``h``), a dense head ``[h, v]`` and a
softmax cross-entropy against the next tokens. ``forward`` times the recurrent stack alone;
``train`` times one optimiser step: loss + gradient + ``optax.adam`` update (``torch.optim.Adam``
for torch).
"""

from __future__ import annotations

import dataclasses

CELLS = ("lstm", "gru", "elman", "seed_rnn", "min_gru")
MODES = ("forward", "train")


@dataclasses.dataclass(frozen=True)
class Size:
    """One problem size: vocabulary (input size), hidden size, time steps, batch, layers."""

    name: str
    vocab: int
    hidden: int
    steps: int
    batch: int
    layers: int = 1

    @property
    def tokens(self) -> int:
        """Tokens processed per step of the workload (``b t``)."""
        return self.batch * self.steps

    def with_(self, **changes) -> Size:
        """A copy with some fields changed (the name records the change)."""
        new = dataclasses.replace(self, **changes)
        if "name" not in changes:
            tag = ",".join(f"{k[0]}{v}" for k, v in changes.items())
            new = dataclasses.replace(new, name=f"{self.name}[{tag}]")
        return new


SIZES = {
    "seed": Size("seed", vocab=128, hidden=512, steps=256, batch=32, layers=1),
    "seed3": Size("seed3", vocab=128, hidden=512, steps=256, batch=32, layers=3),
    "small": Size("small", vocab=128, hidden=128, steps=128, batch=16, layers=1),
}

_KEYS = {"v": "vocab", "h": "hidden", "t": "steps", "b": "batch", "l": "layers"}


def parse_size(text: str) -> Size:
    """A size from its name (``seed``, ``seed3``, ``small``) or ``"h=256,t=128,b=16[,l=2,v=128]"``.

    Example:
      >>> parse_size("h=64,t=32,b=4")
      Size(name='h64,t32,b4', vocab=128, hidden=64, steps=32, batch=4, layers=1)
    """
    if text in SIZES:
        return SIZES[text]
    fields = {"vocab": 128, "hidden": 128, "steps": 128, "batch": 16, "layers": 1}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in _KEYS or not value.strip().isdigit():
            raise ValueError(
                f"size must be one of {sorted(SIZES)} or 'h=..,t=..,b=..[,l=..,v=..]' "
                f"(positive ints), got {text!r}"
            )
        fields[_KEYS[key.strip()]] = int(value)
    if min(fields.values()) <= 0:
        raise ValueError(f"size fields must be positive, got {text!r}")
    return Size(name=text.replace("=", ""), **fields)


def gate_width(cell: str, hidden: int) -> tuple[int, int]:
    """``(g, r)``: the width of the input projection and of the recurrent matmul's output."""
    widths = {
        "lstm": (4 * hidden, 4 * hidden),
        "gru": (3 * hidden, 3 * hidden),
        "elman": (hidden, hidden),
        "seed_rnn": (2 * hidden, 2 * hidden),  # output size = hidden: [o + h]
        "min_gru": (2 * hidden, 0),  # no recurrent matmul
    }
    if cell not in widths:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    return widths[cell]


def flops(cell: str, size: Size, mode: str, *, tokens: bool = True) -> float:
    """Model FLOPs of one workload (matmuls only; 1 multiply-add = 2 FLOPs).

    Per layer ``l`` with input width ``i_l`` (``v`` for layer 1, ``h`` above)::

        forward_l = 2 b t (i_l g + h r)        # input projection + recurrent matmul
        head      = 2 b t h v                  # train only
        train     = 3 (sum_l forward_l + head) # forward + two matmuls per matmul backward

    With ``tokens=True`` layer 1's input projection is a row gather and counts 0 FLOPs (the
    useful work; peers that multiply by a one-hot matrix do more than this count).

    Example:
      >>> flops("lstm", SIZES["small"], "forward")  # 2 * 16 * 128 * 128 * 512
      268435456.0
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    g, r = gate_width(cell, size.hidden)
    bt = float(size.batch * size.steps)
    total = 0.0
    for layer in range(size.layers):
        width_in = 0 if (layer == 0 and tokens) else (size.vocab if layer == 0 else size.hidden)
        total += 2.0 * bt * (width_in * g + size.hidden * r)
    if mode == "train":
        total = 3.0 * (total + 2.0 * bt * size.hidden * size.vocab)
    return total


@dataclasses.dataclass(frozen=True)
class Workload:
    """One row of the benchmark.

    Attributes:
      impl: ``"jrnn"``, ``"flax"`` or ``"torch"``.
      cell: jrnn cell name, or the peer's cell class (``"LSTMCell"``, ``"LSTM"``...).
      family: the cell family compared against (``"lstm"``, ``"gru"``, ...).
      backend: jrnn backend (``""`` for peers).
      unroll: scan unroll factor (jrnn).
      mode: ``"forward"`` or ``"train"``.
      size: the problem size.
      dtype: matmul operand dtype of jrnn cells (``"float32"`` or ``"bfloat16"``).
    """

    impl: str
    cell: str
    family: str
    backend: str
    unroll: int
    mode: str
    size: Size
    dtype: str = "float32"

    @property
    def label(self) -> str:
        """A short unique name of the implementation (without size and mode)."""
        if self.impl != "jrnn":
            return f"{self.impl}:{self.cell}"
        tail = "" if self.dtype == "float32" else "/bf16"
        return f"jrnn:{self.cell}/{self.backend}/u{self.unroll}{tail}"

    @property
    def is_peer(self) -> bool:
        return self.impl != "jrnn"

    def flops(self) -> float:
        """Model FLOPs of this workload (see :func:`flops`)."""
        return flops(self.family if self.family in CELLS else "lstm", self.size, self.mode)
