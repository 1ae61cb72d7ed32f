"""Bytes for a 128-way one-hot: ASCII stand-ins for everything else, and a printable decoder."""

from __future__ import annotations

import codecs
import functools
import re
import string
import unicodedata

import numpy as np

# Characters with a conventional ASCII spelling that Unicode decomposition (NFKD) does not give.
ASCII_STANDINS: dict[str, str] = {
    "\u00a3": "#",  # pound sign: '#' is its slot in the UK national ASCII variant (ISO 646-GB)
    "\u20ac": "EUR",  # euro sign
    "\u00a0": " ",  # no-break space
    "\u2018": "'",  # curly and low single quotes, primes, acute accent
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u00b4": "'",
    "\u201c": '"',  # curly and low double quotes, double prime, guillemets
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-",  # hyphens, figure dash, en dash, em dash, horizontal bar, minus sign
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2212": "-",
    "\u2044": "/",  # fraction slash (NFKD turns 1/2 into 1, U+2044, 2)
    "\u2026": "...",  # ellipsis
    "\u2022": "*",  # bullet
    "\u00d7": "x",  # multiplication sign
    "\u00df": "ss",  # letters without a decomposition
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u0153": "oe",
    "\u0152": "OE",
    "\u00f8": "o",
    "\u00d8": "O",
    "\u0142": "l",
    "\u0141": "L",
    "\u0111": "d",
    "\u0110": "D",
    "\u00f0": "d",
    "\u0131": "i",
    "\u00a9": "(c)",
    "\u00ae": "(R)",
    "\u00ad": "",  # soft hyphen and zero-width characters carry no text
    "\u200b": "",
    "\u200c": "",
    "\u200d": "",
    "\ufeff": "",  # byte-order mark
}
"""ASCII stand-ins for common non-ASCII characters, used by ``to_ascii``."""

UNKNOWN = "?"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ERROR_HANDLER = "jrnn.data.latin1"


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: reads each undecodable byte as Windows-1252, else Latin-1."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    chars = []
    for byte in error.object[error.start : error.end]:
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252
            chars.append(chr(byte))
    return "".join(chars), error.end


codecs.register_error(_ERROR_HANDLER, _latin1_fallback)


@functools.lru_cache(maxsize=4096)
def ascii_standin(char: str) -> str:
    """The ASCII text that replaces one non-ASCII character (see :func:`to_ascii`).

    Args:
      char: a single character.

    Returns:
      A string of zero or more ASCII characters.

    Examples:
      >>> ascii_standin("é"), ascii_standin("£"), ascii_standin("—"), ascii_standin("中")
      ('e', '#', '-', '?')
    """
    if not isinstance(char, str) or len(char) != 1:
        raise TypeError(f"char must be a single character, got {char!r}")
    if char.isascii():
        return char
    if char in ASCII_STANDINS:
        return ASCII_STANDINS[char]
    pieces = (
        ASCII_STANDINS.get(c, c)
        for c in unicodedata.normalize("NFKD", char)
        if not unicodedata.combining(c)
    )
    out = "".join(pieces)
    return out if out and out.isascii() else UNKNOWN


def _replace(match: re.Match) -> str:
    return ascii_standin(match.group())


def to_ascii(text) -> np.ndarray:
    """Encodes text as 7-bit bytes, replacing every non-ASCII character by an ASCII stand-in.

    A model that one-hot encodes bytes with depth 128 would silently see a zero vector for a byte
    >= 128 (``jax.nn.one_hot`` does that for out-of-range indices), so none is passed on. The rule:

    1. ``bytes`` are decoded as UTF-8; a byte that is not part of valid UTF-8 is read on its own
       as Windows-1252 where that defines it (0x80-0x9F: curly quotes, dashes, euro) and as
       Latin-1 otherwise (so a lone 0xA3 is '£'). ``str`` input is used as is.
    2. ASCII characters (U+0000-U+007F, control characters included) are kept unchanged.
    3. A character in :data:`ASCII_STANDINS` becomes its entry: '£' -> '#', curly quotes ->
       straight quotes, dashes and the minus sign -> '-', no-break space -> ' ',
       '…' -> '...', '€' -> 'EUR', 'ß' -> 'ss', 'æ' -> 'ae', soft hyphen and zero-width
       characters -> nothing.
    4. Otherwise the character is decomposed (Unicode NFKD) and its combining marks dropped,
       keeping the result if it is ASCII: 'é' -> 'e', 'Ç' -> 'C', 'ﬁ' -> 'fi', '½' -> '1/2',
       full-width 'Ａ' -> 'A'.
    5. Anything left becomes '?' (one '?' per character, e.g. for CJK text or emoji).

    Args:
      text: a ``str``, or ``bytes``/``bytearray``/``memoryview`` holding (mostly) UTF-8.

    Returns:
      uint8 array ``[n]`` with every value < 128; ``n`` can differ from the input length.

    Raises:
      TypeError: for any other input type.

    Examples:
      >>> to_ascii("Café £5 — “hi”").tobytes()
      b'Cafe #5 - "hi"'
      >>> to_ascii(b"caf\\xe9 \\xa3").tobytes()  # Latin-1 bytes are not valid UTF-8
      b'cafe #'
    """
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if raw.isascii():
            return np.frombuffer(raw, dtype=np.uint8).copy()
        text = raw.decode("utf-8", errors=_ERROR_HANDLER)
    elif not isinstance(text, str):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    if not text.isascii():
        text = _NON_ASCII.sub(_replace, text)
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).copy()


_PRINTABLE = np.array([chr(i) if chr(i) in string.printable else "_" for i in range(256)])


def decode(tokens) -> str:
    """Renders byte tokens as text, showing every non-printable byte as '_'.

    Printable means Python's ``string.printable`` (letters, digits, punctuation, space, '\\t',
    '\\n', '\\r', '\\x0b', '\\x0c'), the test the 2017 lecture's ``generate_text`` used. Bytes
    >= 128 and values outside [0, 256) are rendered as '_' too.

    Args:
      tokens: 1-D integer array-like (numpy, list, ``bytes``), e.g. a row of model samples.

    Returns:
      A ``str`` with one character per token.

    Raises:
      TypeError: if ``tokens`` is not integer-valued.
      ValueError: if ``tokens`` is not 1-D (decode rows one at a time).

    Examples:
      >>> decode([72, 105, 0, 33, 200])
      'Hi_!_'
    """
    if isinstance(tokens, bytes | bytearray | memoryview):
        tokens = np.frombuffer(bytes(tokens), dtype=np.uint8)
    array = np.asarray(tokens)
    if array.size == 0:
        return ""
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"tokens must be integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(
            f"tokens must be 1-D, got shape {array.shape}; use [decode(row) for row in tokens]"
        )
    values = array.astype(np.int64)
    inside = (values >= 0) & (values < 256)
    return "".join(np.where(inside, _PRINTABLE[np.where(inside, values, 0)], "_").tolist())
