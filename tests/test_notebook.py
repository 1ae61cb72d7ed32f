"""Executes the Colab notebook's code cells on the CPU with the smoke configs, so it cannot rot.

The notebook reads ``JRNN_NOTEBOOK_PRESET`` (``smoke`` here, ``full`` on the TPU) and
``JRNN_NOTEBOOK_WORKDIR``; the cell tagged ``install`` (git clone, pip) is skipped. The smoke
presets are pointed at fixture data written to tmp_path, so no data package is needed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest
from test_experiments import write_bbc_fixture, write_text_fixture

from experiments.byte_classifier import config as clf_config
from experiments.char_lm import config as lm_config
from experiments.sorter import config as sort_config

NOTEBOOK = pathlib.Path(__file__).parent.parent / "experiments" / "colab" / "jrnn_tpu.ipynb"


def code_cells(nb: dict) -> list[tuple[list[str], str]]:
    return [
        (c.get("metadata", {}).get("tags", []), "".join(c["source"]))
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


def shorter(config, steps: int):
    train = dataclasses.replace(config.train, steps=steps, eval_every=0, log_every=2)
    return dataclasses.replace(config, train=train)


def test_notebook_structure():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["accelerator"] == "TPU"
    cells = code_cells(nb)
    install = [src for tags, src in cells if "install" in tags]
    assert len(install) == 1 and "pip install" in install[0] and "REPO_URL" in install[0]
    for tags, src in cells:
        if "install" not in tags:
            shell = [ln for ln in src.splitlines() if ln.lstrip().startswith(("!", "%"))]
            assert not shell, f"shell/magic lines outside the install cell: {shell}"
            compile(src, "<notebook cell>", "exec")  # plain Python
    text = "\n".join(src for _, src in cells)
    for name in ("jax.devices()", "get_config(PRESET)", "show_curves", "generate("):
        assert name in text


def test_notebook_runs_with_smoke_configs(tmp_path, monkeypatch, capsys):
    bbc = write_bbc_fixture(tmp_path / "bbc")
    corpus = write_text_fixture(tmp_path / "play.txt")
    smoke_clf = clf_config.smoke().replace(bbc_root=bbc)
    smoke_lm = lm_config.smoke().replace(corpus=corpus)
    monkeypatch.setitem(clf_config.CONFIGS, "smoke", lambda: shorter(smoke_clf, 6))
    monkeypatch.setitem(lm_config.CONFIGS, "smoke", lambda: shorter(smoke_lm, 6))
    for name in ("smoke", "smoke_attention"):
        preset = sort_config.CONFIGS[name]
        monkeypatch.setitem(sort_config.CONFIGS, name, lambda preset=preset: shorter(preset(), 6))
    workdir = tmp_path / "runs"
    monkeypatch.setenv("JRNN_NOTEBOOK_PRESET", "smoke")
    monkeypatch.setenv("JRNN_NOTEBOOK_WORKDIR", str(workdir))

    nb = json.loads(NOTEBOOK.read_text())
    namespace: dict = {"__name__": "__notebook__"}
    for tags, src in code_cells(nb):
        if "install" in tags:
            continue
        exec(compile(src, "<notebook cell>", "exec"), namespace)  # noqa: S102

    assert namespace["PRESET"] == "smoke"
    assert 0.0 <= namespace["clf"]["test_accuracy"] <= 1.0
    assert namespace["lm"]["steps"] == 6
    texts = namespace["texts"]
    assert len(texts) == 4 and texts[0].startswith("ROMEO:\n") and texts[2].startswith("MACBETH")
    assert all(len(t) == len("MACBETH:\n") + 400 for t in texts[2:])
    for run in ("byte_classifier", "char_lm", "sorter_smoke", "sorter_smoke_attention"):
        summary = json.loads((workdir / run / "summary.json").read_text())
        assert summary["steps"] == 6, run
        assert (workdir / run / "curves.png").stat().st_size > 0
    attention = json.loads((workdir / "sorter_smoke_attention" / "summary.json").read_text())
    assert attention["config"]["attention"] is True
    out = capsys.readouterr().out
    assert "CpuDevice" in out or "cpu" in out.lower()


@pytest.mark.parametrize("name", ["full", "full_attention"])
def test_notebook_sorter_presets_exist(name):
    assert sort_config.get_config(name).hidden_size == 512
