"""The sorting task: random integer sequences and their sorted versions."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from jrnn.data import _checks


class SortBatch(NamedTuple):
    """One batch of the sort task (b batch, t length).

    Attributes:
      src: int32 ``[b, t]``, values in ``[0, vocab_size)``; 0 after ``lengths[i]``.
      target: int32 ``[b, t]``, each row's valid prefix sorted ascending; 0 after ``lengths[i]``.
      lengths: int32 ``[b]`` when the batch has variable lengths (``min_length`` set), else None
        (every row has length ``t``).
    """

    src: np.ndarray
    target: np.ndarray
    lengths: np.ndarray | None


def _generator(key_or_seed) -> np.random.Generator:
    """A numpy Generator from an int seed, a tuple of ints, a Generator, or a JAX PRNG key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, numbers.Integral) and not isinstance(key_or_seed, bool):
        return np.random.default_rng(_checks.check_seed("key_or_seed", key_or_seed))
    if isinstance(key_or_seed, tuple | list) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in key_or_seed
    ):
        return np.random.default_rng([int(v) for v in key_or_seed])
    dtype = getattr(key_or_seed, "dtype", None)
    if dtype is not None and str(dtype).startswith("key<"):  # a typed JAX key: jax is loaded
        import jax

        key_or_seed = jax.random.key_data(key_or_seed)
        dtype = key_or_seed.dtype
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.unsignedinteger):
        return np.random.default_rng(np.asarray(key_or_seed).ravel().astype(np.uint64))
    raise TypeError(
        "key_or_seed must be a non-negative int, a tuple of them, a numpy Generator or a JAX "
        f"PRNG key, got {type(key_or_seed).__name__} {key_or_seed!r:.80}"
    )


def sort_batch(
    key_or_seed,
    batch_size: int,
    length: int,
    vocab_size: int,
    *,
    min_length: int | None = None,
) -> SortBatch:
    """Draws a batch of the sort task: uniform random integers and the same values sorted.

    Deterministic for a seed: the same seed (or JAX key) always gives the same batch. With
    ``min_length``, row ``i`` has length ``lengths[i]`` drawn uniformly from
    ``[min_length, length]``; its positions from ``lengths[i]`` on are 0 in both ``src`` and
    ``target`` (0 is also a valid value: use ``lengths`` to tell them apart).

    Args:
      key_or_seed: non-negative int, tuple of ints (e.g. ``(seed, step)``), a
        ``numpy.random.Generator`` (advanced in place), or a JAX PRNG key (raw uint32 or typed).
      batch_size: rows ``b``.
      length: time steps ``t``.
      vocab_size: values are drawn from ``[0, vocab_size)``.
      min_length: None for fixed length ``t``, else the shortest row length (1 <= it <= t).

    Returns:
      A :class:`SortBatch` ``(src, target, lengths)``.

    Examples:
      >>> batch = sort_batch(0, batch_size=2, length=5, vocab_size=10)
      >>> bool((batch.target == np.sort(batch.src, axis=1)).all()), batch.lengths
      (True, None)
    """
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    length = _checks.check_int("length", length, minimum=1)
    vocab_size = _checks.check_int("vocab_size", vocab_size, minimum=1)
    if min_length is not None:
        min_length = _checks.check_int("min_length", min_length, minimum=1)
        if min_length > length:
            raise ValueError(f"min_length must be <= length={length}, got {min_length}")
    rng = _generator(key_or_seed)
    src = rng.integers(0, vocab_size, size=(batch_size, length), dtype=np.int32)
    if min_length is None:
        return SortBatch(src, np.sort(src, axis=1), None)
    lengths = rng.integers(min_length, length + 1, size=batch_size, dtype=np.int32)
    valid = np.arange(length) < lengths[:, None]
    src = np.where(valid, src, 0).astype(np.int32)
    target = np.sort(np.where(valid, src, vocab_size), axis=1)  # padding sorts to the end
    target = np.where(valid, target, 0).astype(np.int32)
    return SortBatch(src, target, lengths)


def sort_batches(
    seed: int,
    batch_size: int,
    length: int | Callable[[int], int],
    vocab_size: int,
    *,
    min_length: int | None = None,
    start_step: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[SortBatch]:
    """Endless sort-task batches; batch ``i`` is ``sort_batch((seed, i), ...)``.

    Each batch depends only on ``(seed, step)``, so a resumed run (``start_step``) sees the
    same data as an uninterrupted one. In a multi-host job every host passes the same seed and
    ``batch_size`` (the global batch) and its own ``shard_index``; host ``i`` receives rows
    ``[i * b, (i + 1) * b)`` of each global batch, with ``b = batch_size // shard_count``.

    Args:
      seed: non-negative int.
      batch_size: rows per batch.
      length: time steps, or a function ``step -> length`` for a curriculum (e.g.
        ``lambda s: curriculum_length(s, 8, 64, 10_000)``; each new length compiles anew under
        ``jax.jit``, so prefer few distinct values, or a fixed ``length`` with ``min_length``).
      vocab_size: values are drawn from ``[0, vocab_size)``.
      min_length: as in :func:`sort_batch` (must be <= every length).
      start_step: index of the first batch.
      shard_index: this host's shard, in ``[0, shard_count)``.
      shard_count: number of shards the global batch is split into.

    Yields:
      :class:`SortBatch` tuples of ``batch_size // shard_count`` rows.

    Examples:
      >>> batches = sort_batches(0, batch_size=2, length=lambda s: 4 + s, vocab_size=10)
      >>> [next(batches).src.shape for _ in range(3)]
      [(2, 4), (2, 5), (2, 6)]
    """
    seed = _checks.check_seed("seed", seed)
    start_step = _checks.check_int("start_step", start_step, minimum=0)
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    vocab_size = _checks.check_int("vocab_size", vocab_size, minimum=1)
    first, rows = _checks.check_shard(batch_size, shard_index, shard_count)
    if not callable(length):
        length = _checks.check_int("length", length, minimum=1)
        sort_batch(0, 1, length, vocab_size, min_length=min_length)  # validates min_length now
    elif min_length is not None:
        _checks.check_int("min_length", min_length, minimum=1)
    rows = slice(first, first + rows)
    return _sort_stream(seed, batch_size, length, vocab_size, min_length, start_step, rows)


def _sort_stream(seed, batch_size, length, vocab_size, min_length, start_step, rows):
    step = start_step
    while True:
        size = length(step) if callable(length) else length
        b = sort_batch((seed, step), batch_size, size, vocab_size, min_length=min_length)
        yield SortBatch(b.src[rows], b.target[rows], None if b.lengths is None else b.lengths[rows])
        step += 1


def curriculum_length(step: int, start: int, end: int, steps: int) -> int:
    """A linear curriculum: ``start`` at step 0, ``end`` from step ``steps`` on.

    ``round(start + (end - start) * min(step, steps) / steps)``; ``steps = 0`` gives ``end``.

    Args:
      step: current training step (>= 0).
      start: length at step 0 (>= 1).
      end: final length (>= 1; may be smaller than ``start``).
      steps: steps over which the length moves from ``start`` to ``end``.

    Returns:
      The sequence length for ``step``.

    Examples:
      >>> [curriculum_length(s, 8, 64, 100) for s in (0, 50, 100, 500)]
      [8, 36, 64, 64]
    """
    step = _checks.check_int("step", step, minimum=0)
    start = _checks.check_int("start", start, minimum=1)
    end = _checks.check_int("end", end, minimum=1)
    steps = _checks.check_int("steps", steps, minimum=0)
    if steps == 0:
        return end
    return int(round(start + (end - start) * min(step, steps) / steps))
