"""Small pytree helpers shared by backends and layers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def where(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """``jnp.where`` over matching pytrees; ``mask`` ``[b]`` broadcasts over trailing dims."""

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, on_true, on_false)


def zeros_where_not(mask: jax.Array, y: jax.Array) -> jax.Array:
    """``y`` with the entries where ``mask`` is False set to exactly zero."""
    m = mask.reshape(mask.shape + (1,) * (y.ndim - mask.ndim))
    return jnp.where(m, y, jnp.zeros((), y.dtype))


def stack(trees: list) -> Any:
    """Stacks matching pytrees along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def index(tree: Any, i: Any) -> Any:
    """Leaf-wise ``x[i]``."""
    return jax.tree.map(lambda a: a[i], tree)
