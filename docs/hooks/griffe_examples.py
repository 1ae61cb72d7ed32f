"""Griffe extension for the API reference: jrnn's docstrings as Markdown.

- jrnn's docstrings name their doctest section ``Example:``; Google style parses ``>>>`` lines
  into code blocks only under ``Examples:``. The heading is rewritten when griffe loads an
  object, so the sources keep their spelling and the site shows highlighted examples.
- Sphinx roles (``:class:`jrnn.Cell```, ``:func:`rnn```) become inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    """Rewrites every loaded docstring: ``Examples:`` headings, Sphinx roles as inline code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)
