"""The documentation cannot rot: the site builds strictly and every Python block runs.

- ``mkdocs build --strict`` (broken links, missing pages, docstring warnings fail it), and the
  API reference has an entry for every name in the ``__all__`` of each public module.
- Every ```` ```python ```` block of every Markdown page in docs/ and of README.md runs: a
  page's blocks in order, in one namespace, in a fresh subprocess (CPU, in a temporary working
  directory). ```` ```text ````, ```` ```bash ```` and ```` ```console ```` blocks are not run.
- README's relative links point to files that exist, and user pages carry no development
  history (tracker references, internal files).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_MODULES = ("jrnn", "jrnn.flax", "jrnn.models", "jrnn.train", "jrnn.data", "jrnn.interop")
# A fence opens with ``` and an info string; ``` alone closes it. Indented fences (in lists) count.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)$")


def user_pages() -> list[Path]:
    """Markdown pages a user reads: docs/**/*.md and the top-level README and CONTRIBUTING."""
    pages = sorted(DOCS.rglob("*.md"))
    return pages + [p for p in (ROOT / "README.md", ROOT / "CONTRIBUTING.md") if p.exists()]


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of every fenced block, in order."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None or not m["info"].strip():
            i += 1
            continue
        indent, lang, start = m["indent"], m["info"].strip().split()[0], i + 1
        body, i = [], i + 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        blocks.append((lang, start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


def python_pages() -> list[Path]:
    return [p for p in user_pages() if any(b[0] == "python" for b in code_blocks(p.read_text()))]


def test_code_blocks_parser():
    text = "x\n```python\na = 1\n```\n- item\n\n  ```python\n  b = a\n  ```\n```text\nno\n```\n"
    assert code_blocks(text) == [
        ("python", 3, "a = 1\n"),
        ("python", 8, "b = a\n"),
        ("text", 11, "no\n"),
    ]
    assert any(p.name == "getting-started.md" for p in python_pages())


# Runs one page's python blocks in order in one namespace; tracebacks name the page and line.
_RUNNER = """
import sys
sys.path.insert(0, {root!r})
from tests.test_docs import code_blocks
page = {page!r}
ns = {{"__name__": "__main__"}}
for lang, line, code in code_blocks(open(page).read()):
    if lang == "python":
        exec(compile("\\n" * (line - 1) + code, page, "exec"), ns)
"""


@pytest.mark.slow
@pytest.mark.parametrize("page", python_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)
    code = _RUNNER.format(root=str(ROOT), page=str(page))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{page.name}: a python block failed\n{proc.stderr[-4000:]}"


def _has_mkdocs() -> bool:
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    )


@pytest.mark.skipif(
    not _has_mkdocs(),
    reason="mkdocs, mkdocs-material or mkdocstrings[python] missing: pip install -e '.[docs]'",
)
def test_site_builds_strict_with_full_api_reference(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = "".join(p.read_text() for p in (site / "api").rglob("*.html"))
    ids = set(re.findall(r'id="([\w.]+)"', html))
    missing = [
        f"{name}.{member}"
        for name in API_MODULES
        for member in importlib.import_module(name).__all__
        if f"{name}.{member}" not in ids
        and f"{name}.{member}" not in API_MODULES  # a submodule with its own page
    ]
    assert not missing, f"public names without an API reference entry: {missing}"


def test_readme_links_exist():
    links = []
    for page in (ROOT / "README.md", ROOT / "CONTRIBUTING.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                links.append(f"{page.name}: {target}")
    assert not links, f"links to files that do not exist: {links}"


# Development history belongs in CHANGELOG.md: user pages speak of the package, not its making.
_HISTORY = re.compile(
    r"\bissue #?\d+|(?-i:\bDESIGN\.md|\bNOTES\.md)|Measurement conditions"
    r"|other (engineers|sessions)",
    re.IGNORECASE,
)
_HISTORY_PAGES = ("notes.md", "changelog.md")  # where development history belongs


def test_user_pages_carry_no_development_history():
    hits = [
        f"{page.relative_to(ROOT)}:{n}: {line.strip()}"
        for page in user_pages()
        if page.name not in _HISTORY_PAGES
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if _HISTORY.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_release_metadata_agrees():
    """pyproject, jrnn.__version__, CITATION.cff and CHANGELOG.md name the same release."""
    import tomllib

    import jrnn

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "CITATION.cff").read_text()
    cff = dict(re.findall(r"^([\w-]+): \"?([^\"\n]*)\"?$", text, re.M))
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(re.findall(r"^([\w-]+):", text, re.M))
    assert re.search(r"^authors:\n  - (name|family-names): \S", text, re.M)
    assert project["version"] == jrnn.__version__ == cff["version"]
    assert project["license"] == cff["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    released = re.findall(r"^## \[(\d[^\]]*)\] - (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert released[0] == (jrnn.__version__, cff["date-released"]), released
    assert (ROOT / "jrnn" / "py.typed").exists()
