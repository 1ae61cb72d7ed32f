"""Language-model batches for truncated backpropagation through time (stateful streams)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jrnn.data import _checks


def lm_epoch_length(num_tokens: int, batch_size: int, seq_len: int) -> int:
    """Number of batches per epoch of :func:`lm_stream_batches`.

    ``(num_tokens - seq_len) // (batch_size * seq_len)``: each of the ``batch_size`` rows reads
    its own contiguous stretch of ``epoch_length * seq_len`` tokens (+1 for the last target),
    and ``seq_len - 1`` tokens are kept in reserve for the random epoch offset.

    Args:
      num_tokens: length of the token stream.
      batch_size: global batch size (all shards together).
      seq_len: time steps per batch.

    Returns:
      Batches per epoch (>= 0; :func:`lm_stream_batches` requires >= 1).

    Examples:
      >>> lm_epoch_length(10_000, batch_size=4, seq_len=100)
      24
    """
    num_tokens = _checks.check_int("num_tokens", num_tokens, minimum=0)
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    seq_len = _checks.check_int("seq_len", seq_len, minimum=1)
    return max(0, (num_tokens - seq_len) // (batch_size * seq_len))


def lm_stream_batches(
    data,
    batch_size: int,
    seq_len: int,
    *,
    seed: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    start_step: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless (inputs, targets) batches whose rows are contiguous streams, for stateful RNNs.

    Each epoch cuts the stream into ``batch_size`` consecutive stretches of ``S * seq_len``
    tokens, ``S = lm_epoch_length(len(data), batch_size, seq_len)``; row ``r`` of batch ``k``
    of the epoch holds tokens ``[o + r * S * seq_len + k * seq_len, ... + seq_len)`` and its
    targets are the same positions + 1. So row ``r`` of batch ``k + 1`` continues exactly where
    row ``r`` of batch ``k`` ended: carry the RNN state from batch to batch (and stop its
    gradient), and reset it to zeros at the start of every epoch, i.e. at every global step
    with ``step % S == 0`` (counting from 0). The offset ``o`` is 0 without a seed; with a seed
    it is drawn per epoch from ``numpy.random.default_rng((seed, epoch))`` in
    ``[0, len(data) - 1 - batch_size * S * seq_len]`` (at least ``seq_len - 1`` wide), so the
    window boundaries move between epochs.

    Multi-host: every host passes the same ``data``, ``seed`` and global ``batch_size`` and its
    own ``shard_index``; host ``i`` gets global rows ``[i * b, (i + 1) * b)``,
    ``b = batch_size // shard_count``.

    Args:
      data: 1-D integer array (usually uint8 bytes from :func:`load_shakespeare`).
      batch_size: global rows per batch; divisible by ``shard_count``.
      seq_len: time steps per batch.
      seed: None for offset 0 in every epoch, or a non-negative int.
      shard_index: this host's shard in ``[0, shard_count)``.
      shard_count: number of shards.
      start_step: global step to start from (resuming a run: epoch ``start_step // S``,
        batch ``start_step % S``).

    Yields:
      ``(inputs, targets)``, int32 ``[batch_size // shard_count, seq_len]`` each.

    Raises:
      ValueError: if ``data`` is shorter than ``batch_size * seq_len + seq_len``, or on other
        invalid arguments.

    Examples:
      >>> stream = lm_stream_batches(np.arange(20, dtype=np.uint8), batch_size=2, seq_len=3)
      >>> for _ in range(3):
      ...     x, y = next(stream)
      ...     print(x.tolist(), y.tolist())
      [[0, 1, 2], [6, 7, 8]] [[1, 2, 3], [7, 8, 9]]
      [[3, 4, 5], [9, 10, 11]] [[4, 5, 6], [10, 11, 12]]
      [[0, 1, 2], [6, 7, 8]] [[1, 2, 3], [7, 8, 9]]
    """
    data = _checks.check_tokens_1d("data", data)
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    seq_len = _checks.check_int("seq_len", seq_len, minimum=1)
    first, rows = _checks.check_shard(batch_size, shard_index, shard_count)
    start_step = _checks.check_int("start_step", start_step, minimum=0)
    if seed is not None:
        seed = _checks.check_seed("seed", seed)
    steps = lm_epoch_length(len(data), batch_size, seq_len)
    if steps < 1:
        raise ValueError(
            f"data has {len(data)} tokens; batch_size={batch_size} x seq_len={seq_len} needs at "
            f"least batch_size * seq_len + seq_len = {batch_size * seq_len + seq_len}"
        )
    return _stream(data, batch_size, seq_len, seed, first, rows, steps, start_step)


def _stream(data, batch_size, seq_len, seed, first, rows, steps, start_step):
    stretch = steps * seq_len
    slack = len(data) - 1 - batch_size * stretch
    window = np.arange(seq_len + 1)
    epoch, k = divmod(start_step, steps)
    while True:
        offset = (
            0 if seed is None else int(np.random.default_rng((seed, epoch)).integers(slack + 1))
        )
        starts = offset + (first + np.arange(rows)) * stretch
        for step in range(k, steps):
            chunk = data[starts[:, None] + step * seq_len + window].astype(np.int32)
            yield chunk[:, :-1], chunk[:, 1:]
        epoch, k = epoch + 1, 0


def lm_eval_batches(
    data,
    batch_size: int,
    seq_len: int,
    *,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Finite batches predicting every token of ``data`` after the first exactly once.

    The ``len(data) - 1`` targets are cut into ``batch_size`` contiguous rows of
    ``L = ceil((len(data) - 1) / batch_size)`` (the last rows may be shorter), read ``seq_len``
    at a time, so rows continue across batches as in :func:`lm_stream_batches`: carry the state
    from the first batch to the last. Positions past a row's end are padding (input and target 0,
    mask False). Average the loss as ``sum(loss * mask) / sum(mask)`` (summed over all hosts).

    Args:
      data: 1-D integer array with at least 2 tokens.
      batch_size: global rows per batch; divisible by ``shard_count``.
      seq_len: time steps per batch.
      shard_index: this host's shard in ``[0, shard_count)``.
      shard_count: number of shards.

    Yields:
      ``(inputs, targets, mask)``: int32, int32 and bool ``[batch_size // shard_count, seq_len]``;
      ``ceil(L / seq_len)`` batches.

    Examples:
      >>> for x, y, m in lm_eval_batches(np.arange(8, dtype=np.uint8), batch_size=2, seq_len=3):
      ...     print(x.tolist(), y.tolist(), m.tolist())
      [[0, 1, 2], [4, 5, 6]] [[1, 2, 3], [5, 6, 7]] [[True, True, True], [True, True, True]]
      [[3, 0, 0], [0, 0, 0]] [[4, 0, 0], [0, 0, 0]] [[True, False, False], [False, False, False]]
    """
    data = _checks.check_tokens_1d("data", data)
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    seq_len = _checks.check_int("seq_len", seq_len, minimum=1)
    first, rows = _checks.check_shard(batch_size, shard_index, shard_count)
    if len(data) < 2:
        raise ValueError(f"data must hold at least 2 tokens, got {len(data)}")
    return _eval(data, batch_size, seq_len, first, rows)


def _eval(data, batch_size, seq_len, first, rows):
    total = len(data) - 1
    row_len = -(-total // batch_size)
    row_start = (first + np.arange(rows)) * row_len
    row_end = np.minimum(row_start + row_len, total)
    for step in range(-(-row_len // seq_len)):
        pos = row_start[:, None] + step * seq_len + np.arange(seq_len)
        mask = pos < row_end[:, None]
        safe = np.where(mask, pos, 0)
        inputs = np.where(mask, data[safe], 0).astype(np.int32)
        targets = np.where(mask, data[safe + 1], 0).astype(np.int32)
        yield inputs, targets, mask
