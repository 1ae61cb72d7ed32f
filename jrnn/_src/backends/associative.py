"""The ``"associative"`` backend: a parallel scan for cells linear in their carry.

A cell with ``cell.linear`` set (``jrnn.min_gru``, ``jrnn.min_lstm``) updates its carry as
``h_t = a_t * h_{t-1} + b_t`` with ``(log a_t, b_t) = cell.linear(params, xp_t)`` independent of
the carry. Affine maps compose associatively,

    (a1, b1) then (a2, b2)  =  (a1 * a2, a2 * b1 + b2),

so ``jax.lax.associative_scan`` computes every prefix composition ``(A_t, B_t)`` in
``O(log t)`` depth and ``h_t = A_t * h_0 + B_t``. Only products and sums appear (no division
by a cumulative product), so no log-space values are needed for stability.

Masking and resets become coefficients, with no extra pass:

* padding (``mask`` False): ``(a, b) = (1, 0)``, the carry is frozen; ``y`` is exactly zero and
  no gradient reaches the padded inputs (the coefficients there are constants);
* reset before step t: ``(a, b) = (0, a_t * h_0 + b_t)``, the carry restarts from ``h_0``;
* ``reverse``: the same scan run from the last step to the first.

Gradients come from a ``jax.custom_vjp``: the adjoint of a linear recurrence is the same kind
of recurrence run the other way, ``l_t = g_t + a_{t+1} * l_{t+1}``, so the backward pass is one
more associative scan (as recurrentgemma's linear-scan kernel does). It saves ``a`` and ``h``, two
``[t, b..., h]`` arrays, instead of every level of the scan tree that autodiff would keep, and
halved the compile time of the gradient at t = 4096 on CPU.

Work is ``O(t)`` products and sums in ``O(log t)`` depth (twice that with the gradient); the scan
pays when the sequential loop's latency dominates (long sequences on an accelerator). Its compile
time grows with the ``log t`` levels of slicing (seconds at t = 4096 on CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_FALLBACKS = "'xla' (lax.scan) or 'reference'"


def supports(cell, **features) -> str | None:
    """Supported: any cell with ``cell.linear`` (an array carry, ``y = h``), any feature."""
    del features
    if getattr(cell, "linear", None) is None:
        return (
            f"cell {cell.name!r} is not linear in its carry (cell.linear is None), so it "
            "cannot be run as an associative scan of h_t = a_t * h_{t-1} + b_t; use "
            f"backend={_FALLBACKS}, or a linear cell such as jrnn.min_gru or jrnn.min_lstm"
        )
    return None


def _combine(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _prefix(a, b, reverse):
    """The B part of the prefix compositions: ``h_t`` for ``h_0 = 0``, plus the A part."""
    return jax.lax.associative_scan(_combine, (a, b), reverse=reverse, axis=0)


def _neighbour(x, fill, *, later, reverse):
    """Entry t holds ``x`` of the step processed just after t (``later``) or just before it.

    Processing order is t = 0, 1, ... (or the reverse); ``fill`` enters where there is none.
    """
    if later != reverse:  # entry t takes x[t + 1]
        return jnp.concatenate([x[1:], fill[None]], axis=0)
    return jnp.concatenate([fill[None], x[:-1]], axis=0)  # entry t takes x[t - 1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def linear_scan(a, b, h0, reverse):
    """``h_t = a_t * h_{t-1} + b_t`` from ``h0`` for every t (``reverse``: from the last step).

    The backward pass is one more associative scan, in the opposite direction, of the adjoint
    recurrence ``l_t = g_t + a_{t+1} * l_{t+1}``; then ``db = l``, ``da_t = l_t * h_{t-1}``
    and ``dh0 = a_first * l_first``. Saved for it: ``a`` and ``h`` (two arrays of the size of
    the outputs).

    Args:
      a, b: ``[t, ...]`` coefficients.
      h0: ``[...]`` initial carry.
      reverse: run from the last step to the first.

    Returns:
      ``[t, ...]``, every step's carry.
    """
    big_a, big_b = _prefix(a, b, reverse)
    return big_a * h0[None] + big_b


def _linear_scan_fwd(a, b, h0, reverse):
    hs = linear_scan(a, b, h0, reverse)
    return hs, (a, hs, h0)


def _linear_scan_bwd(reverse, res, g):
    a, hs, h0 = res
    zero = jnp.zeros_like(h0)
    a_next = _neighbour(a, zero, later=True, reverse=reverse)
    _, lam = _prefix(a_next, g, not reverse)
    h_prev = _neighbour(hs, h0, later=False, reverse=reverse)
    first = -1 if reverse else 0
    return lam * h_prev, lam, a[first] * lam[first]


linear_scan.defvjp(_linear_scan_fwd, _linear_scan_bwd)


def _expand(m, like):
    """A ``[t, b...]`` mask with trailing singleton axes up to the rank of ``like``."""
    return m.reshape(m.shape + (1,) * (like.ndim - m.ndim))


def run(cell, params, xp, carry0, *, mask, resets, reverse, unroll, return_carries):
    """Runs a linear cell over the leading time axis of ``xp`` with ``associative_scan``.

    Args:
      cell: a cell with ``cell.linear`` set; its carry is one float32 array ``h [b..., h]`` and
        its output is ``y_t = h_t``.
      params: the cell's params.
      xp: ``[t, b..., g]`` projected inputs (``cell.input_projection``).
      carry0: ``[b..., h]`` initial carry.
      mask: ``[t, b...]`` bool or None (False = padding).
      resets: ``[t, b...]`` bool or None (True = restart from ``carry0`` before this step).
      reverse: scan from the last step to the first.
      unroll: ignored (there is no sequential loop).
      return_carries: also return ``h_t`` for every step (frozen at padding).

    Returns:
      ``(carry [b..., h], ys [t, b..., h], carries [t, b..., h] or None)``.
    """
    del unroll
    reason = supports(cell)
    if reason is not None:
        raise NotImplementedError(f"backend='associative': {reason}")
    if not isinstance(carry0, jax.Array):
        raise TypeError(
            f"backend='associative' needs a carry that is one array, got {type(carry0).__name__}"
        )
    log_a, b = cell.linear(params, xp)
    a = jnp.exp(log_a).astype(carry0.dtype)
    b = b.astype(carry0.dtype)
    h0 = carry0[None]
    if mask is not None:
        m = _expand(mask, a)
        a = jnp.where(m, a, jnp.ones((), a.dtype))
        b = jnp.where(m, b, jnp.zeros((), b.dtype))
    if resets is not None:
        r = _expand(resets, a)
        b = jnp.where(r, a * h0 + b, b)
        a = jnp.where(r, jnp.zeros((), a.dtype), a)
    if a.shape[0] == 0:
        ys = jnp.zeros(a.shape, a.dtype)
        return carry0, ys, (ys if return_carries else None)
    hs = linear_scan(a, b, carry0, reverse)
    carry = hs[0] if reverse else hs[-1]
    ys = hs if mask is None else jnp.where(_expand(mask, hs), hs, jnp.zeros((), hs.dtype))
    return carry, ys, (hs if return_carries else None)
