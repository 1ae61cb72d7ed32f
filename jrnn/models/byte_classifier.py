"""Many-to-one: the lecture's bidirectional byte classifier.

Architecture (b batch, t time, h hidden, e ``embed_size``, c classes)::

    tokens [b, t] (bytes in [0, vocab))  --one-hot, a row gather of W_ih-->
    bidirectional num_layers-deep RNN    -> ys [b, t, 2h]   (forward | backward)
    f = ys_fwd[b, lengths[b] - 1] W_f + b_f          [b, e]  forward: last valid output
    g = ys_bwd[b, 0]             W_g + b_g           [b, e]  backward: output at t = 0
    logits = act(f + g) W_o + b_o                    [b, c]  act = identity (the lecture) by default

The backward direction is length-aware: it reads each sequence from its last valid byte down to
byte 0, so its output at t = 0 has seen the whole valid text (the lecture's
``bidirectional_dynamic_rnn`` with ``output[1][:, :1]``); the forward output is read at
``lengths - 1`` rather than at ``t - 1`` (the lecture read ``output[0][:, -1:]``, which for a
padded sequence is an output computed over padding).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jrnn import flax as jflax
from jrnn._src.cell import Array

_ACTIVATIONS = {
    None: lambda x: x,
    "none": lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
}


class ByteClassifier(nnx.Module):
    """Bidirectional RNN classifier over byte tokens (many-to-one).

    Args:
      num_classes: c.
      hidden_size: h per direction.
      num_layers: stacked bidirectional layers.
      cell: a cell name (``"lstm"``, ``"gru"``, ``"elman"``, ``"seed_rnn"``, ``"min_gru"``,
        ``"min_lstm"``), a mapping ``{"name": ..., **factory_kwargs}``, or a :class:`jrnn.Cell`.
      vocab_size: one-hot depth (128: ASCII; map other bytes with ``jrnn.data.to_ascii``).
      embed_size: e, the size both directions are projected to (the lecture's ``E_DIM = 128``).
      dropout: dropout rate between layers (PyTorch style) and on the two outputs before the
        projections; active in training mode only.
      head_activation: ``None`` (the lecture: the two projections are added and projected
        again, all linear), ``"relu"``, ``"tanh"`` or ``"gelu"`` between ``f + g`` and the class
        projection.
      backend: time-loop backend (``"auto"``, ``"xla"``, ...).
      dtype: compute dtype of the matmuls (``jnp.bfloat16`` for mixed precision); params,
        carries and logits stay float32. None: float32.
      rngs: ``nnx.Rngs`` (``params`` for init; ``dropout`` seeds the dropout stream).
      **layer_kwargs: more :func:`jrnn.rnn` options (``variational``, ``recurrent_dropout``,
        ``zoneout``, ``remat``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jrnn.models import ByteClassifier
      >>> clf = ByteClassifier(num_classes=4, hidden_size=16, num_layers=2, rngs=nnx.Rngs(0))
      >>> clf(jnp.zeros((3, 10), jnp.int32), jnp.array([10, 4, 1])).shape
      (3, 4)
    """

    def __init__(
        self,
        num_classes: int = 4,
        hidden_size: int = 512,
        num_layers: int = 3,
        cell: Any = "lstm",
        vocab_size: int = 128,
        embed_size: int = 128,
        dropout: float = 0.0,
        *,
        head_activation: str | None = None,
        backend: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
        **layer_kwargs: Any,
    ):
        if head_activation not in _ACTIVATIONS:
            raise ValueError(
                f"head_activation must be one of {list(_ACTIVATIONS)}, got {head_activation!r}"
            )
        self.num_classes = num_classes
        self.vocab_size = vocab_size
        self.head_activation = head_activation
        self.dropout_rate = float(dropout)
        the_cell = jflax.make_cell(cell, hidden_size, dtype=dtype)
        self.rnn = jflax.RNN(
            the_cell,
            vocab_size,
            num_layers,
            True,
            dropout,
            rngs=rngs,
            backend=backend,
            **layer_kwargs,
        )
        out = the_cell.output_size
        compute = jnp.float32 if dtype is None else dtype
        self.proj_fwd = nnx.Linear(out, embed_size, dtype=compute, rngs=rngs)
        self.proj_bwd = nnx.Linear(out, embed_size, dtype=compute, rngs=rngs)
        self.classifier = nnx.Linear(embed_size, num_classes, dtype=compute, rngs=rngs)

    def features(
        self,
        tokens: Any,
        lengths: Any = None,
        *,
        key: Array | None = None,
        deterministic: bool | None = None,
    ) -> tuple[Array, Array]:
        """The two summaries: ``(forward output at lengths - 1, backward output at 0)``,
        each ``[b, h]`` float32 (zero for a length-0 row)."""
        _, fwd, bwd = self.sequence_features(tokens, lengths, key=key, deterministic=deterministic)
        return fwd, bwd

    def sequence_features(
        self,
        tokens: Any,
        lengths: Any = None,
        *,
        key: Array | None = None,
        deterministic: bool | None = None,
    ) -> tuple[Array, Array, Array]:
        """``(ys, fwd, bwd)``: the last layer's outputs at every step ``ys [b, t, 2h]``
        (forward | backward, zero after ``lengths``; dropout, when active, applies to the two
        summaries only) and the two summaries of :meth:`features` (for auxiliary losses)."""
        tokens = jflax.check_tokens(tokens, self.vocab_size)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, time], got {tokens.shape}")
        b, t = tokens.shape
        if lengths is None:
            lengths = jnp.full((b,), t, jnp.int32)
        k = self.rnn.dropout_key(key, deterministic)
        k_rnn, k_out = (None, None) if k is None else tuple(jax.random.split(k))
        ys, _ = self.rnn(tokens, lengths=lengths, key=k_rnn, deterministic=k is None)
        h = ys.shape[-1] // 2
        last = jnp.clip(jnp.asarray(lengths, jnp.int32) - 1, 0, t - 1)
        fwd = jnp.take_along_axis(ys[..., :h], last[:, None, None], axis=1)[:, 0]
        bwd = ys[:, 0, h:]
        if k_out is not None:
            k_f, k_b = jax.random.split(k_out)
            fwd = jflax.dropout(fwd, self.dropout_rate, k_f)
            bwd = jflax.dropout(bwd, self.dropout_rate, k_b)
        return ys, fwd, bwd

    def head(self, fwd: Array, bwd: Array) -> Array:
        """Class logits from the two summaries (``[..., h]`` each; any leading dims)."""
        e = self.proj_fwd(fwd) + self.proj_bwd(bwd)
        e = _ACTIVATIONS[self.head_activation](e)
        return self.classifier(e).astype(jnp.float32)

    def __call__(
        self,
        tokens: Any,
        lengths: Any = None,
        *,
        key: Array | None = None,
        deterministic: bool | None = None,
    ) -> Array:
        """Class logits.

        Args:
          tokens: int ``[b, t]`` byte ids in ``[0, vocab_size)``, zero-padded. Out-of-range ids
            raise a ValueError when the values are concrete; under ``jit`` they give NaN logits
            (the row gather's fill value), never a silent zero vector.
          lengths: int ``[b]`` valid bytes per row (default: all ``t``).
          key: dropout key (training mode); default: the module's dropout stream.
          deterministic: overrides the module's train/eval mode for this call.

        Returns:
          float32 ``[b, num_classes]``.
        """
        fwd, bwd = self.features(tokens, lengths, key=key, deterministic=deterministic)
        return self.head(fwd, bwd)
