"""``jrnn.rnn``: stacks against hand-composed ``unroll`` calls, carries, dropout variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src import cell as cell_lib
from jrnn._src import tree
from jrnn._src.layers import SCAN_LAYERS_FROM as SCAN_FROM

B, T, I, H = 3, 6, 5, 4
LENGTHS = np.array([6, 3, 1], np.int32)


def hand_stack(cell, params, xs, lengths, num_layers, bidirectional, merge):
    """The stack written as explicit per-layer, per-direction reference unrolls."""
    x, finals = xs, []
    for layer in range(num_layers):
        p = params.first if layer == 0 else tree.index(params.rest, layer - 1)
        if bidirectional:
            cf, yf = jrnn.unroll(cell, tree.index(p, 0), x, lengths=lengths, backend="reference")
            cb, yb = jrnn.unroll(
                cell, tree.index(p, 1), x, lengths=lengths, reverse=True, backend="reference"
            )
            x = jnp.concatenate([yf, yb], -1) if merge == "concat" else yf + yb
            finals.append(tree.stack([cf, cb]))
        else:
            c, x = jrnn.unroll(cell, p, x, lengths=lengths, backend="reference")
            finals.append(c)
    return x, tree.stack(finals)


def close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "bidirectional,merge", [(False, "concat"), (True, "concat"), (True, "sum")]
)
@pytest.mark.parametrize("tokens", [False, True], ids=["floats", "tokens"])
# layers called in turn, and layers 2..n as one lax.scan
@pytest.mark.parametrize("num_layers", [SCAN_FROM - 1, SCAN_FROM], ids=["loop", "scan"])
def test_stack_equals_hand_composition(bidirectional, merge, tokens, num_layers):
    cell = jrnn.lstm(H)
    net = jrnn.rnn(cell, num_layers=num_layers, bidirectional=bidirectional, merge=merge)
    params = net.init(jax.random.key(0), I)
    if tokens:
        xs = jax.random.randint(jax.random.key(1), (B, T), 0, I)
    else:
        xs = jax.random.normal(jax.random.key(1), (B, T, I))
    ys, carries = jax.jit(lambda p, x: net.apply(p, x, lengths=LENGTHS))(params, xs)
    ref_ys, ref_carries = hand_stack(cell, params, xs, LENGTHS, num_layers, bidirectional, merge)
    close(ys, ref_ys)
    close(carries, ref_carries)
    assert ys.shape[-1] == net.output_size


@pytest.mark.parametrize("num_layers", [2, SCAN_FROM], ids=["loop", "scan"])
def test_gru_bidirectional_gradients_match_hand_composition(num_layers):
    cell = jrnn.gru(H)
    net = jrnn.rnn(cell, num_layers=num_layers, bidirectional=True)
    params = net.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))

    def loss(p, stack):
        ys, c = stack(p)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(c**2)

    g = jax.grad(loss)(params, lambda p: net.apply(p, xs, lengths=LENGTHS))
    g_ref = jax.grad(loss)(
        params, lambda p: hand_stack(cell, p, xs, LENGTHS, num_layers, True, "concat")
    )
    close(g, g_ref)


def test_carries_resume_across_chunks():
    net = jrnn.rnn(jrnn.lstm(H), num_layers=2)
    params = net.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    ys, carries = net.apply(params, xs)
    y1, c1 = net.apply(params, xs[:, :2])
    y2, c2 = net.apply(params, xs[:, 2:], c1)
    close(jnp.concatenate([y1, y2], 1), ys)
    close(c2, carries)
    assert carries[0].shape == (2, B, H)


def identity_cell(size):
    """y_t = x_t (w_ih = I): makes the input each layer sees visible in its output."""

    def init(key, input_size):
        del key
        return jrnn.ElmanParams(jnp.eye(input_size, size), jnp.zeros((size, size)), jnp.zeros(size))

    return cell_lib.make_cell(
        name="identity",
        init=init,
        initial_carry=lambda b: cell_lib.zeros_carry(b, size),
        input_projection=lambda p, x: cell_lib.project(p.w_ih, None, x, jnp.float32),
        hidden_projection=lambda p, h: h,
        gates=lambda p, h, xp, hp: (xp, xp),
        hidden_size=size,
        output_size=size,
    )


@pytest.mark.parametrize("variational", [False, True])
def test_inter_layer_dropout(variational):
    net = jrnn.rnn(identity_cell(I), num_layers=2, dropout=0.5, variational=variational)
    params = net.init(jax.random.key(0), I)
    xs = jnp.ones((B, 50, I))
    # No key: deterministic, no dropout at all.
    np.testing.assert_array_equal(net.apply(params, xs)[0], xs)
    ys = np.asarray(net.apply(params, xs, key=jax.random.key(3))[0])
    assert set(np.unique(ys)) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-p)
    assert 0.35 < (ys == 0).mean() < 0.65
    same_over_time = np.all(ys == ys[:, :1], axis=1).all()
    assert same_over_time == variational
    # Same key, same draw; different key, different draw.
    np.testing.assert_array_equal(ys, net.apply(params, xs, key=jax.random.key(3))[0])
    assert not np.array_equal(ys, net.apply(params, xs, key=jax.random.key(4))[0])


def test_no_dropout_after_last_layer():
    net = jrnn.rnn(identity_cell(I), num_layers=1, dropout=0.5)
    params = net.init(jax.random.key(0), I)
    xs = jnp.ones((B, 8, I))
    np.testing.assert_array_equal(net.apply(params, xs, key=jax.random.key(1))[0], xs)


def test_zoneout_and_recurrent_dropout():
    cell = jrnn.gru(H)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    plain = jrnn.rnn(cell)
    params = plain.init(jax.random.key(0), I)
    # Evaluation mode (no key): zoneout uses the expectation p * old + (1 - p) * new.
    z = 0.3
    zoned = jrnn.rnn(cell, zoneout=z, recurrent_dropout=0.4)
    ys, _ = zoned.apply(params, xs)
    h = cell.initial_carry(B)
    ref = []
    for t in range(T):
        new, _ = cell.step(params.first, h, xs[:, t])
        h = z * h + (1 - z) * new
        ref.append(h)
    np.testing.assert_allclose(ys, jnp.stack(ref, 1), atol=1e-5)
    # Training: deterministic per key, differs from evaluation, gradients finite.
    k = jax.random.key(7)
    y_a = zoned.apply(params, xs, key=k)[0]
    np.testing.assert_array_equal(y_a, zoned.apply(params, xs, key=k)[0])
    assert float(jnp.abs(y_a - ys).max()) > 1e-3
    g = jax.grad(lambda p: jnp.sum(zoned.apply(p, xs, key=k)[0]))(params)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g))


def test_zoneout_training_keeps_each_unit_old_or_new():
    """With zoneout in training every unit of h_t is either h_{t-1} or the cell's update."""
    cell = jrnn.elman(H)
    net = jrnn.rnn(cell, zoneout=0.5)
    params = net.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    ys, _ = net.apply(params, xs, key=jax.random.key(2))
    p = params.first
    h = np.zeros((B, H), np.float32)
    kept = 0
    for t in range(T):
        new = np.asarray(cell.step(p, jnp.asarray(h), xs[:, t])[0])
        y = np.asarray(ys[:, t])
        is_old, is_new = np.isclose(y, h, atol=1e-6), np.isclose(y, new, atol=1e-6)
        assert np.all(is_old | is_new)
        kept += int((is_old & ~is_new).sum())
        h = y
    assert kept > 0


@pytest.mark.parametrize("remat", [True, 2, "sqrt"])
def test_remat_options_equal_plain(remat):
    cell = jrnn.lstm(H)
    plain = jrnn.rnn(cell, num_layers=2, bidirectional=True)
    rem = jrnn.rnn(cell, num_layers=2, bidirectional=True, remat=remat)
    params = plain.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))

    def loss(net, p):
        return jnp.sum(jnp.sin(net.apply(p, xs, lengths=LENGTHS)[0]))

    close(loss(rem, params), loss(plain, params))
    close(jax.grad(lambda p: loss(rem, p))(params), jax.grad(lambda p: loss(plain, p))(params))


def test_bad_layer_arguments():
    cell = jrnn.lstm(H)
    with pytest.raises(ValueError, match="num_layers"):
        jrnn.rnn(cell, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        jrnn.rnn(cell, dropout=1.0)
    with pytest.raises(ValueError, match="merge"):
        jrnn.rnn(cell, bidirectional=True, merge="mean")
    net = jrnn.rnn(cell, num_layers=2)
    params = net.init(jax.random.key(0), I)
    xs = jnp.ones((B, T, I))
    with pytest.raises(TypeError, match="RNNParams"):
        net.apply(params.first, xs)
    with pytest.raises(ValueError, match="carries"):
        net.apply(params, xs, cell.initial_carry(B))
    with pytest.raises(ValueError, match="input_size"):
        net.apply(params, jnp.ones((B, T, I + 1)))
