"""Character language model on any text: presets, the truncated-BPTT stream, training, sampling.

This is the part of the char-LM experiment that the ``jrnn`` command and the Colab notebook need
from an installed wheel (the ``experiments`` folder is not packaged): it composes
:class:`jrnn.models.CharLM`, :mod:`jrnn.data`'s LM streams and :func:`jrnn.train.fit`.
``experiments/char_lm/train.py`` uses the same :func:`stream_batches` and
:func:`evaluate_stream`.

A workdir written by :func:`train_lm` holds ``lm.json`` (the model's settings, so
:func:`load_lm` can rebuild it), ``checkpoints/``, ``metrics.jsonl``, ``curves.png``,
``summary.json`` and ``samples.txt``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jrnn import data as jd
from jrnn._src.train import TrainConfig

SETTINGS_FILE = "lm.json"


@dataclasses.dataclass(frozen=True)
class LMPreset:
    """Model and training sizes of a char-LM run (the ``experiments/char_lm`` presets).

    Attributes:
      name: the preset's name.
      cell: cell name (``"lstm"``, ``"gru"``, ...).
      hidden_size: h.
      num_layers: stacked layers.
      dropout: dropout between layers and on the last outputs.
      seq_len: t, the truncated-BPTT window.
      eval_batch_size: rows of the held-out stream evaluated together.
      eval_bytes: periodic evaluations read this many held-out bytes (None: all); the final
        evaluation reads the whole held-out split.
      max_seconds: wall-clock budget of training (None: ``train.steps`` only).
      seed: model init seed.
      backend: the RNN time-loop backend (``"auto"``, ``"xla"``, ``"cpu"``, ...); it changes
        the speed, not the model (a checkpoint loads with any backend). ``"cpu"`` (the C++
        kernel) is used on the CPU platform only; on a GPU or TPU it means ``"auto"``.
      train: optimizer and loop settings.
    """

    name: str
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.0
    seq_len: int = 256
    eval_batch_size: int = 32
    eval_bytes: int | None = None
    max_seconds: float | None = None
    seed: int = 0
    backend: str = "auto"
    train: TrainConfig = TrainConfig()

    def replace(self, **changes: Any) -> LMPreset:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# experiments/char_lm/config.py builds its smoke and cpu presets from these (tests/test_cli.py
# checks every preset agrees).
PRESETS: dict[str, LMPreset] = {
    "smoke": LMPreset(
        name="smoke",
        hidden_size=32,
        num_layers=1,
        seq_len=16,
        eval_batch_size=8,
        eval_bytes=4096,
        train=TrainConfig(
            steps=60,
            batch_size=16,
            learning_rate=1e-2,
            warmup_steps=5,
            eval_every=30,
            log_every=10,
            checkpoint_every=0,
            progress=False,
        ),
    ),
    "cpu": LMPreset(
        name="cpu",
        hidden_size=384,
        num_layers=2,
        seq_len=128,
        eval_batch_size=64,
        eval_bytes=65_536,
        max_seconds=3300.0,
        backend="cpu",
        train=TrainConfig(
            steps=4400,
            batch_size=32,
            learning_rate=3e-3,
            warmup_steps=50,
            eval_every=500,
            log_every=25,
            checkpoint_every=500,
        ),
    ),
    "tpu": LMPreset(
        name="tpu",
        hidden_size=512,
        num_layers=3,
        dropout=0.2,
        seq_len=256,
        eval_batch_size=128,
        eval_bytes=262_144,
        max_seconds=1500.0,
        train=TrainConfig(
            steps=6000,
            batch_size=128,
            learning_rate=2e-3,
            warmup_steps=500,
            eval_every=500,
            log_every=50,
            checkpoint_every=500,
        ),
    ),
}


def get_preset(name: str) -> LMPreset:
    """The preset called ``name`` (one of :data:`PRESETS`).

    Example:
      >>> from jrnn import cli
      >>> p = cli.get_preset("cpu")
      >>> p.num_layers, p.hidden_size, p.seq_len, p.train.steps
      (2, 384, 128, 4400)
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


def stream_batches(
    data: np.ndarray,
    batch_size: int,
    seq_len: int,
    *,
    seed: int | None = 0,
    start_step: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[dict[str, Any]]:
    """Truncated-BPTT batches from ``start_step`` on, flagged ``reset`` at every epoch start.

    Rows continue across batches (:func:`jrnn.data.lm_stream_batches`), so :func:`jrnn.train.fit`
    carries the state from batch to batch and starts from zeros where ``reset`` is True.
    """
    steps_per_epoch = jd.lm_epoch_length(len(data), batch_size, seq_len)
    stream = jd.lm_stream_batches(
        data,
        batch_size,
        seq_len,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        start_step=start_step,
    )
    for i, (x, y) in enumerate(stream):
        reset = (start_step + i) % steps_per_epoch == 0
        yield {"inputs": x, "targets": y, "reset": np.bool_(reset)}


def evaluate_stream(
    model: Any,
    data: np.ndarray,
    batch_size: int,
    seq_len: int,
    *,
    shard_index: int = 0,
    shard_count: int = 1,
) -> dict[str, float]:
    """Mean next-character loss (nats/char) over every token of ``data``, carry threaded."""
    from jrnn._src.train import evaluate
    from jrnn.models import losses

    batches = (
        {"inputs": x, "targets": y, "mask": m}
        for x, y, m in jd.lm_eval_batches(
            data, batch_size, seq_len, shard_index=shard_index, shard_count=shard_count
        )
    )
    return evaluate(model, losses.char_lm_loss, batches, init_carry=model.initial_carries)


def _time_limited(iterator: Iterator[Any], max_seconds: float | None) -> Iterator[Any]:
    deadline = None
    for item in iterator:
        now = time.perf_counter()
        if deadline is None:
            deadline = now + (float("inf") if max_seconds is None else float(max_seconds))
        elif now > deadline:
            return
        yield item


def _model_settings(preset: LMPreset) -> dict[str, Any]:
    return {
        "vocab_size": 128,
        "hidden_size": preset.hidden_size,
        "num_layers": preset.num_layers,
        "cell": preset.cell,
        "dropout": preset.dropout,
        "seed": preset.seed,
    }


def platform_backend(backend: str) -> str:
    """A preset's backend on this platform: ``"cpu"`` (the C++ kernel, a CPU-only backend)
    becomes ``"auto"`` where JAX's default platform is not the CPU; others are unchanged.

    Example:
      >>> platform_backend("xla")
      'xla'
    """
    import jax

    if backend == "cpu" and jax.default_backend() != "cpu":
        return "auto"
    return backend


def _make_model(settings: dict[str, Any], backend: str = "auto") -> Any:
    from flax import nnx

    from jrnn.models import CharLM

    kwargs = {k: v for k, v in settings.items() if k != "seed"}
    return CharLM(**kwargs, backend=platform_backend(backend), rngs=nnx.Rngs(settings["seed"]))


def _path(workdir: str | os.PathLike) -> Any:
    # etils.epath (a flax dependency): local folders, and gs:// where a GCS backend is installed.
    from etils import epath

    return epath.Path(workdir)


def _write_text(path: Any, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _write_json(path: Any, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _check_text(text: Any) -> jd.TextSplit:
    if isinstance(text, jd.TextSplit):
        return text
    if text is None:
        return jd.load_shakespeare()
    if not isinstance(text, str | os.PathLike):
        raise TypeError(f"text must be a path, a jrnn.data.TextSplit or None, got {text!r}")
    if not os.path.exists(text):
        raise FileNotFoundError(f"text file {os.fspath(text)!r} does not exist")
    return jd.load_text_corpus(text)


def train_lm(
    text: str | os.PathLike | jd.TextSplit | None,
    workdir: str,
    preset: str | LMPreset = "cpu",
    *,
    steps: int | None = None,
    resume: bool = True,
    prompts: tuple[str, ...] = ("\n",),
    sample_length: int = 200,
    temperature: float = 0.8,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Trains a :class:`~jrnn.models.CharLM` on a text, evaluates it on the held-out part and
    samples from it.

    Args:
      text: a text file or folder of ``.txt`` files (the last tenth of the bytes, or the last
        files, are held out; see :func:`jrnn.data.load_text_corpus`), a
        :class:`jrnn.data.TextSplit`, or None for Shakespeare (the ``shakespeare`` data package).
      workdir: output folder (created): ``lm.json``, ``checkpoints/``, ``metrics.jsonl``,
        ``curves.png``, ``summary.json``, ``samples.txt``.
      preset: a name in :data:`PRESETS` or an :class:`LMPreset`.
      steps: optimizer steps (None: the preset's).
      resume: continue from the latest checkpoint in ``workdir``.
      prompts: prompts of the samples written at the end.
      sample_length: characters per sample.
      temperature: sampling temperature of those samples.
      log: called with each progress line.

    Returns:
      The summary (also in ``summary.json``): preset, steps, seconds, ``heldout_nats_per_char``,
      ``heldout_bits_per_char``, ``first_loss``, ``final_loss``, samples.

    Raises:
      FileNotFoundError: if ``text`` does not exist.
      ValueError: on an unknown preset or a text too short for one batch.

    Example:
      >>> from jrnn import cli
      >>> summary = cli.train_lm("my.txt", "runs/lm", "smoke")  # doctest: +SKIP
    """
    import jax

    from jrnn._src.fit import fit
    from jrnn.models import losses

    if isinstance(preset, str):
        preset = get_preset(preset)
    if steps is not None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        preset = preset.replace(train=preset.train.replace(steps=steps))
    split = _check_text(text)
    cfg = preset.train
    need = cfg.batch_size * preset.seq_len + preset.seq_len + 1
    if len(split.train) < need:
        raise ValueError(
            f"the training text has {len(split.train):,} bytes; preset {preset.name!r} needs at "
            f"least {need:,} (batch_size {cfg.batch_size} x seq_len {preset.seq_len} + "
            f"seq_len + 1): use a longer text or a smaller preset"
        )
    if len(split.validation) < 2:
        raise ValueError("the held-out text is empty: use a longer text")
    t0 = time.perf_counter()
    wd = _path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    settings = _model_settings(preset)
    settings_path = wd / SETTINGS_FILE
    if resume and settings_path.exists():
        saved = json.loads(settings_path.read_text())["model"]
        if saved != settings:
            raise ValueError(
                f"{workdir!r} holds a model with settings {saved}, not {settings} (preset "
                f"{preset.name!r}): use another workdir or resume=False (--no-resume)"
            )
    _write_json(settings_path, {"preset": preset.name, "model": settings})
    log(
        f"char LM [{preset.name}]: {len(split.train):,} train bytes, "
        f"{len(split.validation):,} held-out bytes, {cfg.steps} steps"
    )
    model = _make_model(settings, preset.backend)
    periodic = split.validation
    if preset.eval_bytes is not None:
        periodic = periodic[: preset.eval_bytes]

    def batches(start_step: int) -> Iterator[dict[str, Any]]:
        it = stream_batches(
            split.train, cfg.batch_size, preset.seq_len, seed=cfg.seed, start_step=start_step
        )
        return _time_limited(it, preset.max_seconds)

    def eval_fn(m: Any) -> dict[str, float]:
        out = evaluate_stream(m, periodic, preset.eval_batch_size, preset.seq_len)
        log(f"  eval: held-out loss {out['loss']:.4f} nats/char")
        return out

    result = fit(
        model,
        losses.char_lm_loss,
        batches,
        cfg,
        eval_fn=eval_fn,
        workdir=workdir,
        init_carry=model.initial_carries,
        resume=resume,
    )
    final = evaluate_stream(model, split.validation, preset.eval_batch_size, preset.seq_len)
    losses_seen = [r["loss"] for r in result.history if r.get("kind") == "train"]
    log(
        f"char LM [{preset.name}]: {result.steps_done} steps in {result.wall_time:.0f} s; "
        f"held-out {final['loss']:.4f} nats/char ({final['bits_per_char']:.4f} bits/char)"
    )
    samples = model.generate(
        list(prompts),
        sample_length,
        key=jax.random.key(preset.seed),
        temperature=temperature,
        num_samples=1,
        include_prompt=True,
    )
    for s in samples:
        log("-" * 72 + "\n" + s)
    summary = {
        "task": "char_lm",
        "preset": dataclasses.asdict(preset),
        "steps": result.steps_done,
        "train_seconds": result.wall_time,
        "total_seconds": time.perf_counter() - t0,
        "train_bytes": len(split.train),
        "heldout_bytes": len(split.validation),
        "first_loss": losses_seen[0] if losses_seen else None,
        "final_loss": losses_seen[-1] if losses_seen else None,
        "heldout_nats_per_char": final["loss"],
        "heldout_bits_per_char": final["bits_per_char"],
        "heldout_accuracy": final["accuracy"],
        "samples": samples,
    }
    if jax.process_index() == 0:
        _write_json(wd / "summary.json", summary)
        _write_text(wd / "samples.txt", ("\n" + "-" * 72 + "\n").join(samples) + "\n")
        if cfg.plot and (wd / "metrics.jsonl").exists():
            _redraw_curves(workdir)
    return summary


def _redraw_curves(workdir: str) -> None:
    # fit drew curves.png before the final full evaluation; draw it again with that marked.
    from jrnn._src.plots import plot_curves

    try:
        plot_curves(f"{workdir}/metrics.jsonl", f"{workdir}/curves.png", title="char LM")
    except ImportError:
        pass  # fit already warned that matplotlib is missing


def load_lm(workdir: str, step: int | None = None) -> Any:
    """The :class:`~jrnn.models.CharLM` trained by :func:`train_lm` in ``workdir``.

    Args:
      workdir: a folder written by :func:`train_lm` (``lm.json`` and ``checkpoints/``).
      step: which checkpoint (None: the latest).

    Raises:
      FileNotFoundError: if ``workdir`` holds no trained model.

    Example:
      >>> from jrnn import cli
      >>> model = cli.load_lm("runs/lm")  # doctest: +SKIP
    """
    from jrnn._src.checkpoint import list_steps, restore_checkpoint

    settings_path = _path(workdir) / SETTINGS_FILE
    root = f"{workdir}/checkpoints"
    if not settings_path.exists() or not list_steps(root):
        raise FileNotFoundError(
            f"no trained model in {workdir!r} (expected {SETTINGS_FILE} and checkpoints/): "
            f"train one first with `jrnn train-lm --text FILE --workdir {workdir}`"
        )
    settings = json.loads(settings_path.read_text())["model"]
    model = _make_model(settings)
    restore_checkpoint(root, model, step=step)
    return model
