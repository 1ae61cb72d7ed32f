"""Byte-level text classification datasets and their batch iterator."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from jrnn.data import _checks


@dataclasses.dataclass(frozen=True, eq=False)
class ClassificationDataset:
    """Fixed-length byte windows with labels (n examples, s = seq_len).

    Attributes:
      tokens: uint8 ``[n, s]``, ASCII bytes (< 128), zero-padded after ``lengths[i]``.
      lengths: int32 ``[n]``, number of real bytes in each row (0 <= length <= s).
      labels: int32 ``[n]``, class index into ``class_names``.
      class_names: the name of each class, in label order.
      ids: ``[n]`` strings naming where each row came from (``"business/001"``, ``"train.csv:7"``);
        several rows share an id when an article gives several windows.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ids: tuple[str, ...]

    def __post_init__(self):
        n = self.tokens.shape[0] if self.tokens.ndim == 2 else -1
        if self.tokens.ndim != 2 or self.tokens.dtype != np.uint8:
            raise ValueError(
                f"tokens must be uint8 [n, seq_len], got {self.tokens.dtype} {self.tokens.shape}"
            )
        for name in ("lengths", "labels"):
            value = getattr(self, name)
            if value.shape != (n,) or value.dtype != np.int32:
                raise ValueError(f"{name} must be int32 [{n}], got {value.dtype} {value.shape}")
        if len(self.ids) != n:
            raise ValueError(f"ids must have {n} entries, got {len(self.ids)}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        """The window length ``s``."""
        return self.tokens.shape[1]

    @property
    def num_classes(self) -> int:
        """``len(class_names)``."""
        return len(self.class_names)


def windows(tokens: np.ndarray, seq_len: int, max_windows: int) -> list[np.ndarray]:
    """Up to ``max_windows`` consecutive slices of ``seq_len`` bytes (private helper).

    The first window is always returned (possibly short or empty); a later one only when it holds
    at least ``seq_len // 2`` bytes, so short tails do not become near-empty examples.
    """
    out = [tokens[:seq_len]]
    for k in range(1, max_windows):
        piece = tokens[k * seq_len : (k + 1) * seq_len]
        if len(piece) < max(1, seq_len // 2):
            break
        out.append(piece)
    return out


def build_dataset(
    pieces: Sequence[np.ndarray],
    labels: Sequence[int],
    ids: Sequence[str],
    class_names: Sequence[str],
    seq_len: int,
) -> ClassificationDataset:
    """Pads 1-D uint8 pieces (each <= seq_len bytes) into a dataset (private helper)."""
    tokens = np.zeros((len(pieces), seq_len), dtype=np.uint8)
    lengths = np.zeros(len(pieces), dtype=np.int32)
    for i, piece in enumerate(pieces):
        tokens[i, : len(piece)] = piece
        lengths[i] = len(piece)
    return ClassificationDataset(
        tokens=tokens,
        lengths=lengths,
        labels=np.asarray(labels, dtype=np.int32).reshape(len(pieces)),
        class_names=tuple(class_names),
        ids=tuple(ids),
    )


def classification_batches(
    dataset: ClassificationDataset,
    batch_size: int,
    *,
    seed: int | None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
    epoch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates once over a dataset in batches (one epoch).

    The order is a permutation drawn from ``(seed, epoch)``, so passing the epoch number gives a
    fresh, reproducible order each epoch. In a multi-host job every host passes the same seed and
    ``batch_size`` (the global batch) and its own ``shard_index``; host ``i`` receives rows
    ``[i * b, (i + 1) * b)`` of each global batch, with ``b = batch_size // shard_count``.

    Args:
      dataset: a :class:`ClassificationDataset`.
      batch_size: global batch size; must be divisible by ``shard_count``.
      seed: non-negative int for the shuffle; may be None when ``shuffle=False``.
      shuffle: permute the examples (else keep dataset order).
      drop_remainder: if True, the last incomplete global batch is dropped. If False, it is
        padded to full size with empty rows (tokens 0, length 0, label 0, ``mask`` False), so all
        batches have one shape (evaluation covers every example exactly once).
      shard_index: this host's shard, in ``[0, shard_count)``.
      shard_count: number of shards the global batch is split into.
      epoch: mixed into the seed.

    Yields:
      dicts with ``tokens`` uint8 ``[b, s]``, ``lengths`` int32 ``[b]``, ``labels`` int32 ``[b]``
      and ``mask`` bool ``[b]`` (False only on padding rows).

    Raises:
      TypeError, ValueError: on invalid arguments (named in the message).

    Examples:
      >>> ds = build_dataset([np.array([65], np.uint8)] * 5, [0, 1, 0, 1, 0], list("abcde"),
      ...                    ["x", "y"], seq_len=4)
      >>> [b["labels"].tolist() for b in classification_batches(ds, 2, seed=None, shuffle=False)]
      [[0, 1], [0, 1]]
    """
    if not isinstance(dataset, ClassificationDataset):
        raise TypeError(f"dataset must be a ClassificationDataset, got {type(dataset).__name__}")
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    start, rows = _checks.check_shard(batch_size, shard_index, shard_count)
    epoch = _checks.check_int("epoch", epoch, minimum=0)
    n = len(dataset)
    if shuffle:
        if seed is None:
            raise ValueError("seed must be a non-negative int when shuffle=True, got None")
        seed = _checks.check_seed("seed", seed)
        order = np.random.default_rng((seed, epoch)).permutation(n)
    else:
        order = np.arange(n)
    num_batches = n // batch_size if drop_remainder else -(-n // batch_size)
    for k in range(num_batches):
        global_rows = order[k * batch_size : (k + 1) * batch_size]
        local = global_rows[start : start + rows]
        pad = rows - len(local)
        batch = {
            "tokens": dataset.tokens[local],
            "lengths": dataset.lengths[local],
            "labels": dataset.labels[local],
            "mask": np.ones(len(local), dtype=bool),
        }
        if pad:
            batch = {
                key: np.concatenate([value, np.zeros((pad, *value.shape[1:]), value.dtype)])
                for key, value in batch.items()
            }
        yield batch
