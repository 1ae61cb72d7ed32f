"""PyTorch state_dict interop: round trips and a numpy float64 nn.LSTM / nn.GRU / nn.RNN."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src import interop

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _cell(kind, hidden, proj=None, two_biases=False):
    if kind == "lstm":
        return jrnn.lstm(hidden, proj_size=proj, two_biases=two_biases)
    if kind == "gru":
        return jrnn.gru(hidden)
    return jrnn.elman(hidden, activation=kind[4:], two_biases=two_biases)


def make_state_dict(kind, input_size, hidden, num_layers, bidirectional, proj=None, bias=True):
    """A random state_dict with PyTorch's names and shapes (as torch would build it)."""
    rng = np.random.default_rng(0)
    G, P, D = GATES[kind], proj or hidden, 2 if bidirectional else 1
    sd = {}
    for k in range(num_layers):
        for sfx in [""] + (["_reverse"] if bidirectional else []):
            s = f"_l{k}{sfx}"
            in_size = input_size if k == 0 else D * P
            sd["weight_ih" + s] = rng.uniform(-0.5, 0.5, (G * hidden, in_size)).astype(np.float32)
            sd["weight_hh" + s] = rng.uniform(-0.5, 0.5, (G * hidden, P)).astype(np.float32)
            if bias:
                sd["bias_ih" + s] = rng.uniform(-0.5, 0.5, (G * hidden,)).astype(np.float32)
                sd["bias_hh" + s] = rng.uniform(-0.5, 0.5, (G * hidden,)).astype(np.float32)
            if proj:
                sd["weight_hr" + s] = rng.uniform(-0.5, 0.5, (P, hidden)).astype(np.float32)
    return sd


# ------------------------------------------------------------ numpy float64 PyTorch equations


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_torch_step(kind, w, s, x, hx):
    """One step of torch.nn.{LSTM,GRU,RNN} as documented, float64, h @ W.T layout."""
    g = lambda n: np.asarray(w[n + s], np.float64) if n + s in w else 0.0  # noqa: E731
    gi = x @ g("weight_ih").T + g("bias_ih")
    if kind == "lstm":
        h, c = hx
        gates = gi + h @ g("weight_hh").T + g("bias_hh")
        i, f, gg, o = np.split(gates, 4, axis=-1)
        c = _sig(f) * c + _sig(i) * np.tanh(gg)
        h = _sig(o) * np.tanh(c)
        if "weight_hr" + s in w:
            h = h @ g("weight_hr").T
        return (h, c), h
    if kind == "gru":
        h = hx
        gh = h @ g("weight_hh").T + g("bias_hh")
        ir, iz, in_ = np.split(gi, 3, axis=-1)
        hr, hz, hn = np.split(gh, 3, axis=-1)
        r, z = _sig(ir + hr), _sig(iz + hz)
        n = np.tanh(in_ + r * hn)
        h = (1 - z) * n + z * h
        return h, h
    act = np.tanh if kind == "rnn_tanh" else (lambda v: np.maximum(v, 0.0))
    h = act(gi + hx @ g("weight_hh").T + g("bias_hh"))
    return h, h


def np_torch_module(kind, sd, xs, lengths, num_layers, bidirectional, hidden, proj=None):
    """A packed-sequence run of the module: each sequence alone, truncated to its length."""
    B, T, _ = xs.shape
    P, D = proj or hidden, 2 if bidirectional else 1
    ys = np.zeros((B, T, D * P))
    h_n = np.zeros((num_layers * D, B, P))
    c_n = np.zeros((num_layers * D, B, hidden))
    for b in range(B):
        x = np.asarray(xs[b, : lengths[b]], np.float64)
        for k in range(num_layers):
            outs = []
            for d in range(D):
                s = f"_l{k}" + ("_reverse" if d else "")
                hx = (np.zeros(P), np.zeros(hidden)) if kind == "lstm" else np.zeros(P)
                out = np.zeros((x.shape[0], P))
                order = range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])
                for t in order:
                    hx, out[t] = np_torch_step(kind, sd, s, x[t], hx)
                h_n[k * D + d, b] = hx[0] if kind == "lstm" else hx
                if kind == "lstm":
                    c_n[k * D + d, b] = hx[1]
                outs.append(out)
            x = np.concatenate(outs, axis=-1)
        ys[b, : lengths[b]] = x
    return ys, ((h_n, c_n) if kind == "lstm" else h_n)


# ------------------------------------------------------------------------------------ tests

CASES = [
    ("lstm", None),
    ("lstm", 3),  # proj_size -> w_hr
    ("gru", None),
    ("rnn_tanh", None),
    ("rnn_relu", None),
]
# Cells built with two_biases=True: PyTorch's bias_ih and bias_hh kept as b and b_hh.
TWO_BIAS_CASES = [("lstm", None), ("lstm", 3), ("rnn_tanh", None)]


@pytest.mark.parametrize("kind,proj", CASES)
def test_two_layer_bidirectional_matches_numpy_torch(kind, proj):
    hidden, inputs = 5, 4
    sd = make_state_dict(kind, inputs, hidden, 2, True, proj)
    net = jrnn.rnn(_cell(kind, hidden, proj), num_layers=2, bidirectional=True)
    params = interop.from_torch(sd, net)
    xs = np.random.default_rng(1).normal(size=(3, 6, inputs)).astype(np.float32)
    lengths = np.array([6, 4, 1])
    ys, carries = jax.jit(lambda p, x, n: net.apply(p, x, lengths=n, backend="xla"))(
        params, xs, lengths
    )
    ys_np, hn_np = np_torch_module(kind, sd, xs, lengths, 2, True, hidden, proj)
    np.testing.assert_allclose(ys, ys_np, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        jax.tree.leaves(interop.carries_to_torch(carries, net)), jax.tree.leaves(hn_np), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,proj", CASES)
def test_round_trips_are_exact(kind, proj):
    sd = make_state_dict(kind, 4, 5, 3, True, proj)
    net = jrnn.rnn(_cell(kind, 5, proj), num_layers=3, bidirectional=True)
    params = interop.from_torch(sd, net)
    assert params.first.w_ih.shape[-3:] == (2, 4, GATES[kind] * 5)
    assert jax.tree.leaves(params.rest)[0].shape[:2] == (2, 2)
    back = interop.to_torch(params, net)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        if kind != "gru" and key.startswith("bias_"):
            continue
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    if kind != "gru":  # one bias in jrnn: all of it in bias_ih, zeros in bias_hh
        for key in (k for k in sd if k.startswith("bias_ih")):
            hh = key.replace("bias_ih", "bias_hh")
            np.testing.assert_array_equal(back[key], sd[key] + sd[hh])
            np.testing.assert_array_equal(back[hh], np.zeros_like(sd[hh]))
    again = interop.from_torch(back, net)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_round_trip_from_jrnn_init_with_prefix():
    net = jrnn.rnn(jrnn.lstm(5, proj_size=2), num_layers=3, bidirectional=True)
    fresh = net.init(jax.random.key(0), 4)
    sd = interop.to_torch(fresh, net, prefix="enc.rnn.")
    assert "enc.rnn.weight_hr_l2_reverse" in sd and sd["enc.rnn.bias_ih_l0"].flags.writeable
    back = interop.from_torch({**sd, "enc.fc.weight": np.zeros(3)}, net, prefix="enc.rnn.")
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_single_cell_keys_and_steps():
    """nn.LSTMCell names (no suffix) and one-layer nn.LSTM names both give the cell's params."""
    sd = make_state_dict("lstm", 3, 4, 1, False)
    cell = jrnn.lstm(4)
    p0 = interop.from_torch(sd, cell)
    p1 = interop.from_torch({k.replace("_l0", ""): v for k, v in sd.items()}, cell)
    for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(2).normal(size=(2, 3))
    (h, c), _ = cell.step(p0, cell.initial_carry(2), jnp.asarray(x, jnp.float32))
    (h_np, c_np), _ = np_torch_step("lstm", sd, "_l0", x, (np.zeros((2, 4)), np.zeros((2, 4))))
    np.testing.assert_allclose(h, h_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, c_np, rtol=1e-5, atol=1e-6)
    assert sorted(interop.to_torch(p0, cell)) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]


def test_bias_false_state_dicts():
    sd = make_state_dict("gru", 3, 4, 2, False, bias=False)
    net = jrnn.rnn(jrnn.gru(4), num_layers=2)
    params = interop.from_torch(sd, net)
    assert float(jnp.abs(params.first.b_ih).max()) == 0.0
    back = interop.to_torch(params, net, bias=False)
    assert sorted(back) == sorted(sd)
    with pytest.raises(ValueError, match="nonzero biases"):
        interop.to_torch(params._replace(first=params.first._replace(b_hh=params.first.b_hh + 1)),
                         net, bias=False)  # fmt: skip
    with pytest.raises(ValueError, match="missing 'bias_hh_l0'"):  # half a bias is an error
        interop.from_torch({**sd, "bias_ih_l0": np.zeros(12, np.float32)}, net)


def test_param_dtype_and_carries_layout():
    sd = make_state_dict("lstm", 3, 4, 2, True)
    net = jrnn.rnn(jrnn.lstm(4, param_dtype=jnp.bfloat16), num_layers=2, bidirectional=True)
    assert interop.from_torch(sd, net).rest.w_hh.dtype == jnp.bfloat16
    h = np.arange(4 * 2 * 4, dtype=np.float32).reshape(4, 2, 4)  # [layers*dirs, b, h]
    carries = interop.carries_from_torch((h, -h), net)
    np.testing.assert_array_equal(carries[0][1, 0], h[2])  # layer 1, forward
    np.testing.assert_array_equal(carries[1][0, 1], -h[1])  # layer 0, reverse
    back = interop.carries_to_torch(carries, net)
    np.testing.assert_array_equal(back[0], h)


def test_errors_name_the_problem():
    sd = make_state_dict("lstm", 3, 4, 2, True)
    lstm2 = jrnn.rnn(jrnn.lstm(4), num_layers=2, bidirectional=True)
    with pytest.raises(
        ValueError, match=r"weight_ih_l0'\] has shape \(16, 3\), expected \(12, I\) for jrnn.gru"
    ):
        interop.from_torch(sd, jrnn.rnn(jrnn.gru(4), num_layers=2, bidirectional=True))
    with pytest.raises(ValueError, match="missing 'weight_ih_l0_reverse'"):
        interop.from_torch(make_state_dict("lstm", 3, 4, 2, False), lstm2)
    with pytest.raises(ValueError, match="does not use.*weight_ih_l1"):
        interop.from_torch(sd, jrnn.rnn(jrnn.lstm(4), num_layers=1, bidirectional=True))
    with pytest.raises(ValueError, match="weight_ih_l1.*expected \\(16, 8\\)"):
        bad = {**sd, "weight_ih_l1": np.zeros((16, 5), np.float32)}
        interop.from_torch(bad, lstm2)
    with pytest.raises(ValueError, match="peepholes"):
        interop.from_torch(sd, jrnn.rnn(jrnn.lstm(4, peepholes=True), 2, True))
    with pytest.raises(ValueError, match="reset_after=True"):
        interop.to_torch(None, jrnn.gru(4, reset_after=False))
    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        interop.from_torch(sd, jrnn.seed_rnn(4))
    with pytest.raises(ValueError, match="merge='concat'"):
        interop.from_torch(sd, jrnn.rnn(jrnn.lstm(4), 2, True, merge="sum"))
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        interop.from_torch([1, 2], jrnn.lstm(4))
    with pytest.raises(TypeError, match="LSTMParams"):
        interop.to_torch(jrnn.gru(4).init(jax.random.key(0), 3), jrnn.lstm(4))


@pytest.mark.parametrize("kind,proj", TWO_BIAS_CASES)
def test_two_biases_match_numpy_torch_and_round_trip_each_term(kind, proj):
    hidden, inputs = 5, 4
    sd = make_state_dict(kind, inputs, hidden, 2, True, proj)
    net = jrnn.rnn(_cell(kind, hidden, proj, two_biases=True), num_layers=2, bidirectional=True)
    params = interop.from_torch(sd, net)
    np.testing.assert_array_equal(params.first.b[1], sd["bias_ih_l0_reverse"])
    np.testing.assert_array_equal(params.rest.b_hh[0, 0], sd["bias_hh_l1"])
    back = interop.to_torch(params, net)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():  # every tensor, both biases included, exactly
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    xs = np.random.default_rng(1).normal(size=(3, 6, inputs)).astype(np.float32)
    lengths = np.array([6, 4, 1])
    ys, carries = net.apply(params, xs, lengths=lengths, backend="xla")
    ys_np, hn_np = np_torch_module(kind, sd, xs, lengths, 2, True, hidden, proj)
    np.testing.assert_allclose(ys, ys_np, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        jax.tree.leaves(interop.carries_to_torch(carries, net)), jax.tree.leaves(hn_np), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The one-bias cell reads the same module as the same function.
    one = jrnn.rnn(_cell(kind, hidden, proj), num_layers=2, bidirectional=True)
    ys_one, _ = one.apply(interop.from_torch(sd, one), xs, lengths=lengths, backend="xla")
    np.testing.assert_allclose(ys_one, ys, rtol=1e-6, atol=1e-6)


def test_two_biases_errors_name_the_problem():
    two, one = jrnn.lstm(4, two_biases=True), jrnn.lstm(4)
    p_two, p_one = two.init(jax.random.key(0), 3), one.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="b_hh is set, but jrnn.lstm.*one bias"):
        interop.to_torch(p_two, one)
    with pytest.raises(ValueError, match=r"b_hh is None, but jrnn.lstm\(4, two_biases=True\)"):
        interop.to_torch(p_one, two)
    with pytest.raises(ValueError, match="nonzero biases"):
        interop.to_torch(p_two._replace(b_hh=p_two.b_hh + 1), two, bias=False)
    sd = interop.to_torch(p_two._replace(b=p_two.b * 0), two, bias=False)
    assert sorted(sd) == ["weight_hh", "weight_ih"]
    back = interop.from_torch(sd, two)  # modules without biases: both zero
    assert float(jnp.abs(back.b).max()) == 0.0 and float(jnp.abs(back.b_hh).max()) == 0.0


@pytest.mark.peers
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="optional: torch absent")
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_against_torch_itself(kind):
    import torch

    hidden, inputs = 6, 4
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=True)
    if kind == "lstm":
        module = torch.nn.LSTM(inputs, hidden, proj_size=3, **kwargs)
    elif kind == "gru":
        module = torch.nn.GRU(inputs, hidden, **kwargs)
    else:
        module = torch.nn.RNN(inputs, hidden, nonlinearity="tanh", **kwargs)
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    net = jrnn.rnn(_cell(kind, hidden, 3 if kind == "lstm" else None), 2, True)
    xs = np.random.default_rng(3).normal(size=(2, 5, inputs)).astype(np.float32)
    with torch.no_grad():
        ys_t, _ = module(torch.from_numpy(xs))
    ys, _ = net.apply(interop.from_torch(sd, net), xs, backend="xla")
    np.testing.assert_allclose(ys, ys_t.numpy(), rtol=1e-5, atol=1e-5)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in interop.to_torch(
        interop.from_torch(sd, net), net).items()})  # fmt: skip
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(xs))[0].numpy(), ys_t.numpy(), atol=1e-6)


@pytest.mark.peers
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="optional: torch absent")
@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh"])
def test_two_biases_gradients_against_torch_itself(kind):
    """Every gradient, bias_ih and bias_hh separately, equals torch's (float64)."""
    import torch

    hidden, inputs = 5, 4
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=True)
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.RNN)(inputs, hidden, **kwargs).double()
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    net = jrnn.rnn(_cell(kind, hidden, two_biases=True), 2, True)
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(3, 6, inputs))
    w = rng.normal(size=(3, 6, 2 * hidden))
    module(torch.from_numpy(xs))[0].mul(torch.from_numpy(w)).sum().backward()
    want = {k: p.grad.numpy() for k, p in module.named_parameters()}
    with jax.enable_x64(True):
        cell64 = jrnn.lstm if kind == "lstm" else jrnn.elman
        extra = {} if kind == "lstm" else {"activation": "tanh"}
        net = jrnn.rnn(
            cell64(hidden, two_biases=True, dtype=jnp.float64, param_dtype=jnp.float64, **extra),
            2,
            True,
        )
        params = interop.from_torch(sd, net)
        grads = jax.grad(lambda p: jnp.sum(net.apply(p, jnp.asarray(xs))[0] * w))(params)
        got = interop.to_torch(grads, net)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    np.testing.assert_array_equal(got["bias_ih_l1_reverse"], got["bias_hh_l1_reverse"])
