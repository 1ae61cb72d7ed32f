"""The public surface: every name documented, its examples run, flax not imported by jrnn."""

import doctest
import importlib
import subprocess
import sys

import pytest

PUBLIC_MODULES = ["jrnn", "jrnn.data", "jrnn.train", "jrnn.flax", "jrnn.models", "jrnn.interop"]


def public_names():
    for mod_name in PUBLIC_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:  # pragma: no cover - reported as a failure below
            pytest.fail(f"public module {mod_name} cannot be imported: {e}")
        assert hasattr(mod, "__all__"), f"{mod_name} must define __all__"
        for name in mod.__all__:
            yield mod_name, name, getattr(mod, name)


def test_every_public_name_exists_and_has_a_docstring():
    missing = []
    for mod_name, name, obj in public_names():
        if isinstance(obj, str | int | float | tuple | dict | frozenset):
            continue  # constants are documented in their module
        doc = getattr(obj, "__doc__", None)
        if not doc or len(doc.strip()) < 10:
            missing.append(f"{mod_name}.{name}")
    assert not missing, f"public names without a docstring: {missing}"


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    seen = set()
    for mod_name, name, obj in public_names():
        if not callable(obj) or id(obj) in seen:
            continue
        seen.add(id(obj))
        home = sys.modules.get(getattr(obj, "__module__", ""), None)
        globs = dict(vars(home)) if home is not None else {}
        for test in finder.find(obj, f"{mod_name}.{name}", globs=globs):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 10
    assert result.failed == 0


def test_import_jrnn_does_not_import_flax():
    code = "import sys, jrnn; print('flax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_params_serialize_with_jax_export():
    import jax
    import jax.numpy as jnp

    import jrnn

    net = jrnn.rnn(jrnn.lstm(4), num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(0), 3)
    xs = jnp.ones((2, 5, 3))

    def f(p, x, backend="auto"):
        return net.apply(p, x, backend=backend)[0]

    # On CPU "auto" runs jrnn's C++ kernel; an exported module must not depend on it being
    # registered where it is loaded, so export lowers that call as the "xla" loop.
    exp = jax.export.export(jax.jit(f))(params, xs)
    assert "jrnn_rnn" not in exp.mlir_module()
    restored = jax.export.deserialize(exp.serialize())
    np_out = restored.call(params, xs)
    assert float(jnp.abs(np_out - f(params, xs, "xla")).max()) == 0.0
    assert float(jnp.abs(np_out - f(params, xs)).max()) <= 1e-6
