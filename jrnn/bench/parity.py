"""``python -m jrnn.bench.parity``: jrnn trains exactly like PyTorch, step for step.

Two models are trained in jrnn and in ``torch.nn`` from the same initial weights, on the same
batches, with the same optimiser and the same gradient clipping:

* ``lm``: a 2-layer LSTM character language model (one-hot tokens, no embedding; a linear head;
  mean cross-entropy over every step). jrnn: ``jrnn.lstm(h, two_biases=True)``, integer tokens
  (a row gather); torch: ``nn.LSTM`` on one-hot floats.
* ``clf``: a 2-layer bidirectional GRU classifier with lengths (the last layer's final forward and
  backward states, concatenated, then a linear head). torch: a packed sequence
  (``pack_padded_sequence(..., enforce_sorted=False)``); jrnn: ``lengths=``.

The batches are sequences of 128 symbols drawn from seeded random Markov chains (one chain for the
LM, one per class for the classifier): something to learn, and no data file to depend on.

torch runs in its own process (:mod:`jrnn.bench.parity_torch`; JAX and torch never share one):
it initialises the model with PyTorch's own initialisation, saves that state_dict, trains, and
returns the per-step losses, gradient norms and times and the final state_dict. jrnn loads the
initial state_dict with :func:`jrnn.interop.from_torch` and trains with

* :func:`adam_like_torch`: ``torch.optim.Adam``'s update, ``p -= lr * m_hat / (sqrt(v_hat) +
  eps)`` with both moments bias-corrected. ``optax.adam(lr, b1, b2, eps=eps, eps_root=0)`` is
  the same formula (torch divides ``sqrt(v)`` by ``sqrt(1 - b2^t)``, optax takes
  ``sqrt(v / (1 - b2^t))``: equal up to rounding) and matches in float64; in float32 optax's
  ``1 - b2**t`` cancels (1.3e-5 relative at t = 1), torch's is exact, so this one is written
  out with an accurate ``1 - b^t``;
* :func:`clip_by_global_norm_like_torch`: ``g * min(1, max_norm / (||g|| + 1e-6))``, the formula
  of ``torch.nn.utils.clip_grad_norm_`` (``optax.clip_by_global_norm`` has no ``1e-6`` and
  leaves ``g`` alone below the threshold, a relative difference of ``1e-6 / ||g||`` per clipped
  step, which Adam carries into every later step).

In float64 (``jax_enable_x64``, torch ``.double()``) the per-step losses must agree to 1e-9
relative and the final parameters to 1e-7; in float32 every step's loss within 1 %. The table
shows the largest relative loss difference of single steps, per 50 steps (the drift), that of
the loss curves (running means over 10 steps), torch's own float32-vs-float64 drift when both dtypes
ran (the scale at which float32 rounding, amplified by training, separates two runs), the
largest parameter difference after training, and the median time per step of each.

Usage::

    python -m jrnn.bench.parity                       # both models, float64 and float32, 200 steps
    python -m jrnn.bench.parity --tasks lm --dtypes float64 --steps 50 --hidden 32
    python -m jrnn.bench.parity --json parity.json
    python -m jrnn.bench.parity --tasks lm --one-bias  # jrnn's one-bias LSTM: does not match

Example:
    >>> from jrnn.bench.parity import ParityConfig
    >>> ParityConfig(task="lm", steps=10).batch
    8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple

import numpy as np

LOSS_RTOL = {"float64": 1e-9, "float32": 1e-2}  # every step's relative loss difference
CURVE_WINDOW = 10  # the curves column: running means over this many steps
PARAM_ATOL = {"float64": 1e-7, "float32": None}  # largest |difference| of a final parameter
_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity_torch.py")


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    """One parity run: the model, its data and its optimiser.

    Attributes:
      task: ``"lm"`` (2-layer LSTM character LM) or ``"clf"`` (bidirectional GRU classifier).
      dtype: ``"float64"`` or ``"float32"``.
      steps: optimiser steps.
      batch: b, sequences per batch.
      seq: t, time steps per sequence (the LM reads ``t + 1`` tokens).
      hidden: h.
      layers: stacked layers.
      vocab: input symbols (one-hot tokens).
      classes: classes of the classifier.
      lr, b1, b2, eps: Adam's settings (PyTorch's defaults for b1, b2, eps).
      clip: the global gradient norm limit.
      seed: PyTorch's initialisation seed and the batches' seed.
      threads: torch's intra-op threads.
      backend: jrnn's ``backend=``.
      two_biases: the LSTM keeps PyTorch's two biases (False: one bias, ``bias_ih + bias_hh``,
        which Adam moves differently; kept to show that difference).
    """

    task: str = "lm"
    dtype: str = "float64"
    steps: int = 200
    batch: int = 8
    seq: int = 32
    hidden: int = 64
    layers: int = 2
    vocab: int = 128
    classes: int = 4
    lr: float = 1e-2
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip: float = 0.5
    seed: int = 0
    threads: int = 1
    backend: str = "auto"
    two_biases: bool = True

    def __post_init__(self):
        if self.task not in ("lm", "clf"):
            raise ValueError(f"task must be 'lm' or 'clf', got {self.task!r}")
        if self.dtype not in LOSS_RTOL:
            raise ValueError(f"dtype must be one of {sorted(LOSS_RTOL)}, got {self.dtype!r}")
        for name in ("steps", "batch", "seq", "hidden", "layers", "vocab", "classes", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


# ----------------------------------------------------------------------------------- data


def _markov(rng: np.random.Generator, chain: np.ndarray, n: int, length: int) -> np.ndarray:
    """``n`` sequences of ``length`` symbols from the transition matrix ``chain`` ``[v, v]``."""
    cum = np.cumsum(chain, axis=-1)
    out = np.zeros((n, length), np.int64)
    out[:, 0] = rng.integers(0, chain.shape[0], n)
    for t in range(1, length):
        u = rng.random((n, 1))
        out[:, t] = np.minimum((cum[out[:, t - 1]] < u).sum(-1), chain.shape[0] - 1)
    return out


def make_batches(cfg: ParityConfig) -> dict[str, np.ndarray]:
    """Every step's batch, from random Markov chains over the vocabulary (seeded, learnable).

    LM: ``tokens [s, b, t + 1]`` from one chain. Classifier: ``tokens [s, b, t]`` in
    ``[1, vocab)`` from one chain per class (the label), ``lengths [s, b]`` in ``[t // 4, t]``,
    padding token 0, and ``labels [s, b]``.
    """
    rng = np.random.default_rng(cfg.seed)
    s, b, t, v = cfg.steps, cfg.batch, cfg.seq, cfg.vocab
    if cfg.task == "lm":
        chain = rng.dirichlet(np.full(v, 0.05), v)
        return {"tokens": _markov(rng, chain, s * b, t + 1).reshape(s, b, t + 1)}
    chains = rng.dirichlet(np.full(v - 1, 0.05), (cfg.classes, v - 1))
    labels = rng.integers(0, cfg.classes, (s, b))
    lengths = rng.integers(max(1, t // 4), t + 1, (s, b))
    seqs = np.stack([_markov(rng, c, s * b, t) for c in chains]) + 1  # [classes, s * b, t]
    tokens = seqs[labels.reshape(-1), np.arange(s * b)].reshape(s, b, t)
    tokens = np.where(np.arange(t) < lengths[..., None], tokens, 0)
    return {"tokens": tokens, "lengths": lengths, "labels": labels}


# ----------------------------------------------------------------------------------- torch


def run_torch(cfg: ParityConfig, data: dict, workdir: str) -> dict[str, Any]:
    """Trains the torch model in its own process; returns its npz output as a dict."""
    data_path = os.path.join(workdir, f"{cfg.task}_{cfg.dtype}_data.npz")
    out_path = os.path.join(workdir, f"{cfg.task}_{cfg.dtype}_torch.npz")
    np.savez(data_path, **data)
    conf = dataclasses.asdict(cfg) | {"data": data_path, "out": out_path}
    conf_path = os.path.join(workdir, f"{cfg.task}_{cfg.dtype}.json")
    with open(conf_path, "w") as f:
        json.dump(conf, f)
    proc = subprocess.run(
        [sys.executable, _CHILD, conf_path], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the torch process failed:\n{proc.stderr[-3000:]}")
    with np.load(out_path) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------------- jrnn


def clip_by_global_norm_like_torch(max_norm: float):
    """``torch.nn.utils.clip_grad_norm_`` as an optax transformation.

    ``g * min(1, max_norm / (||g|| + 1e-6))`` with ``||g||`` the 2-norm of all leaves together.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = clip_by_global_norm_like_torch(1.0)
      >>> g, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(None))
      >>> [round(float(v), 6) for v in g["w"]]
      [0.6, 0.8]
    """
    import jax
    import jax.numpy as jnp
    import optax

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class AdamState(NamedTuple):
    """State of :func:`adam_like_torch`: step count and both moments."""

    count: Any
    mu: Any
    nu: Any


def adam_like_torch(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """``torch.optim.Adam`` (no weight decay, no amsgrad) as an optax transformation.

    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, torch's own arrangement:
    ``eps`` outside the square root, both moments bias-corrected. In float64 this equals
    ``optax.adam(lr, b1, b2, eps=eps, eps_root=0)`` to rounding. In float32 it does not quite:
    optax forms ``1 - b2**t`` in float32, where the subtraction cancels (``1 - 0.999`` is off
    by 1.3e-5 relative), while torch forms it in Python floats. Here it is ``-expm1(t *
    log(b2))``, accurate to float32 rounding, so the float32 updates agree as well.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adam_like_torch(0.1)
      >>> u, _ = tx.update(jnp.array([2.0, -1e-3]), tx.init(jnp.zeros(2)))
      >>> [round(float(v), 4) for v in u]   # the first step is -lr * sign(g), up to eps
      [-0.1, 0.1]
    """
    import jax
    import jax.numpy as jnp
    import optax

    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v * b2 + g * g * (1 - b2), state.nu, grads)

        def step(m, v):
            t = count.astype(m.dtype)
            bc1 = -jnp.expm1(t * log_b1)  # 1 - b1^t
            bc2 = -jnp.expm1(t * log_b2)
            return -(lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)

        return jax.tree.map(step, mu, nu), AdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def _model(cfg: ParityConfig, dtype):
    import jrnn

    kw = dict(dtype=dtype, param_dtype=dtype)
    if cfg.task == "lm":
        return jrnn.rnn(jrnn.lstm(cfg.hidden, two_biases=cfg.two_biases, **kw), cfg.layers)
    return jrnn.rnn(jrnn.gru(cfg.hidden, **kw), cfg.layers, bidirectional=True)


def _from_torch(sd: dict, net, dtype) -> dict:
    import jax.numpy as jnp

    from jrnn import interop

    return {
        "rnn": interop.from_torch(sd, net, prefix="rnn."),
        "head": {
            "w": jnp.asarray(sd["head.weight"].T, dtype),
            "b": jnp.asarray(sd["head.bias"], dtype),
        },
    }


def _to_torch(params: dict, net) -> dict:
    from jrnn import interop

    out = interop.to_torch(params["rnn"], net, prefix="rnn.")
    out["head.weight"] = np.asarray(params["head"]["w"]).T
    out["head.bias"] = np.asarray(params["head"]["b"])
    return out


def run_jrnn(cfg: ParityConfig, data: dict, init: dict) -> dict[str, Any]:
    """Trains the jrnn model from the torch state_dict ``init``; per-step losses, norms, times."""
    import jax
    import jax.numpy as jnp
    import optax

    with jax.enable_x64(cfg.dtype == "float64"):
        dtype = jnp.dtype(cfg.dtype)
        net = _model(cfg, dtype)
        params = _from_torch(init, net, dtype)
        tx = optax.chain(
            clip_by_global_norm_like_torch(cfg.clip),
            adam_like_torch(cfg.lr, cfg.b1, cfg.b2, cfg.eps),
        )
        batches = {k: jnp.asarray(v, jnp.int32) for k, v in data.items()}

        def loss_fn(p, batch):
            if cfg.task == "lm":
                x, y = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
                ys, _ = net.apply(p["rnn"], x, backend=cfg.backend)
            else:
                x, y = batch["tokens"], batch["labels"]
                _, carries = net.apply(p["rnn"], x, lengths=batch["lengths"], backend=cfg.backend)
                last = carries[-1]  # [2, b, h]: the last layer's forward and backward carries
                ys = jnp.concatenate([last[0], last[1]], axis=-1)
            logits = ys @ p["head"]["w"]
            logits = logits + p["head"]["b"].reshape((1,) * (logits.ndim - 1) + (-1,))
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        @jax.jit
        def step(p, opt_state, s):
            batch = jax.tree.map(lambda a: a[s], batches)
            loss, grads = jax.value_and_grad(loss_fn)(p, batch)
            # optax mixes Python floats and int32 counts: standard promotion (tests use strict).
            with jax.numpy_dtype_promotion("standard"):
                norm = optax.tree.norm(grads)
                updates, opt_state = tx.update(grads, opt_state, p)
                p = optax.apply_updates(p, updates)
            return p, opt_state, loss, norm

        with jax.numpy_dtype_promotion("standard"):
            opt_state = tx.init(params)
        losses, norms, times = [], [], np.zeros(cfg.steps)
        for s in range(cfg.steps):
            t0 = time.perf_counter()
            params, opt_state, loss, norm = step(params, opt_state, jnp.int32(s))
            loss.block_until_ready()
            times[s] = time.perf_counter() - t0
            losses.append(loss)
            norms.append(norm)
        return {
            "losses": np.asarray(jax.device_get(losses), np.float64),
            "grad_norms": np.asarray(jax.device_get(norms), np.float64),
            "times": times,
            "final": _to_torch(params, net),
        }


# ----------------------------------------------------------------------------------- compare


def _curve_rel(a: np.ndarray, b: np.ndarray, window: int = CURVE_WINDOW) -> float:
    """Largest relative difference of the ``window``-step running means of two loss curves."""
    w = min(window, a.size)
    mean = lambda x: np.convolve(x, np.ones(w) / w, "valid")  # noqa: E731
    return float(np.max(np.abs(mean(a) - mean(b)) / np.abs(mean(b))))


def compare(cfg: ParityConfig, mine: dict, theirs: dict) -> dict[str, Any]:
    """The figures of one run: loss and parameter differences, drift, times."""
    rel = np.abs(mine["losses"] - theirs["losses"]) / np.abs(theirs["losses"])
    final_t = {k[len("final/") :]: v for k, v in theirs.items() if k.startswith("final/")}
    if sorted(final_t) != sorted(mine["final"]):
        raise ValueError(f"parameter names differ: {sorted(final_t)} vs {sorted(mine['final'])}")
    param_diff = max(float(np.max(np.abs(mine["final"][k] - final_t[k]))) for k in final_t)
    norm_rel = np.abs(mine["grad_norms"] - theirs["grad_norms"]) / theirs["grad_norms"]
    drift = [float(rel[i : i + 50].max()) for i in range(0, cfg.steps, 50)]
    curve = _curve_rel(mine["losses"], theirs["losses"])
    return {
        "task": cfg.task,
        "dtype": cfg.dtype,
        "steps": cfg.steps,
        "max_loss_rel": float(rel.max()),
        "drift_per_50": drift,
        "loss_rel_after_first_update": float(rel[1]) if cfg.steps > 1 else None,
        "curve_rel": curve,
        "max_param_abs": param_diff,
        "losses_jrnn": [float(x) for x in mine["losses"]],
        "losses_torch": [float(x) for x in theirs["losses"]],
        "max_grad_norm_rel": float(norm_rel.max()),
        "clipped_steps": int(np.sum(theirs["grad_norms"] > cfg.clip)),
        "first_loss": float(theirs["losses"][0]),
        "last_loss_jrnn": float(mine["losses"][-1]),
        "last_loss_torch": float(theirs["losses"][-1]),
        "ms_per_step_jrnn": 1e3
        * float(np.median(mine["times"][1:] if cfg.steps > 1 else mine["times"])),
        "ms_per_step_torch": 1e3
        * float(np.median(theirs["times"][1:] if cfg.steps > 1 else theirs["times"])),
        "first_step_s_jrnn": float(mine["times"][0]),
        "torch_version": str(theirs["version"]),
        "ok": bool(
            rel.max() <= LOSS_RTOL[cfg.dtype]
            and (PARAM_ATOL[cfg.dtype] is None or param_diff <= PARAM_ATOL[cfg.dtype])
        ),
    }


def run(cfg: ParityConfig, workdir: str | None = None) -> dict[str, Any]:
    """Trains ``cfg``'s model in torch and in jrnn and compares them (see :func:`compare`)."""
    data = make_batches(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = run_torch(cfg, data, workdir or tmp)
    init = {k[len("init/") :]: v for k, v in theirs.items() if k.startswith("init/")}
    mine = run_jrnn(cfg, data, init)
    return compare(cfg, mine, theirs)


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`compare` results."""
    lines = [
        "| model | dtype | steps | max rel. loss diff | drift per 50 steps | curve (10-step mean) "
        "| torch f32 vs f64 | max abs. param diff | clipped steps | loss first -> last (torch) "
        "| ms/step jrnn | ms/step torch | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    name = {"lm": "2-layer LSTM LM", "clf": "biGRU classifier"}
    for r in rows:
        drift = " ".join(f"{d:.1e}" for d in r["drift_per_50"])
        ref = r.get("torch_f32_vs_f64")
        ref = " ".join(f"{d:.1e}" for d in ref) if ref else "-"
        lines.append(
            f"| {name[r['task']]} | {r['dtype']} | {r['steps']} | {r['max_loss_rel']:.1e} "
            f"| {drift} | {r['curve_rel']:.1e} | {ref} | {r['max_param_abs']:.1e} "
            f"| {r['clipped_steps']} "
            f"| {r['first_loss']:.3f} -> {r['last_loss_torch']:.3f} "
            f"| {r['ms_per_step_jrnn']:.1f} | {r['ms_per_step_torch']:.1f} "
            f"| {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def _float32_reference(rows: list[dict]) -> None:
    """Adds to each float32 row torch's own float32-vs-float64 drift (max relative loss
    difference per 50 steps), when the same model also ran in float64: the scale of float32
    rounding amplified by training, against which jrnn-vs-torch float32 drift is read."""
    for r in rows:
        if r["dtype"] != "float32":
            continue
        for r64 in rows:
            same = {k: v for k, v in r64["config"].items() if k != "dtype"} == {
                k: v for k, v in r["config"].items() if k != "dtype"
            }
            if r64["dtype"] == "float64" and same:
                a, b = np.array(r["losses_torch"]), np.array(r64["losses_torch"])
                rel = np.abs(a - b) / np.abs(b)
                r["torch_f32_vs_f64"] = [float(rel[i : i + 50].max()) for i in range(0, a.size, 50)]


def main(argv: list[str] | None = None) -> int:
    """The command line; returns 0 when every run meets its tolerance."""
    ap = argparse.ArgumentParser(
        prog="python -m jrnn.bench.parity", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--tasks", nargs="+", default=["lm", "clf"], choices=["lm", "clf"])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=list(LOSS_RTOL))
    defaults = ParityConfig()
    for name in ("steps", "batch", "seq", "hidden", "layers", "threads", "seed"):
        ap.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("lr", "clip"):
        ap.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    ap.add_argument("--backend", default=defaults.backend)
    ap.add_argument(
        "--one-bias",
        action="store_true",
        help="train jrnn's LSTM with one bias (bias_ih + bias_hh): shows why two_biases exists",
    )
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    common = {
        k: getattr(args, k)
        for k in (
            "steps",
            "batch",
            "seq",
            "hidden",
            "layers",
            "threads",
            "seed",
            "lr",
            "clip",
            "backend",
        )
    }
    rows = []
    for task in args.tasks:
        for dtype in args.dtypes:
            cfg = ParityConfig(task=task, dtype=dtype, two_biases=not args.one_bias, **common)
            rows.append(run(cfg) | {"config": dataclasses.asdict(cfg)})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    _float32_reference(rows)
    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
