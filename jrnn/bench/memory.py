"""Peak memory of a train step vs sequence length, per checkpointing policy.

``python -m jrnn.bench.memory`` compiles (does not run) the gradient of a 2-layer LSTM language
model for several sequence lengths and ``remat`` policies and prints XLA's memory analysis of the
compiled program: the temporary buffers it needs at peak. Compilation only, so it is quick and
needs no accelerator; the figures are XLA's own accounting for the platform compiled for.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp

import jrnn

POLICIES = ("none", "layer", 256, "sqrt")


def temp_bytes(
    remat, steps: int, *, hidden: int = 256, batch: int = 8, layers: int = 2, vocab: int = 128
) -> int:
    """Temporary bytes of the compiled loss-and-gradient of one batch."""
    net = jrnn.rnn(jrnn.lstm(hidden), num_layers=layers, remat=True if remat == "layer" else remat)
    params = jax.eval_shape(lambda: net.init(jax.random.key(0), vocab))
    head = jax.ShapeDtypeStruct((hidden, vocab), jnp.float32)
    tokens = jax.ShapeDtypeStruct((batch, steps), jnp.int32)

    def loss(p, w, x):
        ys, _ = net.apply(p, x)
        logits = ys @ w
        return jnp.mean(
            jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, x[..., None], -1)[..., 0]
        )

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, head, tokens).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'policy':>8} " + " ".join(f"{'T=' + str(t):>12}" for t in args.steps))
    for policy in POLICIES:
        sizes = [temp_bytes(policy if policy != "none" else None, t) for t in args.steps]
        rows.append(
            {"policy": str(policy), "temp_bytes": dict(zip(args.steps, sizes, strict=True))}
        )
        print(f"{policy!s:>8} " + " ".join(f"{s / 2**20:10.1f}MB" for s in sizes), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
