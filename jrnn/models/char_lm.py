"""Many-to-many: a character (byte) language model with its carry passed in and out.

Architecture (b batch, t time, h hidden, v vocabulary)::

    tokens [b, t] --one-hot (row gather)--> num_layers-deep RNN --> ys [b, t, h]
    logits = dropout(ys) W + b                                      [b, t, v]

The carries go in and come out (leaves ``[num_layers, b, size]``), so training can run truncated
BPTT over a long stream by feeding each batch's final carries to the next batch, and generation
can prefill a prompt and continue from its carries. :meth:`CharLM.generate` samples text with a
jitted prefill and one ``lax.scan`` (see ``jrnn._src.generate``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jrnn import flax as jflax
from jrnn._src import generate as gen
from jrnn._src.cell import Array


class CharLM(nnx.Module):
    """Multi-layer RNN language model over bytes.

    Args:
      vocab_size: v, the one-hot depth and number of output classes (128: ASCII).
      hidden_size: h.
      num_layers: stacked layers.
      cell: a cell name (``"lstm"``, ``"gru"``, ``"elman"``, ``"seed_rnn"``, ``"min_gru"``,
        ``"min_lstm"``), a mapping ``{"name": ..., **factory_kwargs}``, or a :class:`jrnn.Cell`.
      dropout: dropout between layers and on the last layer's outputs (char-rnn style); training
        mode only.
      backend: time-loop backend.
      dtype: compute dtype of the matmuls (``jnp.bfloat16`` for mixed precision); params,
        carries and logits stay float32. None: float32.
      rngs: ``nnx.Rngs``.
      **layer_kwargs: more :func:`jrnn.rnn` options.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jrnn.models import CharLM
      >>> lm = CharLM(hidden_size=16, num_layers=2, rngs=nnx.Rngs(0))
      >>> logits, carries = lm(jnp.zeros((2, 7), jnp.int32))
      >>> logits.shape, carries[0].shape
      ((2, 7, 128), (2, 2, 16))
      >>> texts = lm.generate("ROMEO:", length=20, key=jax.random.key(0), num_samples=2)
      >>> len(texts), len(texts[0])
      (2, 20)
    """

    def __init__(
        self,
        vocab_size: int = 128,
        hidden_size: int = 512,
        num_layers: int = 3,
        cell: Any = "lstm",
        dropout: float = 0.0,
        *,
        backend: str = "auto",
        dtype: Any = None,
        rngs: nnx.Rngs,
        **layer_kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.dropout_rate = float(dropout)
        the_cell = jflax.make_cell(cell, hidden_size, dtype=dtype)
        self.rnn = jflax.RNN(
            the_cell,
            vocab_size,
            num_layers,
            False,
            dropout,
            rngs=rngs,
            backend=backend,
            **layer_kwargs,
        )
        compute = jnp.float32 if dtype is None else dtype
        self.head = nnx.Linear(the_cell.output_size, vocab_size, dtype=compute, rngs=rngs)

    def initial_carries(self, batch_size: int) -> Any:
        """Zero carries for ``batch_size`` rows (leaves ``[num_layers, b, size]``)."""
        return self.rnn.initial_carries(batch_size)

    def __call__(
        self,
        tokens: Any,
        carries: Any = None,
        *,
        lengths: Any = None,
        key: Array | None = None,
        deterministic: bool | None = None,
    ) -> tuple[Array, Any]:
        """Next-token logits for every position.

        Args:
          tokens: int ``[b, t]`` in ``[0, vocab_size)`` (checked when concrete; NaN under jit).
          carries: the carries from the previous chunk of the stream; zeros if None.
          lengths: optional int ``[b]``: carries freeze after each row's last valid token.
          key: dropout key (training mode); default: the module's dropout stream.
          deterministic: overrides the module's train/eval mode for this call.

        Returns:
          ``(logits float32 [b, t, vocab_size], carries)``.
        """
        tokens = jflax.check_tokens(tokens, self.vocab_size)
        k = self.rnn.dropout_key(key, deterministic)
        k_rnn, k_out = (None, None) if k is None else tuple(jax.random.split(k))
        ys, carries = self.rnn(tokens, carries, lengths=lengths, key=k_rnn, deterministic=k is None)
        ys = jflax.dropout(ys, self.dropout_rate, k_out)
        return self.head(ys).astype(jnp.float32), carries

    def sample(
        self,
        prompt_tokens: Any,
        prompt_lengths: Any,
        *,
        key: Array,
        length: int,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        printable_only: bool = True,
    ) -> Array:
        """Token-level generation: jitted prefill of the (padded) prompts, then one scan.

        Args:
          prompt_tokens: int ``[b, p]``, right-padded prompts.
          prompt_lengths: int ``[b]`` in ``[1, p]``.
          key: PRNG key (sampling step ``s`` uses ``jax.random.split(key, length)[s]``).
          length: tokens to generate.
          temperature: >= 0; 0 is greedy (argmax).
          top_k: keep the k most likely tokens (None: all).
          top_p: nucleus mass in (0, 1] (None: all).
          printable_only: feed back (and emit) ``'_'`` for a non-printable sample, as the
            lecture did.

        Returns:
          int32 ``[b, length]``.
        """
        length = _positive_int(length, "length")
        temperature, top_k, top_p = _check_sampling(temperature, top_k, top_p)
        prompt_tokens = jflax.check_tokens(prompt_tokens, self.vocab_size, "prompt_tokens")
        prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
        feedback = gen.printable_feedback(self.vocab_size) if printable_only else None
        graphdef, state = nnx.split(self)
        return _sample_jit(
            graphdef,
            state,
            prompt_tokens.astype(jnp.int32),
            prompt_lengths,
            key,
            temperature,
            top_k,
            top_p,
            None if feedback is None else jnp.asarray(feedback),
            length=length,
        )

    def generate(
        self,
        prompt: str | Sequence[str],
        length: int = 200,
        *,
        key: Array,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        num_samples: int = 4,
        stop: str | None = None,
        include_prompt: bool = False,
    ) -> list[str]:
        """Samples text continuing ``prompt``.

        Prompts are encoded with ``jrnn.data.to_ascii`` and right-padded to a power-of-two
        bucket (at least 16), so a different prompt of a similar length reuses the compiled
        program. Non-printable samples are rendered and fed back as ``'_'`` (the lecture's rule).

        Args:
          prompt: a prompt, or a list of prompts (``""`` conditions on ``"\\n"``).
          length: characters to generate per sample.
          key: PRNG key; the same key gives the same texts.
          temperature: >= 0; 0 is greedy.
          top_k: keep the k most likely characters (None: all).
          top_p: nucleus sampling mass in (0, 1] (None: all).
          num_samples: samples per prompt.
          stop: if given, each text is cut right after the first occurrence of ``stop``.
          include_prompt: prefix each text with its prompt.

        Returns:
          ``len(prompts) * num_samples`` strings, prompt-major.
        """
        tokens, lengths = gen.encode_prompts(prompt, num_samples)
        out = self.sample(
            tokens,
            lengths,
            key=key,
            length=length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        texts = gen.decode_texts(out, stop)
        if include_prompt:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            texts = [prompts[i // num_samples] + t for i, t in enumerate(texts)]
        return texts


@functools.partial(jax.jit, static_argnames=("graphdef", "length"))
def _sample_jit(
    graphdef, state, prompt, lengths, key, temperature, top_k, top_p, feedback, *, length
):
    model = nnx.merge(graphdef, state)

    def apply_fn(tokens, carries, lens):
        return model(tokens, carries, lengths=lens, deterministic=True)

    return gen.generate_tokens(
        apply_fn,
        prompt,
        lengths,
        key,
        length=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        feedback=feedback,
    )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_sampling(temperature: Any, top_k: Any, top_p: Any):
    """Validates the sampling knobs; returns them as numpy scalars (no recompilation)."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0:
        raise ValueError(f"temperature must be a float >= 0, got {temperature!r}")
    if top_k is not None:
        top_k = _positive_int(top_k, "top_k")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be a float in (0, 1], got {top_p!r}")
    return (
        np.float32(temperature),
        np.int32(0 if top_k is None else top_k),
        np.float32(1.0 if top_p is None else top_p),
    )
