"""Griffe extension for the API reference: doctests under ``Example:`` render as code.

jrnn's docstrings name their doctest section ``Example:``; Google style parses ``>>>`` lines
into code blocks only under ``Examples:``. This rewrites the heading when griffe loads an
object, so the sources keep their spelling and the site shows highlighted examples.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames ``Example:`` section headings to ``Examples:`` in every loaded docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
