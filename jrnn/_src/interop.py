"""PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` state_dicts <-> jrnn params, without torch.

A PyTorch recurrent module stores, per layer ``k`` and direction (``""`` or ``"_reverse"``)::

    weight_ih_l{k}   [G*H, I]      jrnn w_ih = weight_ih.T   [I, G*H]
    weight_hh_l{k}   [G*H, P]      jrnn w_hh = weight_hh.T   [P, G*H]
    bias_ih_l{k}     [G*H]         LSTM, Elman: b = bias_ih + bias_hh; GRU: b_ih
    bias_hh_l{k}     [G*H]                                             GRU: b_hh
    weight_hr_l{k}   [P, H]        LSTM with proj_size: w_hr = weight_hr.T [H, P]

with G = 4 (LSTM, gates i, f, g, o), 3 (GRU, r, z, n) or 1 (RNN), P = proj_size or H, and the
input size of layer k > 0 equal to P times the number of directions. The gate order is the same
in jrnn, so the conversion is a transpose per matrix. ``nn.LSTMCell`` / ``nn.GRUCell`` /
``nn.RNNCell`` use the same names without the ``_l{k}`` suffix.

LSTM and Elman cells have one bias in jrnn by default: reading sums the two PyTorch biases;
writing puts the whole bias in ``bias_ih`` and zeros in ``bias_hh`` (the module computes the same
function, so torch -> jrnn -> torch preserves ``bias_ih + bias_hh``, not each term). Built with
``two_biases=True`` (``jrnn.lstm(h, two_biases=True)``) they keep both: ``b = bias_ih`` and
``b_hh = bias_hh``, each term round-trips exactly, and training with Adam moves them as PyTorch
does. GRU always keeps both biases (``b_hn`` sits inside the reset gate). ``nn.RNN``'s
``nonlinearity`` is not in its state_dict: choose ``jrnn.elman(h, activation="tanh" | "relu")``
to match it.

Get a state_dict as numpy arrays with
``{k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrnn._src import tree
from jrnn._src.cell import Cell
from jrnn._src.cells.elman import ElmanParams
from jrnn._src.cells.gru import GRUParams
from jrnn._src.cells.lstm import LSTMParams
from jrnn._src.layers import Layer, RNNParams

_GATES = {"lstm": 4, "gru": 3, "elman": 1}
_TORCH = {"lstm": "nn.LSTM", "gru": "nn.GRU", "elman": "nn.RNN"}
_PARAM_TYPES = {"lstm": LSTMParams, "gru": GRUParams, "elman": ElmanParams}
_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)(_l\d+)?(_reverse)?$")


def _check_cell(cell: Any) -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(f"model must be a jrnn.Cell or a jrnn.rnn Layer, got {type(cell).__name__}")
    if cell.name not in _GATES:
        raise ValueError(
            f"cell {cell.name!r} has no PyTorch counterpart: interop supports jrnn.lstm "
            "(nn.LSTM), jrnn.gru (nn.GRU) and jrnn.elman (nn.RNN)"
        )
    if cell.name == "lstm" and (cell.option("peepholes") or cell.option("layer_norm")):
        raise ValueError(
            "nn.LSTM has no peepholes nor layer norm: use jrnn.lstm(h, peepholes=False, "
            "layer_norm=False) to convert from or to PyTorch"
        )
    if cell.name == "gru" and not cell.option("reset_after", True):
        raise ValueError(
            "nn.GRU applies the reset gate after the recurrent matmul: use "
            "jrnn.gru(h, reset_after=True) to convert from or to PyTorch"
        )
    return cell


def _structure(model: Any) -> tuple[Cell, int | None, int]:
    """(cell, num_layers or None for a single cell, number of directions)."""
    if isinstance(model, Layer):
        cell = _check_cell(model.cell)
        dirs = 2 if model.bidirectional else 1
        if model.output_size != cell.output_size * dirs:
            raise ValueError(
                "PyTorch concatenates the two directions of a bidirectional layer: build the "
                "Layer with jrnn.rnn(..., merge='concat') to convert from or to PyTorch"
            )
        return cell, model.num_layers, dirs
    return _check_cell(model), None, 1


def _suffixes(num_layers: int | None, dirs: int) -> list[list[str]]:
    if num_layers is None:
        return [[""]]
    return [[f"_l{k}" + ("_reverse" if d else "") for d in range(dirs)] for k in range(num_layers)]


def _describe(cell: Cell) -> str:
    extra = f", proj_size={cell.output_size}" if cell.output_size != cell.hidden_size else ""
    extra += ", two_biases=True" if cell.option("two_biases") else ""
    return f"jrnn.{cell.name}({cell.hidden_size}{extra}) ({_TORCH[cell.name]})"


class _Reader:
    """Fetches, checks and records the state_dict entries used."""

    def __init__(self, state_dict: Mapping[str, Any], prefix: str, cell: Cell):
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}"
            )
        self.sd, self.prefix, self.cell, self.used = state_dict, prefix, cell, set()

    def get(self, name: str, shape: tuple, optional: bool = False) -> np.ndarray | None:
        key = self.prefix + name
        if key not in self.sd:
            if optional:
                return None
            near = sorted(k for k in self.sd if k.startswith(self.prefix))[:8]
            raise ValueError(
                f"state_dict is missing {key!r}, expected for {_describe(self.cell)}; keys with "
                f"prefix {self.prefix!r}: {near}"
            )
        self.used.add(key)
        value = np.asarray(self.sd[key])
        ok = value.ndim == len(shape) and all(
            e is None or e == g for e, g in zip(shape, value.shape, strict=False)
        )
        if not ok:
            want = "(" + ", ".join("I" if e is None else str(e) for e in shape) + ")"
            raise ValueError(
                f"state_dict[{key!r}] has shape {value.shape}, expected {want} for "
                f"{_describe(self.cell)} (rows = {_GATES[self.cell.name]} gates x hidden_size)"
            )
        return value

    def check_all_used(self) -> None:
        extra = sorted(
            k
            for k in self.sd
            if k.startswith(self.prefix)
            and _KEY.match(k[len(self.prefix) :])
            and k not in self.used
        )
        if extra:
            raise ValueError(
                f"state_dict has recurrent weights that the model does not use: {extra}; check "
                "num_layers, bidirectional and the cell type"
            )


def _read_one(r: _Reader, suffix: str, in_size: int | None, dtype: Any) -> Any:
    cell = r.cell
    G, H, P = _GATES[cell.name], cell.hidden_size, cell.output_size
    w_ih = r.get(f"weight_ih{suffix}", (G * H, in_size))
    w_hh = r.get(f"weight_hh{suffix}", (G * H, P))
    b_ih = r.get(f"bias_ih{suffix}", (G * H,), optional=True)
    b_hh = r.get(f"bias_hh{suffix}", (G * H,), optional=b_ih is None)
    if b_ih is None:
        b_ih = b_hh = np.zeros((G * H,), w_ih.dtype)
    as_param = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    if cell.name == "gru":
        return GRUParams(as_param(w_ih.T), as_param(w_hh.T), as_param(b_ih), as_param(b_hh))
    if cell.option("two_biases"):
        b, b_hh = as_param(b_ih), as_param(b_hh)
    else:
        b, b_hh = as_param(b_ih + b_hh), None
    if cell.name == "elman":
        return ElmanParams(as_param(w_ih.T), as_param(w_hh.T), b, b_hh=b_hh)
    w_hr = None
    if P != H:
        w_hr = as_param(r.get(f"weight_hr{suffix}", (P, H)).T)
    return LSTMParams(as_param(w_ih.T), as_param(w_hh.T), b, w_hr=w_hr, b_hh=b_hh)


def from_torch(state_dict: Mapping[str, Any], model: Cell | Layer, *, prefix: str = "") -> Any:
    """Converts a PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state_dict to jrnn params.

    Args:
      state_dict: names to numpy arrays (or anything ``np.asarray`` takes): the
        ``state_dict()`` of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (keys ``weight_ih_l0``,
        ``weight_hh_l1_reverse``, ...) for a Layer; for a Cell, of ``nn.LSTMCell`` /
        ``nn.GRUCell`` / ``nn.RNNCell`` (``weight_ih``, ...) or a one-layer module
        (``weight_ih_l0``, ...). Modules built with ``bias=False`` (no bias keys) give zero
        biases.
      model: a cell (``jrnn.lstm(h, proj_size=...)``, ``jrnn.gru(h)``, ``jrnn.elman(h,
        activation=...)``) or a ``jrnn.rnn(cell, num_layers, bidirectional)`` Layer of one.
        An LSTM or Elman cell built with ``two_biases=True`` keeps ``bias_ih`` as ``b`` and
        ``bias_hh`` as ``b_hh``; otherwise ``b = bias_ih + bias_hh``.
      prefix: prepended to every key (e.g. ``"encoder.rnn."`` for a submodule's entries).

    Returns:
      What ``model.init`` returns: the cell's params (``w_ih [i, G*h]``, ...), or
      ``RNNParams(first, rest)`` with ``first`` leaves ``[(2,) ...]`` and ``rest`` leaves
      ``[num_layers - 1, (2,) ...]``, in the cell's ``param_dtype``.

    Raises:
      ValueError: on a missing key, a shape that does not match the model, recurrent weights
        the model does not use (e.g. a wrong ``num_layers``), or a cell with no PyTorch
        counterpart.

    Example:
      >>> import numpy as np, jrnn
      >>> sd = {"weight_ih_l0": np.ones((32, 3)), "weight_hh_l0": np.ones((32, 8)),
      ...       "bias_ih_l0": np.ones(32), "bias_hh_l0": np.ones(32)}
      >>> params = jrnn.interop.from_torch(sd, jrnn.rnn(jrnn.lstm(8)))
      >>> params.first.w_ih.shape, float(params.first.b[0])
      ((3, 32), 2.0)
      >>> two = jrnn.interop.from_torch(sd, jrnn.rnn(jrnn.lstm(8, two_biases=True)))
      >>> float(two.first.b[0]), float(two.first.b_hh[0])
      (1.0, 1.0)
    """
    cell, num_layers, dirs = _structure(model)
    dtype = jnp.dtype(cell.option("param_dtype", "float32"))
    r = _Reader(state_dict, prefix, cell)
    if num_layers is None:
        style = "_l0" if prefix + "weight_ih" not in state_dict else ""
        params = _read_one(r, style, None, dtype)
        r.check_all_used()
        return params
    layers = []
    for k, suffixes in enumerate(_suffixes(num_layers, dirs)):
        in_size = None if k == 0 else dirs * cell.output_size
        per_dir = [_read_one(r, s, in_size, dtype) for s in suffixes]
        layers.append(per_dir[0] if dirs == 1 else tree.stack(per_dir))
    r.check_all_used()
    rest = tree.stack(layers[1:]) if num_layers > 1 else None
    return RNNParams(layers[0], rest)


def _write_one(out: dict, cell: Cell, p: Any, suffix: str, bias: bool) -> None:
    if not isinstance(p, _PARAM_TYPES[cell.name]):
        raise TypeError(
            f"params must be {_PARAM_TYPES[cell.name].__name__} for {_describe(cell)}, got "
            f"{type(p).__name__}"
        )
    G, H, P = _GATES[cell.name], cell.hidden_size, cell.output_size
    if tuple(p.w_hh.shape) != (P, G * H):
        raise ValueError(
            f"params.w_hh has shape {tuple(p.w_hh.shape)}, expected {(P, G * H)} for "
            f"{_describe(cell)}"
        )
    arr = lambda a: np.array(a, copy=True, order="C")  # noqa: E731  (writable, contiguous)
    out[f"weight_ih{suffix}"] = arr(np.asarray(p.w_ih).T)
    out[f"weight_hh{suffix}"] = arr(np.asarray(p.w_hh).T)
    if cell.name == "gru":
        b_ih, b_hh = np.asarray(p.b_ih), np.asarray(p.b_hh)
    elif cell.option("two_biases"):
        if p.b_hh is None:
            raise ValueError(
                f"params.b_hh is None, but {_describe(cell)} has two_biases=True: build the "
                "params with its init"
            )
        b_ih, b_hh = np.asarray(p.b), np.asarray(p.b_hh)
    else:
        if p.b_hh is not None:
            raise ValueError(
                f"params.b_hh is set, but {_describe(cell)} has one bias: convert with the "
                "cell built with two_biases=True"
            )
        b_ih = np.asarray(p.b)
        b_hh = np.zeros_like(b_ih)
    if bias:
        out[f"bias_ih{suffix}"], out[f"bias_hh{suffix}"] = arr(b_ih), arr(b_hh)
    elif np.any(b_ih) or np.any(b_hh):
        raise ValueError(
            f"bias=False, but the params of {_describe(cell)} have nonzero biases that a "
            "PyTorch module without biases would drop"
        )
    if cell.name == "lstm" and P != H:
        out[f"weight_hr{suffix}"] = arr(np.asarray(p.w_hr).T)


def to_torch(
    params: Any, model: Cell | Layer, *, prefix: str = "", bias: bool = True
) -> dict[str, np.ndarray]:
    """Converts jrnn params to a PyTorch state_dict of numpy arrays (inverse of from_torch).

    Args:
      params: the params of ``model`` (``model.init``'s structure).
      model: a cell (keys of ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``: ``weight_ih``,
        ...; a cell with ``proj_size`` also gets ``weight_hr``, which only ``nn.LSTM`` has) or a
        ``jrnn.rnn`` Layer (keys of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: ``weight_ih_l0``,
        ``weight_hh_l1_reverse``, ...).
      prefix: prepended to every key.
      bias: False writes no bias keys (for modules built with ``bias=False``); the params'
        biases must then be zero.

    Returns:
      A dict of numpy arrays (``torch.from_numpy`` each, then ``load_state_dict``). LSTM and
      Elman biases go to ``bias_ih`` entirely, with ``bias_hh`` zero; with ``two_biases=True``
      ``b`` goes to ``bias_ih`` and ``b_hh`` to ``bias_hh``.

    Example:
      >>> import jax, jrnn
      >>> net = jrnn.rnn(jrnn.gru(8), num_layers=2, bidirectional=True)
      >>> sd = jrnn.interop.to_torch(net.init(jax.random.key(0), 3), net)
      >>> sd["weight_ih_l1_reverse"].shape, sd["bias_hh_l0"].shape
      ((24, 16), (24,))
    """
    cell, num_layers, dirs = _structure(model)
    out: dict[str, np.ndarray] = {}
    if num_layers is None:
        _write_one(out, cell, params, "", bias)
    else:
        if not isinstance(params, RNNParams):
            raise TypeError(f"params must be RNNParams for a Layer, got {type(params).__name__}")
        if (params.rest is None) != (num_layers == 1):
            raise ValueError(
                f"params.rest must be None exactly when num_layers == 1 (num_layers={num_layers})"
            )
        for k, suffixes in enumerate(_suffixes(num_layers, dirs)):
            layer = params.first if k == 0 else tree.index(params.rest, k - 1)
            for d, s in enumerate(suffixes):
                _write_one(out, cell, layer if dirs == 1 else tree.index(layer, d), s, bias)
    return {prefix + k: v for k, v in out.items()}


def _layer_structure(layer: Any) -> tuple[int, int]:
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be a jrnn.rnn Layer, got {type(layer).__name__}")
    return layer.num_layers, 2 if layer.bidirectional else 1


def carries_from_torch(hx: Any, layer: Layer) -> Any:
    """PyTorch ``h_0`` / ``h_n`` (``(h, c)`` for an LSTM) to ``layer.apply``'s carries.

    Args:
      hx: ``[num_layers * dirs, b, p]`` arrays (a tuple ``(h, c)`` for an LSTM, ``c``
        ``[num_layers * dirs, b, h]``), PyTorch's layer-major, forward-then-reverse order.
      layer: the ``jrnn.rnn`` Layer.

    Returns:
      Carries with leaves ``[num_layers, (2,) b, ...]`` in float32.

    Example:
      >>> import numpy as np, jrnn
      >>> net = jrnn.rnn(jrnn.gru(8), num_layers=2, bidirectional=True)
      >>> jrnn.interop.carries_from_torch(np.zeros((4, 5, 8)), net).shape
      (2, 2, 5, 8)
    """
    num_layers, dirs = _layer_structure(layer)
    lead = (num_layers, dirs) if dirs == 2 else (num_layers,)
    hx = tuple(hx) if isinstance(hx, list | tuple) else hx

    def convert(a):
        a = np.asarray(a)
        if a.ndim < 1 or a.shape[0] != num_layers * dirs:
            raise ValueError(
                f"hx leaves must have a leading axis of num_layers * directions = "
                f"{num_layers * dirs}, got shape {a.shape}"
            )
        return jnp.asarray(a.reshape(lead + a.shape[1:]), jnp.float32)

    return jax.tree.map(convert, hx)


def carries_to_torch(carries: Any, layer: Layer) -> Any:
    """``layer.apply``'s carries to PyTorch's ``h_n`` layout (numpy; ``(h, c)`` for an LSTM).

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> net = jrnn.rnn(jrnn.lstm(8), num_layers=3, bidirectional=True)
      >>> h, c = jrnn.interop.carries_to_torch(net.initial_carries(5), net)
      >>> h.shape
      (6, 5, 8)
    """
    num_layers, dirs = _layer_structure(layer)
    skip = 2 if dirs == 2 else 1
    return jax.tree.map(
        lambda a: np.asarray(a).reshape((num_layers * dirs,) + tuple(a.shape[skip:])), carries
    )
