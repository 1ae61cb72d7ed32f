"""The ``jrnn`` command: ``train-lm`` on a small text, then ``sample`` from its workdir.

The commands run in their own processes (``python -m jrnn``), the way a user runs them.
"""

from __future__ import annotations

import dataclasses
import doctest
import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_experiments import write_text_fixture

from experiments.char_lm import config as lm_config
from jrnn import cli
from jrnn._src import lm_task
from jrnn.train import list_steps, read_jsonl

ROOT = pathlib.Path(__file__).parent.parent


def run_jrnn(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "jrnn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir trained by ``jrnn train-lm --preset smoke --steps 30``."""
    tmp = tmp_path_factory.mktemp("cli")
    text = write_text_fixture(tmp / "play.txt")
    out = run_jrnn(
        "train-lm",
        "--text",
        text,
        "--workdir",
        "runs/x",
        "--preset",
        "smoke",
        "--steps",
        "30",
        "--prompt",
        "the king",
        "--length",
        "40",
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr
    return tmp / "runs" / "x", out.stdout


@pytest.mark.parametrize("name", sorted(cli.PRESETS))
def test_presets_are_the_experiment_presets(name):
    preset, config = cli.get_preset(name), lm_config.get_config(name)
    for field in dataclasses.fields(preset):
        assert getattr(preset, field.name) == getattr(config, field.name), field.name


def test_train_lm_writes_checkpoint_metrics_and_samples(trained):
    workdir, stdout = trained
    assert list_steps(workdir / "checkpoints") == [30]
    assert json.loads((workdir / "lm.json").read_text())["model"]["hidden_size"] == 32
    summary = json.loads((workdir / "summary.json").read_text())
    train_rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [10, 20, 30]
    assert summary["steps"] == 30 and summary["first_loss"] == train_rows[0]["loss"]
    assert summary["final_loss"] < summary["first_loss"] < 5.0  # log(128) = 4.85 at init
    # The final sample continues the prompt and is printed.
    (sample,) = summary["samples"]
    assert sample.startswith("the king") and len(sample) == len("the king") + 40
    assert sample in stdout and "held-out" in stdout


def test_sample_is_deterministic_for_a_seed(trained):
    workdir, _ = trained
    out = run_jrnn(
        "sample",
        "--workdir",
        str(workdir),
        "--prompt",
        "the ",
        "--length",
        "30",
        "--num-samples",
        "2",
        "--seed",
        "1",
        "--top-k",
        "20",
        cwd=workdir,
    )
    assert out.returncode == 0, out.stderr
    same = cli.sample(str(workdir), "the ", length=30, num_samples=2, seed=1, top_k=20)
    assert out.stdout == same[0] + "\n" + "-" * 72 + "\n" + same[1] + "\n"
    assert all(t.startswith("the ") and len(t) == 34 for t in same)
    other = cli.sample(str(workdir), "the ", length=30, num_samples=2, seed=2, top_k=20)
    assert other != same


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train-lm", "--text", str(tmp_path / "missing.txt"), "--workdir", "w"])
    assert e.value.code == 2 and "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample", "--workdir", str(tmp_path / "empty")])
    assert "no trained model" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(SystemExit):
        cli.main(["train-lm", "--text", str(short), "--workdir", str(tmp_path / "w")])
    assert "needs at least" in capsys.readouterr().err
    assert not (tmp_path / "w" / "checkpoints").exists()
    with pytest.raises(ValueError, match="preset must be one of"):
        cli.get_preset("huge")


def test_docstring_examples():
    for name in cli.__all__:
        assert getattr(cli, name).__doc__, name
    for module in (cli, lm_task):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(lm_task).attempted >= 2  # get_preset's example runs
