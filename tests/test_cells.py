"""Each cell's step against a numpy float64 implementation of the standard equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

B, I, H = 3, 7, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def layer_norm(x, scale, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale


def np_lstm(p, h, c, x, *, peep=False, ln=False, proj=False):
    """Standard LSTM (gate order i, f, g, o), written independently of jrnn."""
    Hc = c.shape[-1]
    w_i, w_f, w_g, w_o = (p.w_ih[:, k * Hc : (k + 1) * Hc] for k in range(4))
    u_i, u_f, u_g, u_o = (p.w_hh[:, k * Hc : (k + 1) * Hc] for k in range(4))
    b_i, b_f, b_g, b_o = (p.b[k * Hc : (k + 1) * Hc] for k in range(4))
    pre = [x @ w + h @ u for w, u in ((w_i, u_i), (w_f, u_f), (w_g, u_g), (w_o, u_o))]
    if ln:
        pre = [layer_norm(z, p.ln_scale[k]) for k, z in enumerate(pre)]
    zi, zf, zg, zo = (z + b for z, b in zip(pre, (b_i, b_f, b_g, b_o), strict=True))
    if peep:
        zi = zi + p.w_peep[0] * c
        zf = zf + p.w_peep[1] * c
    c_new = sigmoid(zf) * c + sigmoid(zi) * np.tanh(zg)
    if peep:
        zo = zo + p.w_peep[2] * c_new
    c_act = layer_norm(c_new, p.ln_scale[4]) + p.ln_bias if ln else c_new
    h_new = sigmoid(zo) * np.tanh(c_act)
    if proj:
        h_new = h_new @ p.w_hr
    return (h_new, c_new), h_new


def np_gru(p, h, x, *, reset_after=True):
    Hh = h.shape[-1]
    sl = [slice(k * Hh, (k + 1) * Hh) for k in range(3)]
    xr, xz, xn = (x @ p.w_ih[:, s] + p.b_ih[s] for s in sl)
    r = sigmoid(xr + h @ p.w_hh[:, sl[0]] + p.b_hh[sl[0]])
    z = sigmoid(xz + h @ p.w_hh[:, sl[1]] + p.b_hh[sl[1]])
    if reset_after:
        n = np.tanh(xn + r * (h @ p.w_hh[:, sl[2]] + p.b_hh[sl[2]]))
    else:
        n = np.tanh(xn + (r * h) @ p.w_hh[:, sl[2]] + p.b_hh[sl[2]])
    h_new = (1 - z) * n + z * h
    return h_new, h_new


def np_elman(p, h, x, act):
    h_new = act(x @ p.w_ih + h @ p.w_hh + p.b)
    return h_new, h_new


def np_seed(p, s, x, out):
    A_u, A_v = p.w_ih[:, :out], p.w_ih[:, out:]
    B_u, B_v = p.w_hh[:, :out], p.w_hh[:, out:]
    b_u, b_v = p.b[:out], p.b[out:]
    y = np.maximum(x @ A_u + s @ B_u + b_u, 0.0)
    s_new = np.tanh(x @ A_v + s @ B_v + b_v)
    return s_new, y


def randomize(params, key, scale=0.5):
    """Replaces every leaf by random values (so zero-initialised biases/peepholes matter)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [
        scale * jax.random.normal(k, a.shape, jnp.float32)
        + (1.0 if a.ndim == 2 and a.shape[0] == 5 else 0.0)
        for k, a in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, new)


def random_carry(cell, key):
    carry = cell.initial_carry(B)
    leaves, treedef = jax.tree.flatten(carry)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    )


CASES = [
    ("lstm", lambda: jrnn.lstm(H), lambda p, c, x: np_lstm(p, *c, x)),
    (
        "lstm_peep",
        lambda: jrnn.lstm(H, peepholes=True),
        lambda p, c, x: np_lstm(p, *c, x, peep=True),
    ),
    ("lstm_ln", lambda: jrnn.lstm(H, layer_norm=True), lambda p, c, x: np_lstm(p, *c, x, ln=True)),
    ("lstm_proj", lambda: jrnn.lstm(H, proj_size=4), lambda p, c, x: np_lstm(p, *c, x, proj=True)),
    (
        "lstm_all",
        lambda: jrnn.lstm(H, peepholes=True, layer_norm=True, proj_size=4),
        lambda p, c, x: np_lstm(p, *c, x, peep=True, ln=True, proj=True),
    ),
    ("gru", lambda: jrnn.gru(H), lambda p, c, x: np_gru(p, c, x)),
    (
        "gru_cho",
        lambda: jrnn.gru(H, reset_after=False),
        lambda p, c, x: np_gru(p, c, x, reset_after=False),
    ),
    ("elman_tanh", lambda: jrnn.elman(H), lambda p, c, x: np_elman(p, c, x, np.tanh)),
    (
        "elman_relu",
        lambda: jrnn.elman(H, activation="relu"),
        lambda p, c, x: np_elman(p, c, x, lambda v: np.maximum(v, 0.0)),
    ),
    ("seed", lambda: jrnn.seed_rnn(H, output_size=4), lambda p, c, x: np_seed(p, c, x, 4)),
]


@pytest.mark.parametrize("name,make,ref", CASES, ids=[c[0] for c in CASES])
def test_step_matches_numpy_float64(name, make, ref):
    cell = make()
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    params = randomize(cell.init(k1, I), k2)
    carry = random_carry(cell, k3)
    x = jax.random.normal(k4, (B, I))
    new, y = jax.jit(cell.step)(params, carry, x)
    ref_new, ref_y = ref(f64(params), f64(carry), np.asarray(x, np.float64))
    np.testing.assert_allclose(y, ref_y, rtol=2e-5, atol=2e-5)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref_new), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name,make,ref", CASES, ids=[c[0] for c in CASES])
def test_step_token_input_is_row_gather(name, make, ref):
    """Integer tokens equal one-hot float input of depth input_size."""
    del ref
    cell = make()
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    params = randomize(cell.init(k1, I), k2)
    carry = random_carry(cell, k3)
    tokens = jnp.array([0, 6, 2], jnp.int32)
    a = cell.step(params, carry, tokens)
    b = cell.step(params, carry, jax.nn.one_hot(tokens, I, dtype=jnp.float32))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,make,ref", CASES, ids=[c[0] for c in CASES])
def test_any_leading_batch_dims(name, make, ref):
    del ref
    cell = make()
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (2, 3, I))
    carry = cell.initial_carry((2, 3))
    new, y = cell.step(params, carry, x)
    flat_new, flat_y = cell.step(params, cell.initial_carry(6), x.reshape(6, I))
    np.testing.assert_allclose(y.reshape(6, -1), flat_y, rtol=1e-6, atol=1e-6)
    assert y.shape[:2] == (2, 3)


def test_parameter_layout_and_init():
    p = jrnn.lstm(H, forget_bias=1.5).init(jax.random.key(0), I)
    assert p.w_ih.shape == (I, 4 * H) and p.w_hh.shape == (H, 4 * H) and p.b.shape == (4 * H,)
    # forget_bias sits in the f block (gate order i, f, g, o) and nowhere else.
    np.testing.assert_array_equal(p.b[H : 2 * H], 1.5)
    np.testing.assert_array_equal(np.delete(np.asarray(p.b), np.s_[H : 2 * H]), 0.0)
    # Each recurrent gate block is orthogonal.
    for k in range(4):
        blk = np.asarray(p.w_hh[:, k * H : (k + 1) * H], np.float64)
        np.testing.assert_allclose(blk.T @ blk, np.eye(H), atol=1e-5)
    g = jrnn.gru(H).init(jax.random.key(0), I)
    assert (g.w_ih.shape, g.w_hh.shape, g.b_ih.shape, g.b_hh.shape) == (
        (I, 3 * H),
        (H, 3 * H),
        (3 * H,),
        (3 * H,),
    )
    proj = jrnn.lstm(H, proj_size=4).init(jax.random.key(0), I)
    assert proj.w_hh.shape == (4, 4 * H) and proj.w_hr.shape == (H, 4)


def test_lecture_init_is_uniform_minus_one_one():
    p = jrnn.seed_rnn(64, init="lecture").init(jax.random.key(0), 32)
    w = np.asarray(p.w_hh)
    assert w.min() >= -1.0 and w.max() <= 1.0
    # uniform(-1, 1): mean ~ 0, variance ~ 1/3
    assert abs(w.mean()) < 0.02 and abs(w.var() - 1 / 3) < 0.02
    d = np.asarray(jrnn.seed_rnn(64).init(jax.random.key(0), 32).w_ih)
    assert abs(d.std() - 1 / np.sqrt(32)) < 0.03  # LeCun normal by default


def test_bf16_compute_keeps_float32_carry_and_is_close():
    cell32, cell16 = jrnn.lstm(H), jrnn.lstm(H, dtype=jnp.bfloat16)
    params = cell32.init(jax.random.key(0), I)
    x = jax.random.normal(jax.random.key(1), (B, I))
    c32, y32 = cell32.step(params, cell32.initial_carry(B), x)
    c16, y16 = cell16.step(params, cell16.initial_carry(B), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(c16))
    np.testing.assert_allclose(y16, y32, atol=2e-2)
    assert float(jnp.abs(y16 - y32).max()) > 0  # bf16 really changed the matmul


def test_param_dtype():
    p = jrnn.gru(H, param_dtype=jnp.bfloat16).init(jax.random.key(0), I)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(p))


@pytest.mark.parametrize(
    "factory,kwargs,match",
    [
        (jrnn.lstm, dict(hidden_size=0), "hidden_size"),
        (jrnn.lstm, dict(hidden_size=4, proj_size=8), "proj_size"),
        (jrnn.gru, dict(hidden_size=4.0), "hidden_size"),
        (jrnn.elman, dict(hidden_size=4, activation="gelu"), "activation"),
        (jrnn.seed_rnn, dict(hidden_size=4, init="xavier"), "init"),
        (jrnn.lstm, dict(hidden_size=4, dtype=jnp.int32), "dtype"),
    ],
)
def test_bad_cell_arguments(factory, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory(**kwargs)


def test_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        jrnn.lstm(4).init(jax.random.key(0), 0)


def test_input_projection_gradient_is_one_matmul_without_a_transposed_copy():
    """The input weights' gradient of a ``[t, b, i]`` projection equals float64 ``x^T dy`` and
    compiles to a dot with one contracting dimension: no transpose or copy of the ``[t, b, g]``
    gradient in the optimized HLO (``project`` multiplies ``x`` as one ``[t b, i]`` matrix)."""
    from jrnn._src import cell as cell_lib

    T, Bt, In, G = 16, 8, 24, 40
    ks = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(ks[0], (T, Bt, In))
    w = jax.random.normal(ks[1], (In, G)) * In**-0.5
    b = jax.random.normal(ks[2], (G,))

    def loss(w, b):
        return jnp.sum(jnp.sin(cell_lib.project(w, b, x, jnp.float32)))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    gw, gb = grad(w, b)
    x64, w64, b64 = (np.asarray(a, np.float64) for a in (x, w, b))
    dy = np.cos(x64 @ w64 + b64)
    np.testing.assert_allclose(gw, np.einsum("tbi,tbg->ig", x64, dy), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, dy.sum((0, 1)), rtol=1e-4, atol=1e-4)
    hlo = grad.lower(w, b).compile().as_text()
    dims = sorted((T, Bt, G))
    for line in hlo.splitlines():
        if " transpose(" in line or " copy(" in line:
            shape = line.split("= f32[", 1)[-1].split("]", 1)[0]
            got = sorted(int(v) for v in shape.split(",") if v.strip().isdigit())
            assert got != dims, f"the [t, b, g] gradient is transposed: {line.strip()[:160]}"
