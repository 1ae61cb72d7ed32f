"""The Colab notebook runs as shipped: its install cell against a wheel built from this checkout
(or a git URL of it), then every cell, on the CPU with the smoke preset.

The end-to-end runs (slow tier) build the wheel (``pip wheel``, as ``make wheel`` does), make a
throwaway venv that sees the test venv's packages (jax, flax, ...) through a ``.pth`` file but not
this checkout, and execute the notebook's code cells one after the other in that venv's Python,
filling the form fields (``NAME = value  # @param``) the way a user fills them in Colab. The
install cell's own ``pip install`` puts jrnn into the throwaway venv; the shared venv is never
written to."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
from test_experiments import write_text_fixture

from jrnn.train import list_steps

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOK = ROOT / "experiments" / "colab" / "jrnn_tpu.ipynb"
FORM_LINE = r"^(?P<name>{name}) = .*?(?P<param>  # @param.*)$"

# Runs the notebook's code cells in one namespace, with form values from a JSON file, and dumps
# some of the namespace to JSON. Plain exec: no Jupyter kernel is needed.
RUNNER = r"""
import json, re, sys
notebook, forms_file, out_file = sys.argv[1:4]
forms = json.load(open(forms_file))
filled = dict.fromkeys(forms, 0)
namespace = {"__name__": "__main__"}
for cell in json.load(open(notebook))["cells"]:
    if cell["cell_type"] != "code":
        continue
    src = "".join(cell["source"])
    for name, value in forms.items():
        pattern = r"^(?P<name>" + name + r") = .*?(?P<param>  # @param.*)$"
        src, n = re.subn(pattern, lambda m: f"{m['name']} = {value!r}{m['param']}", src, flags=re.M)
        filled[name] += n
    exec(compile(src, "<notebook cell>", "exec"), namespace)
assert all(n == 1 for n in filled.values()), filled
keep = ("PRESET", "PLATFORM", "LM_DIR", "lm", "texts", "HAVE_EXPERIMENTS", "source", "REPO")
out = {k: namespace.get(k) for k in keep}
out["jrnn_file"] = namespace["jrnn"].__file__
json.dump(out, open(out_file, "w"), default=str)
"""


def code_cells(nb: dict) -> list[tuple[list[str], str]]:
    return [
        (c.get("metadata", {}).get("tags", []), "".join(c["source"]))
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


def fill(src: str, **values) -> str:
    """``src`` with the form fields ``values`` set, like a user filling them in Colab."""
    for name, value in values.items():
        src, n = re.subn(
            FORM_LINE.format(name=name),
            lambda m, v=value: f"{m['name']} = {v!r}{m['param']}",
            src,
            flags=re.M,
        )
        assert n == 1, name
    return src


def test_notebook_structure():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["accelerator"] == "TPU"
    assert nb["metadata"]["colab"]["gpuType"] == "V5E1"  # Colab's free TPU: one v5e chip
    cells = code_cells(nb)
    install = [src for tags, src in cells if "install" in tags]
    assert len(install) == 1 and cells[0][1] == install[0]
    assert "YOUR_ORG" not in NOTEBOOK.read_text()
    text = "\n".join(src for _, src in cells)
    for _, src in cells:
        shell = [ln for ln in src.splitlines() if ln.lstrip().startswith(("!", "%"))]
        assert not shell, f"shell/magic lines: {shell}"  # plain Python: exec runs every cell
        compile(src, "<notebook cell>", "exec")
    for name in ("JRNN_SOURCE", "PRESET", "WORKDIR", "TEXT", "PROMPT", "LENGTH", "SEED"):
        assert len(re.findall(FORM_LINE.format(name=name), text, flags=re.M)) == 1, name
    for call in ("files.upload()", "drive.mount(", "auth.authenticate_user()", "cli.train_lm("):
        assert call in text
    assert "cli.sample(" in cells[-3][1]  # the last cell of the main part samples text


def test_install_cell_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no wheel here, no source pasted, not in Colab
    (tags, src), *_ = code_cells(json.loads(NOTEBOOK.read_text()))
    assert "install" in tags
    with pytest.raises(RuntimeError, match=r"No jrnn to install: paste .* `make wheel` builds"):
        exec(compile(fill(src, JRNN_SOURCE=""), "<install cell>", "exec"), {})  # noqa: S102


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """The wheel ``make wheel`` builds, from a copy of the checkout (offline: no isolation)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "jrnn", src / "jrnn", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ROOT.iterdir():
        if f.is_file() and (f.name in ("pyproject.toml", "README.md") or f.stem == "LICENSE"):
            shutil.copy(f, src / f.name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = (tmp / "dist").glob("jrnn-*.whl")
    return built


def fresh_venv(where: pathlib.Path) -> pathlib.Path:
    """A venv whose own site-packages come first, then this test venv's (no jrnn checkout)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shared = sysconfig.get_paths()["purelib"]
    pathlib.Path(site, "_shared_test_venv.pth").write_text(
        f"import site; site.addsitedir({shared!r})\n"
    )
    return python


def run_notebook(python, cwd, forms, tmp_path) -> tuple[dict, str]:
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "forms.json").write_text(json.dumps(forms))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    args = [str(tmp_path / "runner.py"), str(NOTEBOOK), str(tmp_path / "forms.json")]
    proc = subprocess.run(
        [str(python), *args, str(tmp_path / "out.json")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text()), proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", ["wheel_in_folder", "pasted_spec", "git_url"])
def test_notebook_runs_as_shipped(how, wheel, tmp_path):
    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    cwd = tmp_path / "content"
    cwd.mkdir()
    text = write_text_fixture(tmp_path / "play.txt")
    forms = {"JRNN_SOURCE": "", "WORKDIR": str(tmp_path / "runs"), "TEXT": text}
    if how == "wheel_in_folder":  # the file a user uploads lands in the working folder
        shutil.copy(wheel, cwd / wheel.name)
    elif how == "pasted_spec":
        forms["JRNN_SOURCE"] = str(wheel)
    else:  # the repository's git URL (here a bare clone of this checkout's HEAD)
        bare = tmp_path / "jrnn.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(bare)], check=True)
        forms["JRNN_SOURCE"] = f"git+file://{bare}"
    out, stdout = run_notebook(python, cwd, forms, tmp_path)

    # The install cell said what it did, and jrnn came from what it installed, not this checkout.
    expect = "the wheel found here" if how == "wheel_in_folder" else "the source you pasted"
    assert f"installing jrnn from {expect}: " in stdout
    assert out["jrnn_file"].startswith(str(venv))
    assert (out["PRESET"], out["PLATFORM"]) == ("smoke", "cpu")  # CPU: the smoke preset
    if how == "git_url":
        # The clone brings experiments/: the byte classifier and both sorters (one "t=4: {...}"
        # by-length row each) ran too.
        assert out["REPO"] == str(cwd / "jrnn_repo") and out["HAVE_EXPERIMENTS"] is True
        assert "test accuracy:" in stdout and stdout.count("t=4: {") == 2
        for run in ("byte_classifier_smoke", "sorter_smoke", "sorter_smoke_attention"):
            assert (tmp_path / "runs" / run / "summary.json").is_file(), run
    else:
        # The wheel has no experiments/, so the optional part says so.
        assert out["REPO"] is None and out["HAVE_EXPERIMENTS"] is False
        assert "experiments/ is not importable" in stdout
    # Training ran, the loss went down, the checkpoint and the curves were written.
    lm, lm_dir = out["lm"], pathlib.Path(out["LM_DIR"])
    assert lm_dir == tmp_path / "runs" / "char_lm_smoke" and lm["steps"] == 60
    assert lm["final_loss"] < lm["first_loss"] - 0.5
    assert list_steps(lm_dir / "checkpoints") == [60]
    assert (lm_dir / "curves.png").stat().st_size > 10_000
    assert "held-out" in stdout and "learning curves:" in stdout
    # The last cell printed two samples continuing the prompt.
    texts = out["texts"]
    assert len(texts) == 2 and all(t.startswith("ROMEO:") and len(t) == 406 for t in texts)
    assert all(t in stdout for t in texts)
    if how == "wheel_in_folder":
        # The wheel's console script samples the same texts from the same checkpoint.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cmd = [str(venv / "bin" / "jrnn"), "sample", "--workdir", str(lm_dir), "--prompt"]
        cmd += ["ROMEO:", "--length", "400", "--top-p", "0.95", "--num-samples", "2"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == texts[0] + "\n" + "-" * 72 + "\n" + texts[1] + "\n"
    # The shared venv's editable jrnn is still in place.
    assert pathlib.Path(sysconfig.get_paths()["purelib"], "__editable__.jrnn-0.1.0.pth").exists()
