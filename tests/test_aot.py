"""Ahead-of-time compiles of the Pallas TPU kernels through libtpu (``make test-tpu``).

The real Mosaic and XLA:TPU compilers build the forward and gradient of ``unroll(...,
backend="pallas")`` for a v5e chip that is not attached. Each kernel asks the compiler for
exactly the VMEM its model (``tpu_vmem``) requests, so a compile proves that the model does not
under-estimate the kernel; a squeezed compile proves it does not over-estimate it by more than
the stated margin. Skipped only where libtpu is not installed (it lives in ``.venv-tpu``).
"""

import importlib.util
import os
import re

import pytest

pytestmark = pytest.mark.tpu

if importlib.util.find_spec("libtpu") is None:
    if os.environ.get("JRNN_REQUIRE_LIBTPU"):  # set by make test-tpu: a tier that ran nothing fails
        raise ImportError("make test-tpu: libtpu is not importable in this venv")
    pytest.skip("libtpu is not installed (make test-tpu installs it)", allow_module_level=True)

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU to lock: compiles only

import jax  # noqa: E402

from jrnn._src.backends import tpu_vmem  # noqa: E402
from jrnn.bench import aot  # noqa: E402

# The model must be an upper bound of what Mosaic allocates, and at most this factor above it.
MARGIN = 2.5
SIZES = {"seed": (512, 32, 256), "large": (1024, 128, 256)}


def _compile(cell, dtype, size, mode, scale):
    jax.clear_caches()  # the requested limit is read at trace time
    hidden, batch, steps = SIZES[size]
    with tpu_vmem.limit_scale(scale):
        return aot.compile_one("v5e", cell, dtype, hidden, batch, steps, mode, "plain")


@pytest.mark.parametrize("mode", ["forward", "grad"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("size", sorted(SIZES))
def test_compiles_for_v5e_within_the_vmem_model(cell, dtype, size, mode):
    row = _compile(cell, dtype, size, mode, 1.0)
    assert row["status"] == "compiled", row
    assert row["kernels"] >= (2 if mode == "grad" else 1)
    # Compiled memory: code and HBM temp are real numbers from the compiler.
    assert row["code_kib"] > 0 and row["temp_mib"] >= 0


def test_vmem_model_is_within_margin_of_what_mosaic_allocates():
    """Half the model's VMEM is too little for the GRU backward at the seed size; the compiler
    names the size it needed, which must lie in [model / MARGIN, model]."""
    row = _compile("gru", "bfloat16", "seed", "grad", 0.5)
    assert row["status"] == "failed" and "Vmem" in row["message"], row
    need = re.search(r"size ([0-9.]+)M", row["message"])
    assert need, row["message"]
    need_mib = float(need.group(1))
    assert row["model_mib"] / MARGIN <= need_mib <= row["model_mib"], (need_mib, row)
