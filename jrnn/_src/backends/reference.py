"""The ground truth: a Python loop over time calling ``cell.step`` on the raw inputs.

Token inputs are turned into explicit one-hot vectors here (not gathered), so this path also
checks the token gather of the other backends. It unrolls every step when traced: use it for
tests and debugging, not for speed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn._src import cell as cell_lib
from jrnn._src import tree


def run_raw(cell, params, xs, carry0, *, mask, resets, reverse, return_carries):
    """Loops ``cell.step`` over the leading time axis of the raw inputs ``xs``."""
    steps = xs.shape[0]
    if steps == 0:  # no step to stack: empty outputs of the step's output shape and dtype
        carry_s, y_s = jax.eval_shape(lambda: cell.step(params, carry0, xs_step(cell, params, xs)))
        empty = lambda s: jnp.zeros((0, *s.shape), s.dtype)  # noqa: E731
        return carry0, empty(y_s), (jax.tree.map(empty, carry_s) if return_carries else None)
    if cell_lib.is_tokens(xs):
        depth = params.w_ih.shape[0]
        xs = jax.nn.one_hot(xs, depth, dtype=jnp.float32)
    carry = carry0
    ys = [None] * steps
    carries = [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        if resets is not None:
            carry = tree.where(resets[t], carry0, carry)
        new, y = cell.step(params, carry, xs[t])
        if mask is not None:
            new = tree.where(mask[t], new, carry)
            y = tree.zeros_where_not(mask[t], y)
        carry = new
        ys[t] = y
        carries[t] = new
    ys = jnp.stack(ys)
    return carry, ys, (tree.stack(carries) if return_carries else None)


def xs_step(cell, params, xs):
    """One step's input of the shape and dtype of ``xs[t]`` (one-hot floats for tokens)."""
    del cell
    if cell_lib.is_tokens(xs):
        return jnp.zeros((*xs.shape[1:], params.w_ih.shape[0]), jnp.float32)
    return jnp.zeros(xs.shape[1:], xs.dtype)
