"""JAX workloads of the benchmark: jrnn stacks and flax.linen ``nn.RNN`` peers.

Each builder returns ``(fn, args)`` where ``fn`` is a pure function to ``jax.jit`` and ``args``
its arguments; the harness compiles it once (timed) and calls the compiled executable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrnn
from jrnn.bench.sizes import Size, Workload, gate_width

LEARNING_RATE = 1e-3


def min_gru_available() -> bool:
    """Whether this build has ``min_gru`` (``jrnn._src.cells.linear``)."""
    try:
        from jrnn._src.cells import linear  # noqa: F401
    except ImportError:
        return False
    return hasattr(linear, "min_gru")


def make_cell(name: str, hidden: int, dtype: str = "float32") -> jrnn.Cell:
    """The jrnn cell ``name`` of size ``hidden`` with matmul dtype ``dtype``."""
    dt = jnp.dtype(dtype)
    if name == "lstm":
        return jrnn.lstm(hidden, dtype=dt)
    if name == "gru":
        return jrnn.gru(hidden, dtype=dt)
    if name == "elman":
        return jrnn.elman(hidden, dtype=dt)
    if name == "seed_rnn":
        return jrnn.seed_rnn(hidden, dtype=dt)
    if name == "min_gru":
        from jrnn._src.cells import linear

        return linear.min_gru(hidden, dtype=dt)
    raise ValueError(f"unknown jrnn cell {name!r}")


def batch(size: Size, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random byte tokens ``[b, t]`` and their next-token targets ``[b, t]`` (int32)."""
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, size.vocab, (size.batch, size.steps + 1), dtype=np.int32)
    return toks[:, :-1], toks[:, 1:]


def _head_init(key, size: Size):
    w = jax.random.normal(key, (size.hidden, size.vocab), jnp.float32) * size.hidden**-0.5
    return w, jnp.zeros((size.vocab,), jnp.float32)


def _ce(logits, targets):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def _train_step(loss_fn: Callable, params: Any, x, y):
    opt = optax.adam(LEARNING_RATE)
    state = opt.init(params)

    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step, (params, state, x, y)


def jrnn_workload(w: Workload, key=None):
    """``(fn, args)`` of a jrnn workload (time-major inside: tokens are transposed once)."""
    size = w.size
    key = jax.random.key(0) if key is None else key
    k_rnn, k_head = jax.random.split(key)
    net = jrnn.rnn(make_cell(w.cell, size.hidden, w.dtype), num_layers=size.layers)
    x, y = (jnp.asarray(a) for a in batch(size))
    params = {"rnn": net.init(k_rnn, size.vocab), "head": _head_init(k_head, size)}

    def hidden(p, x):
        ys, _ = net.apply(p["rnn"], x.T, time_major=True, backend=w.backend, unroll=w.unroll)
        return ys  # [t, b, h]

    if w.mode == "forward":
        return hidden, (params, x)

    def loss_fn(p, x, y):
        w_out, b_out = p["head"]
        logits = hidden(p, x) @ w_out + b_out[None, None, :]
        return _ce(logits, y.T)

    return _train_step(loss_fn, params, x, y)


def flax_workload(w: Workload, key=None):
    """``(fn, args)`` of a flax.linen ``nn.RNN`` peer (one-hot float inputs, batch-major)."""
    import flax.linen as nn

    size = w.size
    key = jax.random.key(0) if key is None else key
    cell_cls = getattr(nn, w.cell)

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            h = jax.nn.one_hot(tokens, size.vocab, dtype=jnp.float32)
            for _ in range(size.layers):
                h = nn.RNN(cell_cls(size.hidden))(h)
            return h

    class LM(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            return nn.Dense(size.vocab)(Stack(name="stack")(tokens))

    x, y = (jnp.asarray(a) for a in batch(size))
    lm = LM()
    params = lm.init(key, x)
    if w.mode == "forward":
        stack = Stack()
        p_stack = {"params": params["params"]["stack"]}
        return (lambda p, x: stack.apply(p, x)), (p_stack, x)

    def loss_fn(p, x, y):
        return _ce(lm.apply(p, x), y)

    return _train_step(loss_fn, params, x, y)


def chain_workload(w: Workload):
    """``(fn, args)`` of the recurrent matmul chain alone: the floor of a jrnn step on XLA.

    ``forward``: ``t`` dependent ``[b, h] x [h, g]`` dots (``g`` = the cell's recurrent width),
    each followed only by ``tanh`` of the first ``h`` columns (the next step's input): what every
    RNN forward must do in sequence, with no gates, no input projection and no stored outputs.
    ``train``: that chain, then the backward's chain of ``t`` dependent ``[b, g] x [g, h]`` dots
    (``x W^T``), again with nothing else, and the weight gradient ``H^T dZ`` as the one
    ``[h, t b] x [t b, g]`` dot it takes at best (of given ``H`` and ``dZ``).
    :mod:`jrnn.bench.torch_peer` runs the same with ``torch.mm``.

    With ``size.layers = L > 1`` the ``L`` layers' chains advance together, one batched
    ``[L, b, h] x [L, h, g]`` dot per step (what a wavefront over layers would run).
    """
    size = w.size
    g = gate_width(w.family, size.hidden)[1]
    h, n = size.hidden, size.layers
    tb = size.steps * size.batch
    keys = jax.random.split(jax.random.key(0), 4)
    weight = jax.random.normal(keys[0], (n, h, g), jnp.float32) * h**-0.5
    h0 = jax.random.normal(keys[1], (n, size.batch, h), jnp.float32)

    def forward(weight, h0):
        def step(c, _):
            return jnp.tanh(jnp.einsum("lbh,lhg->lbg", c, weight)[..., :h]), None

        return jax.lax.scan(step, h0, None, length=size.steps)[0]

    if w.mode == "forward":
        return forward, (weight, h0)

    hs = jax.random.normal(keys[2], (n, tb, h), jnp.float32)
    dz = jax.random.normal(keys[3], (n, tb, g), jnp.float32)

    def train(weight, h0, hs, dz):
        hT = forward(weight, h0)

        def back(d, _):
            dh = jnp.tanh(jnp.einsum("lbg,lhg->lbh", d, weight))
            return jnp.tile(dh, (1, 1, g // h)), None

        d0 = jax.lax.scan(back, jnp.tile(hT, (1, 1, g // h)), None, length=size.steps)[0]
        return d0, jnp.einsum("lnh,lng->lhg", hs, dz)

    return train, (weight, h0, hs, dz)


def build(w: Workload):
    """``(fn, args)`` for a JAX workload."""
    if w.impl == "jrnn":
        return jrnn_workload(w)
    if w.impl == "flax":
        return flax_workload(w)
    if w.impl == "chain":
        return chain_workload(w)
    raise ValueError(f"not a JAX workload: {w.impl!r}")


def bf16_accuracy(cell: str, size: Size) -> dict:
    """The accuracy cost of bf16 matmuls: loss and gradient of one batch, bf16 vs float32."""
    out = {}
    for dtype in ("float32", "bfloat16"):
        w = Workload("jrnn", cell, cell, "auto", 1, "train", size, dtype)
        step, (params, _, x, y) = jrnn_workload(w)
        del step
        net = jrnn.rnn(make_cell(cell, size.hidden, dtype), num_layers=size.layers)

        def loss_fn(p, x, y, net=net):
            ys, _ = net.apply(p["rnn"], x.T, time_major=True)
            w_out, b_out = p["head"]
            return _ce(ys @ w_out + b_out[None, None, :], y.T)

        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            out[dtype] = jax.jit(jax.value_and_grad(loss_fn))(params, x, y)
    (l32, g32), (l16, g16) = out["float32"], out["bfloat16"]
    pairs = zip(jax.tree.leaves(g32), jax.tree.leaves(g16), strict=True)
    num = sum(float(jnp.sum(jnp.square(a - b))) for a, b in pairs)
    den = sum(float(jnp.sum(jnp.square(a))) for a in jax.tree.leaves(g32))
    return {
        "loss_float32": float(l32),
        "loss_bfloat16": float(l16),
        "loss_rel_diff": abs(float(l16) - float(l32)) / abs(float(l32)),
        "grad_rel_err": (num / den) ** 0.5,
    }
