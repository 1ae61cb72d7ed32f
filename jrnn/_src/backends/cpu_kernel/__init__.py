"""Builds and loads the C++ kernel of the ``"cpu"`` backend (``rnn_kernel.cc`` beside this file).

On first use the source that ships inside the package is compiled with the system C++ compiler
(``$JRNN_CXX``, else ``$CXX``, else ``g++``/``c++``) with ``-O3 -march=native`` (plus
``$JRNN_CXXFLAGS``, e.g. ``-mno-avx512f`` to build the AVX2 path) into a cache
directory (``$JRNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/jrnn``, else ``~/.cache/jrnn``). The file
name is a hash of the source, the compiler, its flags, the jax version and this CPU's feature
flags, so a changed source, compiler or machine builds again and two machines sharing a home
directory do not load each other's binaries. A file lock serialises concurrent builds; the
library is written under a temporary name and renamed into place, so a reader never sees a half
written file. The handlers are registered with ``jax.ffi.register_ffi_target``.

If anything fails (no compiler, a compile error, an unwritable cache), :func:`load` returns
False with ONE ``RuntimeWarning`` naming the cause (the first time an explicit
``backend="cpu"`` asks; ``"auto"`` asks quietly), and the backend runs ``"xla"`` instead.
``JRNN_CPU_KERNEL=0`` turns the kernel off (then ``"auto"`` never picks it).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax

SOURCE = Path(__file__).parent / "rnn_kernel.cc"
FLAGS = ("-std=c++20", "-O3", "-march=native", "-fPIC", "-shared", "-pthread")
TARGETS = {"jrnn_rnn_fwd": "JrnnRnnFwd", "jrnn_rnn_bwd": "JrnnRnnBwd"}

_lock = threading.Lock()
_state: dict = {}  # "ok": bool, "error": str, "path": str, "seconds": float


def compiler() -> str | None:
    """The C++ compiler to use: ``$JRNN_CXX``, ``$CXX``, ``g++`` or ``c++`` (None if none)."""
    for name in (os.environ.get("JRNN_CXX"), os.environ.get("CXX"), "g++", "c++"):
        if name:
            path = shutil.which(name)
            if path:
                return path
            if os.environ.get("JRNN_CXX") == name or os.environ.get("CXX") == name:
                return name  # let the build fail with the user's choice, not silently switch
    return None


def cache_dir() -> Path:
    """Where built kernels are kept."""
    if os.environ.get("JRNN_CACHE_DIR"):
        return Path(os.environ["JRNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jrnn"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return ""


def flags() -> tuple[str, ...]:
    """The compiler flags: :data:`FLAGS` then ``$JRNN_CXXFLAGS``."""
    return FLAGS + tuple(shlex.split(os.environ.get("JRNN_CXXFLAGS", "")))


def library_path(cxx: str) -> Path:
    """The cache file for this source, compiler, flags, jax version and CPU."""
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cxx.encode(), " ".join(flags()).encode()):
        h.update(part)
        h.update(b"\0")
    h.update(jax.__version__.encode())
    h.update(_cpu_flags().encode())
    try:
        h.update(str(os.stat(cxx).st_mtime_ns).encode())
    except OSError:
        pass
    return cache_dir() / f"jrnn_rnn_kernel-{h.hexdigest()[:20]}.so"


def build(cxx: str, out: Path) -> None:
    """Compiles the kernel into ``out`` (under a lock; no-op when it already exists)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=out.parent)
        os.close(fd)
        try:
            cmd = [cxx, *flags(), "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip()[-1500:]
                raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {tail}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _warn() -> None:
    if _state.get("warned"):
        return
    _state["warned"] = True
    warnings.warn(
        "jrnn backend='cpu': the C++ kernel is unavailable, running backend='xla' "
        f"instead (same results, slower). Cause: {_state['error']}",
        RuntimeWarning,
        stacklevel=4,
    )


def load(warn: bool = True) -> bool:
    """Builds (once per machine) and registers the kernel; False if unavailable.

    Args:
      warn: warn (once per process) when it is unavailable; ``"auto"`` asks with False.
    """
    with _lock:
        if "ok" not in _state:
            _load()
        if not _state["ok"] and warn:
            _warn()
        return _state["ok"]


def _load() -> None:
    import time

    t0 = time.perf_counter()
    if os.environ.get("JRNN_CPU_KERNEL", "1").strip().lower() in ("0", "false", "off", "no"):
        _state.update(ok=False, error="turned off by JRNN_CPU_KERNEL=0", seconds=0.0)
        return
    try:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler found (set JRNN_CXX or CXX, or install g++)")
        path = library_path(cxx)
        build(cxx, path)
        lib = ctypes.CDLL(str(path))
        for target, symbol in TARGETS.items():
            fn = getattr(lib, symbol)
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(fn), platform="cpu")
        _state.update(ok=True, path=str(path), lib=lib)
    except Exception as e:  # noqa: BLE001 - any failure means: fall back to "xla"
        _state.update(ok=False, error=f"{type(e).__name__}: {e}")
    _state["seconds"] = time.perf_counter() - t0


def status() -> dict:
    """What :func:`load` found: ``ok``, the library ``path`` or the ``error``, and ``seconds``."""
    return {k: v for k, v in _state.items() if k not in ("lib", "warned")}
