"""The PyTorch side of ``python -m jrnn.bench.parity``, run by path in its own process.

Usage: ``python parity_torch.py CONFIG.json``. The config names a data file (npz of batches), an
output file and the model, optimiser and clipping settings (see :mod:`jrnn.bench.parity`). The
process builds the model with PyTorch's own initialisation (``torch.manual_seed(seed)``), casts
it to the requested dtype, saves that state_dict, trains it with ``torch.optim.Adam`` and
``torch.nn.utils.clip_grad_norm_`` on the given batches, and writes to the output npz::

    init/<name>, final/<name>    the state_dict before and after training (rnn.*, head.*)
    losses, grad_norms, times    per step: loss, global gradient norm before clipping, seconds

It imports numpy and torch only (never JAX), which is why it is run by path, not with ``-m``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _models(cfg: dict):
    import torch

    v, h, layers = cfg["vocab"], cfg["hidden"], cfg["layers"]
    if cfg["task"] == "lm":
        rnn = torch.nn.LSTM(v, h, num_layers=layers, batch_first=True)
        head = torch.nn.Linear(h, v)
    else:
        rnn = torch.nn.GRU(v, h, num_layers=layers, batch_first=True, bidirectional=True)
        head = torch.nn.Linear(2 * h, cfg["classes"])
    return rnn, head


def _loss(cfg: dict, rnn, head, batch: dict, dtype):
    import torch
    from torch.nn import functional as F  # noqa: N812

    v = cfg["vocab"]
    if cfg["task"] == "lm":
        tokens = torch.from_numpy(batch["tokens"])
        x = F.one_hot(tokens[:, :-1], v).to(dtype)
        out, _ = rnn(x)
        logits = head(out)
        return F.cross_entropy(logits.reshape(-1, v), tokens[:, 1:].reshape(-1))
    x = F.one_hot(torch.from_numpy(batch["tokens"]), v).to(dtype)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.from_numpy(batch["lengths"]), batch_first=True, enforce_sorted=False
    )
    _, h_n = rnn(packed)  # [layers * 2, b, h]: the last layer's forward and backward states
    logits = head(torch.cat([h_n[-2], h_n[-1]], dim=-1))
    return F.cross_entropy(logits, torch.from_numpy(batch["labels"]))


def _numpy_state(rnn, head) -> dict:
    out = {}
    for prefix, module in (("rnn.", rnn), ("head.", head)):
        for k, t in module.state_dict().items():
            out[prefix + k] = t.detach().numpy().copy()
    return out


def main(config_path: str) -> None:
    import torch

    with open(config_path) as f:
        cfg = json.load(f)
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    dtype = {"float64": torch.float64, "float32": torch.float32}[cfg["dtype"]]
    rnn, head = _models(cfg)
    rnn.to(dtype)
    head.to(dtype)
    init = _numpy_state(rnn, head)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(
        params, lr=cfg["lr"], betas=(cfg["b1"], cfg["b2"]), eps=cfg["eps"], foreach=False
    )
    data = dict(np.load(cfg["data"]))
    steps = int(cfg["steps"])
    losses, norms, times = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    for s in range(steps):
        batch = {k: v[s] for k, v in data.items()}
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = _loss(cfg, rnn, head, batch, dtype)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg["clip"], foreach=False)
        opt.step()
        losses[s] = loss.item()
        times[s] = time.perf_counter() - t0
        norms[s] = float(norm)
    final = _numpy_state(rnn, head)
    np.savez(
        cfg["out"],
        losses=losses,
        grad_norms=norms,
        times=times,
        version=np.array(torch.__version__),
        **{f"init/{k}": v for k, v in init.items()},
        **{f"final/{k}": v for k, v in final.items()},
    )


if __name__ == "__main__":
    main(sys.argv[1])
