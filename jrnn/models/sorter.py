"""Many-to-one-to-many: an encoder-decoder RNN that sorts sequences of integers.

Architecture (b batch, s source length, t target length, h hidden, v vocabulary)::

    src [b, s] in [0, v) --one-hot--> encoder RNN (num_layers) --> enc [b, s, h], final carries
    decoder RNN (num_layers), initial carries = the encoder's final carries (after each row's
    last valid token), input tgt_in [b, t] in [0, v] (BOS = v, then the target shifted right:
    teacher forcing) --> dec [b, t, h]
    attention=False:  logits = dec W_o + b_o                                    [b, t, v]
    attention=True (Luong et al. 2015, "general" score, no input feeding):
        a[b, t, s] = softmax_s(dec_t W_a . enc_s)   (masked to s < src_lengths)
        ctx = sum_s a[b, t, s] enc_s;   logits = tanh([ctx; dec_t] W_c) W_o + b_o

``decoder_input="zeros"`` is the lecture's decoder, which reads a constant input at every step
(it fed ``one_hot(zeros)``; here the BOS id, equally uninformative) and so never sees its own
previous outputs. The lecture also called the decoder's ``dynamic_rnn`` without
``initial_state``, so its decoder started from zeros and never saw the encoder; jrnn passes the
encoder's final carries, as the lecture's slides describe.

Decoding (:meth:`Sorter.decode`) is jitted: greedy (a ``lax.scan`` feeding back the argmax) or
beam search (a ``lax.scan`` over a ``[b, k]`` beam with cumulative log-probabilities; no
end-of-sequence token: every hypothesis has ``max_len`` tokens).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jrnn import flax as jflax
from jrnn._src.cell import Array

DECODER_INPUTS = ("tokens", "zeros")


class Sorter(nnx.Module):
    """Encoder-decoder RNN for the sort task.

    Args:
      vocab_size: v: values in ``[0, v)``; the decoder's input vocabulary is ``v + 1`` with
        ``bos_id = v``.
      hidden_size: h (encoder and decoder).
      num_layers: layers of the encoder and of the decoder.
      cell: a cell name, a mapping ``{"name": ..., **factory_kwargs}``, or a :class:`jrnn.Cell`.
      attention: ``False``, ``True`` or ``"luong"`` (Luong "general" attention over the encoder
        outputs).
      decoder_input: ``"tokens"`` (teacher forcing with the shifted target; decoding feeds back
        its own outputs) or ``"zeros"`` (the lecture: a constant input).
      dropout: inter-layer dropout in encoder and decoder (training mode only).
      backend: time-loop backend.
      dtype: compute dtype of the matmuls (params, carries, logits stay float32).
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jrnn.models import Sorter
      >>> m = Sorter(vocab_size=10, hidden_size=16, num_layers=2, rngs=nnx.Rngs(0))
      >>> src = jnp.array([[3, 1, 2]])
      >>> m(src, m.teacher_inputs(jnp.sort(src, axis=1))).shape
      (1, 3, 10)
      >>> m.decode(src).shape, m.decode(src, method="beam", beam_width=3).shape
      ((1, 3), (1, 3))
    """

    def __init__(
        self,
        vocab_size: int = 128,
        hidden_size: int = 512,
        num_layers: int = 4,
        cell: Any = "lstm",
        attention: bool | str = False,
        *,
        decoder_input: str = "tokens",
        dropout: float = 0.0,
        backend: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        if attention not in (False, True, "luong"):
            raise ValueError(f"attention must be False, True or 'luong', got {attention!r}")
        if decoder_input not in DECODER_INPUTS:
            raise ValueError(
                f"decoder_input must be one of {DECODER_INPUTS}, got {decoder_input!r}"
            )
        self.vocab_size = vocab_size
        self.bos_id = vocab_size
        self.attention = bool(attention)
        self.decoder_input = decoder_input
        the_cell = jflax.make_cell(cell, hidden_size, dtype=dtype)
        kw = dict(rngs=rngs, backend=backend)
        self.encoder = jflax.RNN(the_cell, vocab_size, num_layers, False, dropout, **kw)
        self.decoder = jflax.RNN(the_cell, vocab_size + 1, num_layers, False, dropout, **kw)
        o = the_cell.output_size
        compute = jnp.float32 if dtype is None else dtype
        if self.attention:
            self.attn_score = nnx.Linear(o, o, use_bias=False, dtype=compute, rngs=rngs)
            self.attn_combine = nnx.Linear(2 * o, o, use_bias=False, dtype=compute, rngs=rngs)
        else:
            self.attn_score = nnx.data(None)
            self.attn_combine = nnx.data(None)
        self.head = nnx.Linear(o, vocab_size, dtype=compute, rngs=rngs)

    # ------------------------------------------------------------------------- pieces

    def teacher_inputs(self, tgt: Array) -> Array:
        """Decoder inputs for teacher forcing: ``[BOS, tgt[:, :-1]]`` (``[b, t]`` int32)."""
        tgt = jnp.asarray(tgt, jnp.int32)
        bos = jnp.full(tgt.shape[:-1] + (1,), self.bos_id, jnp.int32)
        return jnp.concatenate([bos, tgt[..., :-1]], axis=-1)

    def encode(self, src: Any, src_lengths: Any = None, *, key=None, deterministic=None):
        """``(enc [b, s, h], final carries, src_mask [b, s] or None)``."""
        src = jflax.check_tokens(src, self.vocab_size, "src")
        enc, carries = self.encoder(src, lengths=src_lengths, key=key, deterministic=deterministic)
        mask = None
        if src_lengths is not None:
            steps = jnp.arange(src.shape[-1], dtype=jnp.int32)[None, :]
            mask = steps < jnp.asarray(src_lengths, jnp.int32)[:, None]
        return enc, carries, mask

    def output_logits(self, dec: Array, enc: Array, src_mask: Array | None) -> Array:
        """Logits ``[b, t, v]`` from decoder outputs ``[b, t, h]`` (attention if enabled)."""
        if self.attention:
            q = self.attn_score(dec).astype(jnp.float32)
            scores = jnp.einsum("bth,bsh->bts", q, enc.astype(jnp.float32))
            if src_mask is not None:
                scores = jnp.where(src_mask[:, None, :], scores, jnp.full((), -1e30, jnp.float32))
            weights = jax.nn.softmax(scores, axis=-1)
            ctx = jnp.einsum("bts,bsh->bth", weights, enc.astype(jnp.float32))
            dec = jnp.tanh(self.attn_combine(jnp.concatenate([ctx, dec], axis=-1)))
        return self.head(dec).astype(jnp.float32)

    def _decoder_feed(self, tokens: Array) -> Array:
        if self.decoder_input == "zeros":
            return jnp.full(tokens.shape, self.bos_id, jnp.int32)
        return tokens

    # ------------------------------------------------------------------------- forward

    def __call__(
        self,
        src: Any,
        tgt_in: Any,
        src_lengths: Any = None,
        *,
        key: Array | None = None,
        deterministic: bool | None = None,
    ) -> Array:
        """Teacher-forced logits.

        Args:
          src: int ``[b, s]`` in ``[0, vocab_size)``.
          tgt_in: int ``[b, t]`` in ``[0, vocab_size]``: ``teacher_inputs(tgt)`` (ignored but
            for its length with ``decoder_input="zeros"``).
          src_lengths: optional int ``[b]``: the encoder's carries freeze after each row's last
            valid token and attention ignores the padding.
          key: dropout key (training mode); default: the modules' dropout streams.
          deterministic: overrides train/eval mode for this call.

        Returns:
          float32 ``[b, t, vocab_size]``: position ``j`` predicts ``tgt[:, j]``.
        """
        tgt_in = jflax.check_tokens(tgt_in, self.vocab_size + 1, "tgt_in")
        k = self.encoder.dropout_key(key, deterministic)
        k_enc, k_dec = (None, None) if k is None else tuple(jax.random.split(k))
        det = k is None
        enc, carries, mask = self.encode(src, src_lengths, key=k_enc, deterministic=det)
        dec, _ = self.decoder(self._decoder_feed(tgt_in), carries, key=k_dec, deterministic=det)
        return self.output_logits(dec, enc, mask)

    def sequence_log_prob(self, src: Any, tgt: Any, src_lengths: Any = None) -> Array:
        """``sum_j log p(tgt[:, j] | src, tgt[:, :j])`` over all positions, ``[b]`` float32
        (evaluation mode)."""
        tgt = jnp.asarray(tgt, jnp.int32)
        logits = self(src, self.teacher_inputs(tgt), src_lengths, deterministic=True)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0].sum(-1)

    def decode(
        self,
        src: Any,
        src_lengths: Any = None,
        *,
        method: str = "greedy",
        beam_width: int = 4,
        max_len: int | None = None,
        return_scores: bool = False,
    ):
        """Decodes under ``jit`` (evaluation mode).

        Args:
          src: int ``[b, s]``.
          src_lengths: optional int ``[b]``; outputs at ``j >= src_lengths`` are set to 0 (the
            data's padding value).
          method: ``"greedy"`` or ``"beam"``.
          beam_width: k >= 1 for beam search; width 1 is greedy.
          max_len: output length (default ``s``).
          return_scores: also return each output's log-probability under the model, summed
            over all ``max_len`` positions.

        Returns:
          int32 ``[b, max_len]`` (and float32 ``[b]`` scores).
        """
        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
        src = jflax.check_tokens(src, self.vocab_size, "src")
        if src.ndim != 2:
            raise ValueError(f"src must have shape [batch, time], got {src.shape}")
        max_len = src.shape[1] if max_len is None else max_len
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        width = 1 if method == "greedy" else beam_width
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"beam_width must be a positive int, got {width!r}")
        lengths = None if src_lengths is None else jnp.asarray(src_lengths, jnp.int32)
        graphdef, state = nnx.split(self)
        tokens, scores = _decode_jit(
            graphdef,
            state,
            src.astype(jnp.int32),
            lengths,
            greedy=method == "greedy",
            width=width,
            max_len=max_len,
        )
        if lengths is not None:
            steps = jnp.arange(max_len, dtype=jnp.int32)[None, :]
            tokens = jnp.where(steps < lengths[:, None], tokens, jnp.zeros((), jnp.int32))
        return (tokens, scores) if return_scores else tokens


def _step_fn(model: Sorter, enc: Array, mask: Array | None):
    """``step(tokens [n], carries) -> (log_probs [n, v], carries)`` for rows aligned with enc."""

    def step(tokens, carries):
        dec, carries = model.decoder(
            model._decoder_feed(tokens[:, None]), carries, deterministic=True
        )
        logits = model.output_logits(dec, enc, mask)[:, 0]
        return jax.nn.log_softmax(logits, axis=-1), carries

    return step


@functools.partial(jax.jit, static_argnames=("graphdef", "greedy", "width", "max_len"))
def _decode_jit(graphdef, state, src, lengths, *, greedy, width, max_len):
    model = nnx.merge(graphdef, state)
    enc, carries, mask = model.encode(src, lengths, deterministic=True)
    b = src.shape[0]
    start = jnp.full((b,), model.bos_id, jnp.int32)
    if greedy:
        step = _step_fn(model, enc, mask)

        def body(state, _):
            prev, carries, score = state
            logp, carries = step(prev, carries)
            tok = jnp.argmax(logp, axis=-1).astype(jnp.int32)
            score = score + jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
            return (tok, carries, score), tok

        init = (start, carries, jnp.zeros((b,), jnp.float32))
        (_, _, score), toks = jax.lax.scan(body, init, None, length=max_len)
        return jnp.moveaxis(toks, 0, 1), score
    return _beam_search(model, enc, carries, mask, width, max_len)


def _beam_search(model, enc, carries, mask, k, max_len):
    """Beam search of width k; rows of the beam are laid out ``b * k`` (row-major)."""
    b = enc.shape[0]
    v = model.vocab_size
    rep = lambda a, axis: jnp.repeat(a, k, axis=axis)  # noqa: E731
    enc_k = rep(enc, 0)
    mask_k = None if mask is None else rep(mask, 0)
    carries_k = jax.tree.map(lambda a: rep(a, 1), carries)  # leaves [layers, b*k, ...]
    step = _step_fn(model, enc_k, mask_k)
    neg_inf = jnp.full((), -jnp.inf, jnp.float32)
    # Only beam 0 is live at the start, so the first expansion has no duplicates.
    scores = jnp.where(jnp.arange(k)[None, :] == 0, 0.0, neg_inf) * jnp.ones((b, 1), jnp.float32)
    hist = jnp.zeros((b, k, max_len), jnp.int32)
    prev = jnp.full((b * k,), model.bos_id, jnp.int32)

    def body(state, t):
        prev, carries, scores, hist = state
        logp, carries = step(prev, carries)  # [b*k, v]
        cand = scores[:, :, None] + logp.reshape(b, k, v)
        top, idx = jax.lax.top_k(cand.reshape(b, k * v), k)  # [b, k], best first
        parent = idx // v
        tok = (idx % v).astype(jnp.int32)
        rows = (jnp.arange(b, dtype=parent.dtype)[:, None] * k + parent).reshape(-1)
        carries = jax.tree.map(lambda a: jnp.take(a, rows, axis=1), carries)
        hist = jnp.take_along_axis(hist, parent[:, :, None], axis=1)
        hist = jax.lax.dynamic_update_slice_in_dim(hist, tok[:, :, None], t, axis=2)
        return (tok.reshape(-1), carries, top, hist), None

    init = (prev, carries_k, scores, hist)
    (_, _, scores, hist), _ = jax.lax.scan(body, init, jnp.arange(max_len, dtype=jnp.int32))
    return hist[:, 0], scores[:, 0]
