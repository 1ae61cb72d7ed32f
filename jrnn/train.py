"""Training for jrnn models: optimizer, jitted steps, ``fit``, sharding, checkpoints, metrics.

Example::

    from jrnn import train
    cfg = train.TrainConfig(steps=1000, batch_size=32, learning_rate=2e-3)
    result = train.fit(model, loss_fn, batches, cfg, workdir="runs/lm")

See docs/training.md and docs/scaling.md.
"""

from jrnn._src.checkpoint import (
    Restored,
    convert_legacy_checkpoints,
    latest_step,
    list_steps,
    restore_checkpoint,
    save_checkpoint,
)
from jrnn._src.fit import Diverged, FitResult, fit
from jrnn._src.metrics import read_jsonl
from jrnn._src.plots import curves_figure, plot_curves, plot_runs, runs_figure
from jrnn._src.sharding import (
    describe_sharding,
    initialize_distributed,
    make_mesh,
    process_rows,
    shard_batch,
    state_shardings,
)
from jrnn._src.train import (
    TrainConfig,
    TrainState,
    eval_step,
    evaluate,
    init_state,
    make_optimizer,
    make_schedule,
    train_step,
)

__all__ = [
    "Diverged",
    "FitResult",
    "Restored",
    "TrainConfig",
    "TrainState",
    "convert_legacy_checkpoints",
    "curves_figure",
    "describe_sharding",
    "eval_step",
    "evaluate",
    "fit",
    "init_state",
    "initialize_distributed",
    "latest_step",
    "list_steps",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "plot_curves",
    "plot_runs",
    "process_rows",
    "read_jsonl",
    "restore_checkpoint",
    "runs_figure",
    "save_checkpoint",
    "shard_batch",
    "state_shardings",
    "train_step",
]
