"""The ``"fused"`` backend: a ``lax.scan`` with a hand-written backward pass (the Haste approach).

Plain autodiff of ``lax.scan`` differentiates every step on its own: each step's backward
computes its own ``dW_hh += h_{t-1}^T dz_t`` (a thin ``[h, b] x [b, g]`` matmul) and carries the
``[h, g]`` accumulator through the reverse loop (read and written every step). This backend wraps
the time loop in ``jax.custom_vjp``:

* forward: one loop of ``hidden_projection`` + ``gates`` per step, saving for the backward the
  carry entering every step and ``z_t = xp_t + hp_t`` (cells whose gates only see that sum:
  lstm, elman, seed_rnn) or ``hp_t`` (other cells, e.g. the GRU);
* backward: one reverse loop that only propagates the carry cotangent. Per step it takes the
  vjp of ``gates`` w.r.t. ``(carry, xp_t, hp_t)`` (the pointwise math is recomputed from the
  saved ``z_t``/``hp_t``, no matmul) and adds the vjp of ``hidden_projection`` w.r.t. the carry
  (``dz_t W_hh^T``, the one matmul per step);
* after the loop, the parameter gradients come from one batched vjp of ``hidden_projection``
  (and of ``gates`` w.r.t. params, for peepholes, layer norm, projections, the Cho GRU) over the
  time-stacked ``[t, b, ...]`` carries: ``dW_hh`` is a single ``[h, t b] x [t b, g]`` matmul.

The cotangent of ``xp`` goes back to ``cell.input_projection`` (outside this backend), where
autodiff makes ``dW_ih`` one big matmul, or a scatter-add for token inputs.

Memory saved for the backward, per step (float32; b batch, h hidden, g gate width): the carry
entering the step plus ``b g`` (``z`` or ``hp``): LSTM ``2 b h + 4 b h = 6 b h`` floats (768 KB
per step at b 32, h 512), GRU ``b h + 3 b h``, Elman ``2 b h``. With ``SAVE = "carry"``
non-additive cells save only the carry and recompute ``hp`` in the backward (one more matmul
per step).

The backend is generic over any :class:`jrnn.Cell` whose ``recurrence`` is
``gates(p, carry, xp, hidden_projection(p, carry))``; cells that override ``recurrence`` (the
regularised cells of ``jrnn.rnn``) are declined by ``supports``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jrnn._src import tree

# What non-additive cells save besides the carries: "hp" (the backward recomputes only the
# pointwise gates) or "carry" (the backward recomputes ``h W_hh`` too: one more matmul a step).
SAVE = "hp"

# Cells whose ``gates`` read ``xp`` and ``hp`` only through ``xp + hp`` (arrays of one shape):
# the forward saves ``z = xp + hp`` and the backward produces one ``dz`` for both.
_ADDITIVE = ("lstm", "elman", "seed_rnn")


def supports(cell, **features) -> str | None:
    """Every feature is supported; cells with a custom ``recurrence`` and cells linear in the
    carry (no recurrent matmul: nothing for the fused backward to save) are declined."""
    del features
    if cell.linear is not None:
        return (
            f"cell {cell.name!r} is linear in its carry and has no recurrent matmul; the fused "
            "backward saves nothing there (measured 2x slower than 'xla'): use 'associative' "
            "or 'xla'"
        )
    if "+" in cell.name:
        return (
            f"cell {cell.name!r} overrides recurrence (e.g. recurrent dropout or zoneout), "
            "so it is not gates(hidden_projection(carry)); use backend='xla'"
        )
    return None


def _zeros(tree_like):
    return jax.tree.map(jnp.zeros_like, tree_like)


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _traits(cell) -> tuple[bool, bool]:
    """``(additive, gates_use_params)`` of a cell; unknown cells get the generic path."""
    opts = dict(cell.options)
    additive = cell.name in _ADDITIVE
    if cell.name == "lstm":
        uses = bool(opts.get("peepholes") or opts.get("layer_norm") or opts.get("proj_size"))
    elif cell.name == "gru":
        uses = not opts.get("reset_after", True)
    else:
        uses = cell.name not in ("elman", "seed_rnn")
    return additive, uses


def _make(cell, reverse: bool, unroll: int, return_carries: bool):
    """The custom-VJP time loop for one static configuration."""
    additive, gates_use_params = _traits(cell)
    recompute_hp = SAVE == "carry" and not additive

    def forward(params, xp, carry0, mask, resets, save):
        def body(carry, inputs):
            xp_t, m_t, r_t = inputs
            if r_t is not None:
                carry = tree.where(r_t, carry0, carry)
            hp = cell.hidden_projection(params, carry)
            if additive:
                xp_t, hp = xp_t + hp, jnp.zeros_like(hp)
            new, y = cell.gates(params, carry, xp_t, hp)
            if m_t is not None:
                new = tree.where(m_t, new, carry)
                y = tree.zeros_where_not(m_t, y)
            saved = None
            if save:  # the carry entering the step (after resets), and z or hp
                saved = (carry, xp_t if additive else (None if recompute_hp else hp))
            return new, (y, new if return_carries else None, saved)

        return lax.scan(body, carry0, (xp, mask, resets), reverse=reverse, unroll=unroll)

    @jax.custom_vjp
    def loop(params, xp, carry0, mask, resets):
        carry, (ys, carries, _) = forward(params, xp, carry0, mask, resets, save=False)
        return carry, ys, carries

    def loop_fwd(params, xp, carry0, mask, resets):
        carry, (ys, carries, saved) = forward(params, xp, carry0, mask, resets, save=True)
        return (carry, ys, carries), (params, xp, carry0, mask, resets, saved)

    def loop_bwd(res, cotangents):
        params, xp, carry0, mask, resets, (carries_in, zs) = res
        dcarry_final, dys, dcarries = cotangents

        def hproj_carry(c):
            return cell.hidden_projection(params, c)

        def body(state, inputs):
            dcarry, dcarry0 = state
            carry_in, xp_t, z_t, dy_t, dc_t, m_t, r_t = inputs
            if dc_t is not None:
                dcarry = _add(dcarry, dc_t)
            passthrough = None
            dnew = dcarry
            if m_t is not None:  # padding: the carry passes through, y is zero
                dnew = tree.where(m_t, dcarry, _zeros(dcarry))
                passthrough = tree.where(m_t, _zeros(dcarry), dcarry)
                dy_t = tree.zeros_where_not(m_t, dy_t)
            if additive:
                zero = jnp.zeros_like(z_t)
                _, gates_vjp = jax.vjp(lambda c, z: cell.gates(params, c, z, zero), carry_in, z_t)
                dc_direct, dxp_t = gates_vjp((dnew, dy_t))
                dhp_t = dxp_t
            else:
                hp_t = hproj_carry(carry_in) if z_t is None else z_t
                _, gates_vjp = jax.vjp(
                    lambda c, x, h: cell.gates(params, c, x, h), carry_in, xp_t, hp_t
                )
                dc_direct, dxp_t, dhp_t = gates_vjp((dnew, dy_t))
            _, hp_vjp = jax.vjp(hproj_carry, carry_in)
            (dc_hp,) = hp_vjp(dhp_t)
            dcarry_in = _add(dc_direct, dc_hp)
            if passthrough is not None:
                dcarry_in = _add(dcarry_in, passthrough)
            if r_t is not None:  # a reset step's carry came from carry0
                dcarry0 = _add(dcarry0, tree.where(r_t, dcarry_in, _zeros(dcarry_in)))
                dcarry_in = tree.where(r_t, _zeros(dcarry_in), dcarry_in)
            out = (dxp_t, None if additive else dhp_t)
            out += (dnew, dy_t) if gates_use_params else (None, None)
            return (dcarry_in, dcarry0), out

        (dcarry_first, dcarry0_resets), (dxp, dhp, dnews, dys_eff) = lax.scan(
            body,
            (dcarry_final, _zeros(carry0)),
            (carries_in, None if additive else xp, zs, dys, dcarries, mask, resets),
            reverse=not reverse,
            unroll=unroll,
        )
        dcarry0 = _add(dcarry_first, dcarry0_resets)
        if additive:
            dhp = dxp

        # Parameter gradients: one batched vjp over the time-stacked carries entering each step.
        _, p_hp_vjp = jax.vjp(lambda p: cell.hidden_projection(p, carries_in), params)
        (dparams,) = p_hp_vjp(dhp)
        if gates_use_params:
            if additive:
                xs_g, hs_g = zs, jnp.zeros_like(zs)
            else:
                xs_g = xp
                hs_g = cell.hidden_projection(params, carries_in) if zs is None else zs
            _, p_gates_vjp = jax.vjp(lambda p: cell.gates(p, carries_in, xs_g, hs_g), params)
            (dparams_gates,) = p_gates_vjp((dnews, dys_eff))
            dparams = jax.tree.map(jnp.add, dparams, dparams_gates)
        return dparams, dxp, dcarry0, None, None

    loop.defvjp(loop_fwd, loop_bwd)
    return loop


def run(cell, params, xp, carry0, *, mask, resets, reverse, unroll, return_carries):
    """Runs ``cell`` over the leading time axis of ``xp`` with the custom-VJP loop.

    Args:
      cell: a :class:`jrnn.Cell`.
      params: the cell's params.
      xp: ``[t, b..., g]`` projected inputs (``cell.input_projection`` of every step).
      carry0: the initial carry, ``[b..., ...]`` leaves.
      mask: ``[t, b...]`` bool (False = padding) or None.
      resets: ``[t, b...]`` bool (True = restart from ``carry0``) or None.
      reverse: process the time axis from last to first.
      unroll: scan unroll factor (both loops).
      return_carries: also return every step's carry.

    Returns:
      ``(carry, ys [t, b..., o], carries [t, b..., ...] or None)``.
    """
    if not hasattr(xp, "shape"):
        raise TypeError(
            f"backend='fused' needs the projected inputs as one array, got {type(xp).__name__}"
        )
    loop = _make(cell, bool(reverse), int(unroll), bool(return_carries))
    return loop(params, xp, carry0, mask, resets)
