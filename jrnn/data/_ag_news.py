"""AG News topic classification from its CSV files (``train.csv``, ``test.csv``)."""

from __future__ import annotations

import csv
import html
import io
import pathlib
import re

from jrnn.data import _checks
from jrnn.data._ascii import _ERROR_HANDLER, to_ascii
from jrnn.data._classification import ClassificationDataset, build_dataset

AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
"""AG News class names, in label order (CSV labels 1..4 become 0..3)."""

# The crawl replaced '&' of an entity by a space: "Street&#39;s" -> "Street #39;s".
_BROKEN_NUMERIC = re.compile(r"(?:^| )#(\d{1,7});")
_BROKEN_NAMED = re.compile(r"(?:^| )(quot|amp|lt|gt|apos|nbsp);")
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "apos": "'", "nbsp": " "}
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACES = re.compile(r"\s+")


def _numeric(match: re.Match) -> str:
    code = int(match.group(1))
    return html.unescape(f"&#{code};") if code < 0x110000 else match.group()


def clean_ag_news_text(text: str) -> str:
    """Repairs one AG News field.

    In order: every backslash (it stands where a line break was) becomes a space; broken
    entities whose '&' became a space are decoded together with that space (``" #39;"`` -> ``'``,
    ``" #36;"`` -> ``$``, ``" quot;"`` -> ``"``, ``" amp;"`` -> ``&``, also ``lt gt apos nbsp``);
    intact HTML entities (``&amp;``, ``&#39;``) are decoded; HTML tags (``<b>``, ``</A>``) are
    replaced by a space; whitespace runs become one space and the ends are stripped.

    Args:
      text: a raw title or description.

    Returns:
      The cleaned text (it may still hold non-ASCII characters; :func:`to_ascii` maps them).

    Examples:
      >>> clean_ag_news_text(r"Wall Street #39;s dwindling\\band &amp; co.")
      "Wall Street's dwindling band & co."
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    text = text.replace("\\", " ")
    text = _BROKEN_NUMERIC.sub(_numeric, text)
    text = _BROKEN_NAMED.sub(lambda m: _NAMED[m.group(1)], text)
    text = html.unescape(text)
    text = _TAG.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def load_ag_news_csv(path: str | pathlib.Path, seq_len: int = 256) -> ClassificationDataset:
    """Loads an AG News CSV file (``train.csv``: 120,000 rows, ``test.csv``: 7,600) as byte windows.

    The file has no header and three columns: class (1-4: World, Sports, Business, Sci/Tech),
    title, description, with standard CSV quoting (``""`` inside quoted fields). Each field is
    repaired with :func:`clean_ag_news_text`; the example text is ``title + ". " + description``,
    mapped to ASCII with :func:`jrnn.data.to_ascii`, truncated to ``seq_len`` bytes and
    zero-padded. Bytes that are not valid UTF-8 are read as Windows-1252/Latin-1.

    Args:
      path: the CSV file.
      seq_len: bytes per example.

    Returns:
      A :class:`ClassificationDataset` with labels 0-3 (class - 1), ``class_names``
      ``("World", "Sports", "Business", "Sci/Tech")`` and ids ``"<file name>:<record number>"``
      (1-based, counting CSV records, not lines).

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: on a record without exactly 3 columns or with a class outside 1-4 (the message
        gives the record number).

    Examples:
      >>> import tempfile, os
      >>> with tempfile.TemporaryDirectory() as d:
      ...     p = os.path.join(d, "tiny.csv")
      ...     _ = open(p, "w").write('"2","Goal!","A #39;late\\\\winner"\\n')
      ...     ds = load_ag_news_csv(p, seq_len=32)
      >>> ds.tokens[0, : ds.lengths[0]].tobytes(), ds.labels.tolist()
      (b"Goal!. A'late winner", [1])
    """
    seq_len = _checks.check_int("seq_len", seq_len, minimum=1)
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"AG News CSV {path} not found (expected train.csv or test.csv of AG News)"
        )
    text = path.read_bytes().decode("utf-8", errors=_ERROR_HANDLER)
    pieces, labels, ids = [], [], []
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(
                f"{path.name} record {number}: expected 3 columns (class, title, description), "
                f"got {len(row)}: {row!r:.200}"
            )
        label = row[0].strip()
        if label not in ("1", "2", "3", "4"):
            raise ValueError(f"{path.name} record {number}: class must be 1-4, got {label!r}")
        title, description = clean_ag_news_text(row[1]), clean_ag_news_text(row[2])
        pieces.append(to_ascii(f"{title}. {description}".strip())[:seq_len])
        labels.append(int(label) - 1)
        ids.append(f"{path.name}:{number}")
    return build_dataset(pieces, labels, ids, AG_NEWS_CLASSES, seq_len)
