"""Every backend x every cell it supports equals backend="reference".

For each (backend, registry cell, input kind) one jitted function computes, for every variant
(plain, lengths, reverse, lengths + reverse, resets), the outputs, the final carry and the
gradients of a fixed random projection of both with respect to the params, the float inputs and
the initial carry; the same for the Python-loop reference (cached per cell and input kind).
Backends not in this build do not appear; an explicit request of a combination a backend does not
support must raise NotImplementedError.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import BATCH, CELLS, HIDDEN, INPUT, STEPS, CellSpec, backend_names, support

import jrnn

SPECS = {s.name: s for s in CELLS}
LENGTHS = np.array([STEPS, 3, 0], np.int32)
FULL = np.full((BATCH,), STEPS, np.int32)
RESETS = np.zeros((BATCH, STEPS), bool)
RESETS[0, 2] = RESETS[0, 5] = RESETS[1, 1] = True
NO_RESETS = np.zeros((BATCH, STEPS), bool)

# name -> (lengths, reverse, resets). Each is a separate code path of a backend.
VARIANTS = {
    "plain": (False, False, False),
    "reverse": (False, True, False),
    "lengths": (True, False, False),
    "lengths_reverse_resets": (True, True, True),
}
# Tokens only change the input projection (outside the time loop): one variant is enough.
TOKEN_VARIANTS = ("lengths_reverse_resets",)
# Registry entries with full=False (an option on top of a family) run these only.
SHORT_VARIANTS = ("plain", "lengths_reverse_resets")
# XLA's CPU compile dominates these tests; its cheapest setting is plenty for tiny programs.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _variants(spec: CellSpec, tokens: bool) -> tuple[str, ...]:
    if tokens:
        return TOKEN_VARIANTS
    return tuple(VARIANTS) if spec.full else SHORT_VARIANTS


def _features(variant: str, tokens: bool) -> dict:
    lengths, reverse, resets = VARIANTS[variant]
    return dict(
        tokens=tokens, lengths=lengths, resets=resets, reverse=reverse, return_carries=False
    )


def _unroll_kwargs(variant: str) -> dict:
    lengths, reverse, resets = VARIANTS[variant]
    return dict(
        lengths=jnp.asarray(LENGTHS) if lengths else None,
        reverse=reverse,
        resets=jnp.asarray(RESETS) if resets else None,
    )


@functools.cache
def _case(spec_name: str, tokens: bool):
    """Cell, params, inputs, initial carry and loss weights of one registry entry."""
    spec = SPECS[spec_name]
    cell = spec.make()
    k = jax.random.split(jax.random.key(7), 5)
    params = cell.init(k[0], INPUT)
    # Nonzero biases and peephole / layer-norm parameters, so that every gradient is exercised.
    params = jax.tree.map(
        lambda p, kk: p + (0.3 * jax.random.normal(kk, p.shape)).astype(p.dtype),
        params,
        _keys_like(k[1], params),
    )
    if tokens:
        xs = jax.random.randint(k[2], (BATCH, STEPS), 0, INPUT)
    else:
        xs = jax.random.normal(k[2], (BATCH, STEPS, INPUT))
    carry0 = jax.tree.map(
        lambda c, kk: 0.5 * jax.random.normal(kk, c.shape),
        cell.initial_carry(BATCH),
        _keys_like(k[3], cell.initial_carry(BATCH)),
    )
    w_ys = jax.random.normal(k[4], (BATCH, STEPS, cell.output_size))
    return cell, params, xs, carry0, w_ys


def _keys_like(key, tree):
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(
        treedef, list(jax.random.split(key, max(len(leaves), 1)))[: len(leaves)]
    )


def _loss_fn(cell, backend, w_ys, reverse):
    def loss(params, xs, carry0, lengths, resets):
        carry, ys = jrnn.unroll(
            cell, params, xs, carry0, lengths=lengths, reverse=reverse, resets=resets,
            backend=backend,
        )  # fmt: skip
        total = jnp.sum(ys * w_ys)
        for i, c in enumerate(jax.tree.leaves(carry)):
            total = total + jnp.sum(c * jnp.cos(jnp.arange(c.size) + i).reshape(c.shape))
        return total, (carry, ys)

    return loss


def _grads(loss, tokens):
    argnums = (0, 2) if tokens else (0, 1, 2)

    def f(params, xs, carry0, lengths, resets):
        (_, (carry, ys)), grads = jax.value_and_grad(loss, argnums=argnums, has_aux=True)(
            params, xs, carry0, lengths, resets
        )
        return carry, ys, grads

    return f


def _run_backend(cell, backend: str, variants: tuple[str, ...], tokens: bool, w_ys):
    """One jitted function of (params, xs, carry0) -> {variant: (carry, ys, grads)}."""

    def run(params, xs, carry0):
        out = {}
        for v in variants:
            kw = _unroll_kwargs(v)
            f = _grads(_loss_fn(cell, backend, w_ys, kw["reverse"]), tokens)
            out[v] = f(params, xs, carry0, kw["lengths"], kw["resets"])
        return out

    return jax.jit(run, compiler_options=COMPILER_OPTIONS)


@functools.cache
def _reference(spec_name: str, tokens: bool) -> dict:
    """The reference for every variant, run eagerly around a jitted ``cell.step``.

    The Python loop of the reference compiles slowly as one program (seconds per variant on a
    busy CPU); eagerly, only one step (forward and backward) is compiled, once per cell, and
    reused by every variant and both input kinds (tokens become one-hot floats there).
    """
    cell, params, xs, carry0, w_ys = _case(spec_name, tokens)
    cell = cell._replace(step=_jitted_step(spec_name))
    out = {}
    for v in _variants(SPECS[spec_name], tokens):
        kw = _unroll_kwargs(v)
        f = _grads(_loss_fn(cell, "reference", w_ys, kw["reverse"]), tokens)
        out[v] = f(params, xs, carry0, kw["lengths"], kw["resets"])
    return out


@functools.cache
def _jitted_step(spec_name: str):
    return jax.jit(_case(spec_name, False)[0].step)


def _assert_close(got, want, tol, what):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g = np.asarray(g, np.float32)
        w = np.asarray(w, np.float32)
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale, err_msg=what)


CASES = [
    pytest.param(b, s.name, tokens, id=f"{b}-{s.name}-{'tokens' if tokens else 'floats'}")
    for b in backend_names()
    for s in CELLS
    for tokens in ((False, True) if s.full else (False,))
]


@pytest.mark.parametrize("backend,spec_name,tokens", CASES)
def test_backend_equals_reference(backend, spec_name, tokens):
    spec: CellSpec = SPECS[spec_name]
    cell, params, xs, carry0, w_ys = _case(spec_name, tokens)
    variants = _variants(spec, tokens)
    supported = tuple(v for v in variants if support(backend, cell, **_features(v, tokens)) is None)
    for variant in (v for v in variants if v not in supported):
        with pytest.raises(NotImplementedError):
            jrnn.unroll(cell, params, xs, carry0, backend=backend, **_unroll_kwargs(variant))
    if not supported:
        return
    got = _run_backend(cell, backend, supported, tokens, w_ys)(params, xs, carry0)
    want = _reference(spec_name, tokens)
    for variant in supported:
        carry, ys, grads = got[variant]
        w_carry, w_ys_ref, w_grads = want[variant]
        where = f"{backend} {spec_name} {variant} {'tokens' if tokens else 'floats'}"
        _assert_close(ys, w_ys_ref, spec.tolerance, f"ys of {where}")
        _assert_close(carry, w_carry, spec.tolerance, f"carry of {where}")
        _assert_close(grads, w_grads, spec.tolerance, f"grads of {where}")
        if VARIANTS[variant][0]:  # padding: exactly zero outputs
            assert float(jnp.abs(ys[2]).max()) == 0.0 and float(jnp.abs(ys[1, 3:]).max()) == 0.0


def test_registry_covers_every_public_cell():
    factories = {s.factory.__name__ for s in CELLS}
    assert {"lstm", "gru", "elman", "seed_rnn", "min_gru", "min_lstm"} <= factories
    assert "xla" in backend_names()
    linear = {s.name for s in CELLS if s.make().linear is not None}
    assert linear == {s.name for s in CELLS if s.name.startswith("min_")}
    assert all(s.make(HIDDEN).hidden_size == HIDDEN for s in CELLS)
