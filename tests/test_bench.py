"""The benchmark harness: FLOP model, size parsing, and a tiny end-to-end run with JSON output."""

import json

import pytest

from jrnn.bench import report, sizes
from jrnn.bench.cli import main


def test_flops_match_hand_computation():
    # seed size, LSTM, tokens: layer 1 has no input matmul (row gather).
    s = sizes.SIZES["seed"]
    recurrent = 2 * 32 * 256 * 512 * 2048  # 2 b t h 4h
    assert sizes.flops("lstm", s, "forward") == recurrent
    head = 2 * 32 * 256 * 512 * 128
    assert sizes.flops("lstm", s, "train") == 3 * (recurrent + head)
    # 3 layers: layers 2 and 3 also multiply their [b t, h] input by W_ih [h, 4h].
    s3 = sizes.SIZES["seed3"]
    per_upper = 2 * 32 * 256 * (512 * 2048 + 512 * 2048)
    assert sizes.flops("lstm", s3, "forward") == recurrent + 2 * per_upper
    # Float inputs count the first input projection; GRU gate width 3h; min_gru none recurrent.
    small = sizes.parse_size("h=4,t=3,b=2,v=5")
    assert sizes.flops("gru", small, "forward", tokens=False) == 2 * 2 * 3 * (5 * 12 + 4 * 12)
    assert sizes.flops("min_gru", small, "forward", tokens=False) == 2 * 2 * 3 * 5 * 8


def test_parse_size_errors():
    assert sizes.parse_size("small") == sizes.SIZES["small"]
    s = sizes.parse_size("h=64,t=32,b=4,l=2")
    assert (s.hidden, s.steps, s.batch, s.layers, s.vocab) == (64, 32, 4, 2, 128)
    with pytest.raises(ValueError, match="size must be"):
        sizes.parse_size("hidden=3")
    with pytest.raises(ValueError, match="positive"):
        sizes.parse_size("h=0")


def test_targets_ratios():
    rows = [
        dict(impl="jrnn", label="jrnn:lstm/fused/u1", family="lstm", size="seed", mode="train",
             dtype="float32", median_s=0.14),
        dict(impl="jrnn", label="jrnn:lstm/xla/u1", family="lstm", size="seed", mode="train",
             dtype="float32", median_s=0.20),
        dict(impl="torch", label="torch:LSTM", family="lstm", size="seed", mode="train",
             dtype="float32", median_s=0.25),
    ]  # fmt: skip
    got = report.targets(rows, {"layers": {"1": 1.0, "8": 1.2}, "steps": {"64": 1.0, "4096": 2.0}})
    first = got[0]
    assert first["jrnn"] == "jrnn:lstm/fused/u1" and first["ratio"] == pytest.approx(0.56)
    assert first["ok"] is True
    assert got[1]["ok"] is None  # flax not measured
    by_name = {t["target"].split(" (")[0]: t for t in got}
    assert by_name["compile time 8 layers / 1 layer"]["ratio"] == pytest.approx(1.2)
    assert by_name["compile time flat in T"]["ok"] is False


def test_tiny_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    main(
        [
            "--sizes", "h=8,t=4,b=2,v=16", "--cells", "lstm", "--backends", "fused",
            "--modes", "train", "--reps", "2", "--warmup", "1", "--no-torch",
            "--no-compile-sweep", "--no-plot", "--peak-n", "256", "--json", str(out),
            "--markdown", str(md),
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    labels = {(r["label"], r["mode"]) for r in result["rows"]}
    assert ("jrnn:lstm/fused/u1", "train") in labels
    assert ("flax:OptimizedLSTMCell", "train") in labels
    assert ("flax:LSTMCell", "train") in labels
    for r in result["rows"]:
        assert r["median_s"] > 0 and len(r["times_s"]) == 2
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        if r["impl"] == "jrnn":
            assert r["compile_s"] > 0
    lstm = [r for r in result["rows"] if r["family"] == "lstm" and r["mode"] == "train"]
    best = min(r["median_s"] for r in lstm if r["impl"] == "flax")
    for r in lstm:
        assert r["ratio_to_best_peer"] == pytest.approx(r["median_s"] / best)
    assert "other processes used" in result["load_note"]
    assert result["env"]["peak_gflops"] > 0
    assert "| target |" in md.read_text()
    assert "jrnn:lstm/fused/u1" in capsys.readouterr().out


def test_write_markdown_replaces_only_the_marked_block(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(
        "intro `<!-- bench:begin -->`\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nnotes\n"
    )
    report.write_markdown(str(path), "new\n")
    assert path.read_text() == (
        "intro `<!-- bench:begin -->`\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\nnotes\n"
    )
    fresh = tmp_path / "fresh.md"
    report.write_markdown(str(fresh), "all\n")
    assert fresh.read_text() == "all\n"


@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("layers", [1, 2])
def test_chain_workload_matches_numpy_loop(mode, layers):
    import jax
    import numpy as np

    from jrnn.bench import workloads

    size = sizes.parse_size(f"h=4,t=5,b=3,l={layers}")
    fn, args = workloads.chain_workload(sizes.Workload("chain", "c", "lstm", "xla", 1, mode, size))
    weights, cs, *rest = (np.asarray(a, np.float64) for a in args)
    got = jax.jit(fn)(*args)
    assert weights.shape == (size.layers, 4, 16)
    for layer, (weight, c) in enumerate(zip(weights, cs, strict=True)):
        for _ in range(size.steps):
            c = np.tanh((c @ weight)[:, :4])
        out = got
        if mode == "train":
            hs, dz = (a[layer] for a in rest)
            assert hs.shape == (5 * 3, 4) and dz.shape == (5 * 3, 16)
            d = np.tile(c, (1, 4))
            for _ in range(size.steps):
                d = np.tile(np.tanh(d @ weight.T), (1, 4))
            np.testing.assert_allclose(np.asarray(got[1][layer]), hs.T @ dz, rtol=1e-5, atol=1e-5)
            c, out = d, got[0]
        np.testing.assert_allclose(np.asarray(out[layer]), c, rtol=1e-5, atol=1e-6)


def test_floor_analysis_budget_and_verdict():
    from jrnn.bench import floor

    size = sizes.parse_size("h=8,t=4,b=2")
    ms = {
        ("chain", "dot-chain", "train"): 0.7, ("jrnn", "lstm", "train"): 0.9,
        ("torch", "CHAIN", "train"): 0.3, ("torch", "LSTM", "train"): 0.8,
        ("chain", "dot-chain", "forward"): 0.2, ("jrnn", "lstm", "forward"): 0.3,
        ("torch", "CHAIN", "forward"): 0.1, ("torch", "LSTM", "forward"): 0.25,
    }  # fmt: skip
    rows = []
    for w in floor.workloads(size, with_torch=True):
        secs = ms[w.impl, w.cell, w.mode] + (w.backend == "fused") * 0.05 + (w.size.layers - 1)
        rows.append(dict(impl=w.impl, cell=w.cell, label=w.label, mode=w.mode, median_s=secs,
                         size_fields=dict(w.size.__dict__)))  # fmt: skip
    got = floor.analyse(rows, size, peak=1.0)
    train, fwd, deep = got["targets"]
    assert deep["budget_ms"] == pytest.approx(0.85 * 2800) and "jrnn_ms" not in deep
    assert deep["xla_chain_ms"] == pytest.approx(3 * 700)
    assert deep["reachable_with_xla_dot"] is True
    assert deep["xla_batched_chain_ms"] == pytest.approx(2700)
    assert train["budget_ms"] == pytest.approx(0.85 * 800)
    assert train["chain_over_budget"] == pytest.approx(700 / 680)
    assert train["reachable_with_xla_dot"] is False
    assert train["jrnn_outside_chain_ms"] == pytest.approx(200)
    assert fwd["reachable_with_xla_dot"] is True and fwd["jrnn_ms"] == pytest.approx(300)
    flops = floor.chain_flops(size, "train")
    assert flops == 3 * (2 * 2 * 4 * 8 * 32)
    assert got["chains"]["chain:xla train"]["gflops"] == pytest.approx(flops / 0.7 / 1e9)


def test_thunk_totals_and_a_real_trace():
    from jrnn.bench import thunks

    events = [
        {"ph": "X", "name": "dot.8", "dur": 300.0},
        {"ph": "X", "name": "dot.8", "dur": 100.0},
        {"ph": "X", "name": "wrapped_add", "dur": 50.0},
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9000.0},  # the whole step: left out
        {"ph": "B", "name": "fusion", "dur": 7.0},  # not a complete event
        {"ph": "X", "name": "no duration"},
    ]
    assert thunks.thunk_totals(events, reps=2) == [("dot.8", 0.2, 1), ("wrapped_add", 0.025, 0)]
    # A tiny real trace: the time loop's recurrent dot runs once per step (t = 5).
    w = sizes.Workload("jrnn", "lstm", "lstm", "xla", 1, "forward", sizes.parse_size("h=8,t=5,b=2"))
    rows = thunks.profile(w, reps=2, warmup=1)
    assert rows and all(ms >= 0 for _, ms, _ in rows)
    assert any(n == 5 for _, _, n in rows), rows


def test_bench_modules_do_not_shadow_the_standard_library():
    # The torch peer runs jrnn/bench/torch_peer.py by path, so jrnn/bench/ is first on its
    # sys.path: a module there named like a stdlib one (profile.py, trace.py...) would replace
    # the stdlib module inside torch.
    import pathlib
    import sys

    import jrnn.bench

    names = {p.stem for p in pathlib.Path(jrnn.bench.__file__).parent.glob("*.py")}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


def test_floor_cpu_chain_is_the_kernel_lstm_on_zero_inputs():
    """``chain:cpu`` runs the kernel's LSTM loop; its values equal the "xla" LSTM on zero
    projected inputs (forward: the final h; train: its gradient w.r.t. W_hh)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jrnn
    from jrnn._src.backends import cpu_kernel, xla
    from jrnn.bench import floor

    if not cpu_kernel.load():
        pytest.fail(f"the cpu kernel did not build: {cpu_kernel.status()}")
    size = sizes.parse_size("h=8,t=5,b=3")
    cell = jrnn.lstm(8)
    params = cell.init(jax.random.key(0), 1)
    for mode in ("forward", "train"):
        fn, (weight, h0, xp) = floor.cpu_chain_workload(
            sizes.Workload("chain", "dot-chain", "lstm", "cpu", 1, mode, size)
        )

        def ref(weight, h0=h0, xp=xp):
            p = params._replace(w_hh=weight)
            carry = (h0, jnp.zeros_like(h0))
            kw = dict(mask=None, resets=None, reverse=False, unroll=1, return_carries=False)
            return xla.run(cell, p, xp, carry, **kw)[0][0]

        want = ref(weight) if mode == "forward" else jax.grad(lambda w: jnp.sum(ref(w)))(weight)
        np.testing.assert_allclose(jax.jit(fn)(weight, h0, xp), want, rtol=1e-5, atol=1e-6)


def test_kernel_parts_assemble_the_whole_gradient(tmp_path):
    """``python -m jrnn.bench.kernel_parts``: the dW_hh assembled from the timed parts (forward
    with saved gates, backward loop, one matmul) equals ``jax.grad`` through backend="cpu"."""
    from jrnn.bench import kernel_parts

    out = tmp_path / "parts.json"
    assert kernel_parts.main(["--size", "h=16,t=7,b=3", "--reps", "1", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["max_abs_diff"] <= 1e-5 * got["scale"] and got["scale"] > 0
    assert [r["part"] for r in got["rows"]][-1] == "whole gradient"
