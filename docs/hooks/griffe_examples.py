"""Griffe extension for the API reference: jrnn's docstrings as Markdown.

- jrnn's docstrings name their doctest section ``Example:``; Google style parses ``>>>`` lines
  into code blocks only under ``Examples:``. The heading is rewritten when griffe loads an
  object, so the sources keep their spelling and the site shows highlighted examples.
- Sphinx roles (``:class:`jrnn.Cell```, ``:func:`rnn```) become inline code.
- reST literal blocks (a line ending in ``::``, then an indented block) become fenced code
  blocks; a bare ``Example::`` line becomes a bold label rather than a section heading.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _literal_blocks(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if not line.rstrip().endswith("::") or j >= len(lines):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        if _indent(lines[j]) <= base:
            out.append(line)
            i += 1
            continue
        end = j
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        block = lines[j:end]
        while block and not block[-1].strip():
            block.pop()
        cut = min(_indent(b) for b in block if b.strip())
        pad = " " * base
        head = line.rstrip()[:-1]
        if re.fullmatch(r"\s*\w+:", head):
            head = f"{pad}**{head.strip()[:-1]}**"
        out += [head, "", pad + "```"] + [pad + b[cut:] for b in block] + [pad + "```", ""]
        i = end
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Rewrites every loaded docstring: ``Examples:`` headings, roles, literal blocks."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _literal_blocks(_ROLE.sub(r"`\1`", text))
