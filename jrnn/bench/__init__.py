"""``python -m jrnn.bench``: the speed of jrnn against flax.linen and torch, side by side.

One run measures jrnn cells x backends x unroll factors x modes (``forward``: the recurrent
stack; ``train``: loss + gradient + ``optax.adam`` update of a byte language model) and the peers
(flax.linen ``nn.RNN`` with ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``; ``torch.nn.LSTM`` and
``torch.nn.GRU`` in their own process when torch is importable) on the sizes ``seed`` (vocab 128,
hidden 512, T 256, batch 32), ``seed3`` (the same, 3 layers) and ``small`` (hidden 128, T 128,
batch 16). It reports compile time and the median of interleaved repetitions after warm-up,
tokens/s, achieved GFLOP/s and % of the float32 matmul peak measured in the same run, the ratio
to the best peer, the issue's target ratios, compile time vs T and vs depth, and how busy other
processes kept the machine.

Usage::

    python -m jrnn.bench --quick                      # about a minute
    python -m jrnn.bench --json out.json --markdown docs/benchmarks_run.md
    python -m jrnn.bench --sizes h=256,t=64,b=16 --cells lstm --backends xla fused --unroll 1 2
    python -m jrnn.bench.floor     # the recurrent matmul chain alone vs torch: what bounds speed
    python -m jrnn.bench.memory    # peak memory of a train step vs T per checkpointing policy
    python -m jrnn.bench.thunks    # where one compiled step spends its time (XLA thunks)

Example:
    >>> from jrnn.bench import flops, parse_size
    >>> flops("lstm", parse_size("h=64,t=32,b=4"), "forward")  # 2 * 4 * 32 * 64 * 256
    4194304.0
"""

from jrnn.bench.cli import main, run
from jrnn.bench.sizes import SIZES, Size, Workload, flops, parse_size

__all__ = ["SIZES", "Size", "Workload", "flops", "main", "parse_size", "run"]
