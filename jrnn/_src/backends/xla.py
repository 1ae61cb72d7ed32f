"""The plain ``jax.lax.scan`` backend: one ``cell.recurrence`` per step, autodiff for the grads."""

from __future__ import annotations

from jax import lax

from jrnn._src import tree


def supports(cell, **features) -> str | None:
    """The scan runs any cell with any feature."""
    del cell, features
    return None


def run(cell, params, xp, carry0, *, mask, resets, reverse, unroll, return_carries):
    """Runs ``cell.recurrence`` over the leading time axis of ``xp`` with ``lax.scan``."""

    def body(carry, inputs):
        xp_t, m_t, r_t = inputs
        if r_t is not None:
            carry = tree.where(r_t, carry0, carry)
        new, y = cell.recurrence(params, carry, xp_t)
        if m_t is not None:
            new = tree.where(m_t, new, carry)
            y = tree.zeros_where_not(m_t, y)
        return new, ((y, new) if return_carries else (y, None))

    carry, (ys, carries) = lax.scan(
        body, carry0, (xp, mask, resets), reverse=reverse, unroll=unroll
    )
    return carry, ys, carries
