"""torch.nn.LSTM / torch.nn.GRU peers, run in their own process (never beside JAX).

Protocol (JSON lines): the parent writes the configuration
``{"threads": n, "workloads": [{"cell": "LSTM", "mode": "train", "size": {...}}, ...]}``; the child
builds and warms up every workload, answers ``{"ready": [...first-call seconds...]}``, then answers
each ``"rep"`` line with ``{"times": [...seconds, one per workload...]}`` and exits on ``"quit"``.
The parent interleaves these repetitions with its own, so both see the same machine load.

The workload mirrors :mod:`jrnn.bench.workloads`: one-hot float inputs ``[t, b, v]``, a
``num_layers`` stack, a ``Linear(h, v)`` head, cross-entropy and ``torch.optim.Adam``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np


def _build(spec: dict):
    import torch

    size = spec["size"]
    v, h, t, b, layers = (size[k] for k in ("vocab", "hidden", "steps", "batch", "layers"))
    if spec["cell"] == "CHAIN":
        return _chain(spec["mode"], h, t, b, spec["width"])
    rnn_cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[spec["cell"]]
    torch.manual_seed(0)
    rnn = rnn_cls(v, h, num_layers=layers)
    head = torch.nn.Linear(h, v)
    rng = np.random.default_rng(0)
    toks = torch.from_numpy(rng.integers(0, v, (t + 1, b)).astype(np.int64))
    x = torch.nn.functional.one_hot(toks[:-1], v).float()
    y = toks[1:].reshape(-1)
    if spec["mode"] == "forward":

        def run():
            with torch.inference_mode():
                out, _ = rnn(x)
            return out

        return run
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(x)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, v), y)
        loss.backward()
        opt.step()
        return loss

    return run


def _chain(mode: str, h: int, t: int, b: int, g: int):
    """The recurrent matmul chain alone (see ``jrnn.bench.workloads.chain_workload``)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(h, g, generator=gen) * h**-0.5
    weight_t = weight.t()  # a view, as the backward of torch.mm uses it
    h0 = torch.randn(b, h, generator=gen)
    hs = torch.randn(t * b, h, generator=gen)
    dz = torch.randn(t * b, g, generator=gen)
    reps = g // h

    def run():
        with torch.inference_mode():
            c = h0
            for _ in range(t):
                c = torch.tanh(torch.mm(c, weight)[:, :h])
            if mode == "train":
                d = c.repeat(1, reps)
                for _ in range(t):
                    d = torch.tanh(torch.mm(d, weight_t)).repeat(1, reps)
                c = (d, torch.mm(hs.t(), dz))
        return c

    return run


def child_main() -> None:
    """The child process: reads the protocol from stdin."""
    import torch

    config = json.loads(sys.stdin.readline())
    torch.set_num_threads(int(config["threads"]))
    runs = [_build(spec) for spec in config["workloads"]]
    first = []
    for run in runs:
        t0 = time.perf_counter()
        run()
        first.append(time.perf_counter() - t0)
        for _ in range(int(config.get("warmup", 2))):
            run()
    print(json.dumps({"ready": first, "version": torch.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "rep":
            break
        times = []
        for run in runs:
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"times": times}), flush=True)


def available() -> bool:
    """Whether torch can be imported (checked in a subprocess: JAX and torch never share one)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, timeout=120, check=False
    )
    return proc.returncode == 0


class TorchPeer:
    """The parent side: starts the child, then asks for one repetition at a time."""

    def __init__(self, workloads: list, threads: int, warmup: int = 2):
        self.proc = subprocess.Popen(
            # Run by path, not with -m: importing the jrnn.bench package would import JAX too.
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        from jrnn.bench.sizes import gate_width  # parent side only: the child never imports JAX

        specs = [
            {
                "cell": w.cell,
                "mode": w.mode,
                "size": w.size.__dict__ | {},
                "width": gate_width(w.family, w.size.hidden)[1],
            }
            for w in workloads
        ]
        self._send({"threads": threads, "warmup": warmup, "workloads": specs})
        reply = self._read()
        self.first = reply["ready"]
        self.version = reply["version"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send(self, obj) -> None:
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the torch peer process ended unexpectedly")
        return json.loads(line)

    def rep(self) -> list[float]:
        """Times every torch workload once."""
        self._send("rep")
        return self._read()["times"]

    def close(self) -> None:
        try:
            self._send("quit")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


if __name__ == "__main__":
    child_main()
