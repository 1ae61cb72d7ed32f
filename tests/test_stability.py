"""Numerical stability: inputs of magnitude up to 1e4 and sequences of T = 16,384 steps give
finite outputs and gradients for every cell on every practical backend.

The long sequences run on "xla", "fused" and "associative" (slow tier). "reference" traces one
Python step per time step and "pallas" on CPU is the Pallas interpreter: both run the large
magnitudes on short sequences only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn._src import backends
from jrnn._src.cells.linear import min_gru, min_lstm

CELLS = {
    "lstm": lambda: jrnn.lstm(8),
    "lstm_all_options": lambda: jrnn.lstm(8, peepholes=True, layer_norm=True, proj_size=4),
    "gru": lambda: jrnn.gru(8),
    "gru_cho": lambda: jrnn.gru(8, reset_after=False),
    "elman_tanh": lambda: jrnn.elman(8),
    "elman_relu": lambda: jrnn.elman(8, activation="relu"),
    "seed_rnn": lambda: jrnn.seed_rnn(8, 4),
    "min_gru": lambda: min_gru(8),
    "min_gru_linear_candidate": lambda: min_gru(8, positive=False),
    "min_lstm": lambda: min_lstm(8),
}


def _loss(params, xs, lengths, cell, backend):
    carry, ys = jrnn.unroll(cell, params, xs, lengths=lengths, backend=backend)
    return jnp.mean(ys) + sum(jnp.mean(c) for c in jax.tree.leaves(carry)), ys


_grad = jax.jit(jax.value_and_grad(_loss, has_aux=True), static_argnums=(3, 4))


def _supported(backend, cell):
    if backend == "reference":
        return True
    if not backends.available(backend):
        return False
    return backends.get(backend).supports(cell, lengths=True) is None


def _assert_finite(cell_name, backend, steps, magnitude):
    cell = CELLS[cell_name]()
    if not _supported(backend, cell):
        return False
    params = cell.init(jax.random.key(0), 3)
    xs = magnitude * jax.random.normal(jax.random.key(1), (2, steps, 3))
    lengths = jnp.array([steps, steps // 2], jnp.int32)
    (loss, ys), grads = _grad(params, xs, lengths, cell, backend)
    what = f"{cell_name} {backend} T={steps} |x|~{magnitude:g}"
    assert np.isfinite(np.asarray(ys)).all(), what
    assert np.isfinite(float(loss)), what
    for g in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(g)).all(), what + " gradient"
    return True


@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_large_inputs_give_finite_outputs_and_gradients(cell_name):
    """|x| up to 1e4, short sequences (T = 12), on "xla" and "associative"."""
    ran = [_assert_finite(cell_name, b, 12, 1e4) for b in ("xla", "associative")]
    assert sum(ran) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_large_inputs_reference_fused_and_pallas(cell_name):
    """|x| up to 1e4, T = 12, on "reference", "fused" and "pallas" (the CPU interpreter)."""
    ran = [_assert_finite(cell_name, b, 12, 1e4) for b in ("reference", "fused", "pallas")]
    assert sum(ran) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_long_sequences_with_large_inputs_stay_finite(cell_name):
    """T = 16,384 with |x| up to 1e4 on the loop and scan backends."""
    ran = [_assert_finite(cell_name, b, 16_384, 1e4) for b in ("xla", "fused", "associative")]
    assert sum(ran) >= 1
