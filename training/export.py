"""`symgrad export RUN_DIR --format torch`: a trained run's parameters as a PyTorch `state_dict`.

For the built-in architectures, the parameters are renamed and laid out as the matching
`torch.nn` model keeps them (`architecture()` gives that model's PyTorch code):

* regressions: one `nn.Linear` (weight = W^T);
* `mlp_*` (and their `--dropout/--l2` variants): `nn.Sequential` of Linear, activation
  [, Dropout] twice, then Linear; `mlp_regularised` has Linear(bias=False), BatchNorm1d
  (its running averages too), Tanh, Dropout in each hidden layer;
* `cnn_digits`: `nn.Sequential(Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d, Flatten,
  Linear)`: HWIO kernels become OIHW, and the dense layer's rows are reordered from our
  channels-last flattening to PyTorch's channels-first one; the input is NCHW;
* `lstm_digits`, `gru_digits`, `rnn_sines`: `rnn = nn.LSTM/nn.GRU(batch_first=True)` (the
  per-gate parameters stacked in PyTorch's gate order; an LSTM's one bias is `bias_ih`, its
  `bias_hh` is zero) and `fc = nn.Linear` on the last step (every step for rnn_sines).

The file is written with `torch.save` (so PyTorch must be installed: `pip install torch`);
`torch.load(path)` gives the dict for `load_state_dict`. The model takes the run's
standardised inputs, `trained.inputs(rows)`, and returns logits (apply softmax or sigmoid
for probabilities), or standardised values for regression (`trained.targets(...)` maps them
back).
"""
from __future__ import annotations

import io
import pathlib
from collections import OrderedDict

import numpy as np
from symgrad.codegen.atomic import write_bytes
from symgrad.symbolic.errors import SymgradError
from symgrad.training.trained import TrainedModel, load_trained

FORMATS = ("torch",)
LINEAR = ("linear_regression", "logistic_regression", "softmax_regression")
ACTIVATIONS = {"tanh": "nn.Tanh()", "relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()"}
RECURRENT = {"lstm_digits": "LSTM", "gru_digits": "GRU", "rnn_sines": "LSTM"}


def family(trained: TrainedModel) -> str:
    """The built-in a run's architecture comes from (a variant counts as its base)."""
    config = trained.meta["config"]
    name = config.get("variant_of") or trained.meta["model"]
    if name in LINEAR or name in RECURRENT or name in ("cnn_digits", "mlp_regularised") or (
            name.removeprefix("mlp_") in ACTIVATIONS):
        return name
    raise SymgradError(f"export knows the built-in architectures (regressions, MLPs, cnn_digits, "
                       f"lstm_digits, gru_digits, rnn_sines); this run trained {trained.meta['model']}")


def _t(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def state_dict(trained: TrainedModel) -> OrderedDict[str, np.ndarray]:
    """The parameters under the names and in the layouts of the matching torch.nn model."""
    p, name = trained.params, family(trained)
    if name in LINEAR:
        return OrderedDict(weight=_t(p["W"]), bias=p["b"])
    if name == "mlp_regularised":
        out = OrderedDict()
        for k, (layer, bn) in enumerate(((0, 1), (4, 5)), start=1):
            out[f"{layer}.weight"] = _t(p[f"W{k}"])
            out[f"{bn}.weight"], out[f"{bn}.bias"] = p[f"bn{k}_gamma"], p[f"bn{k}_beta"]
            out[f"{bn}.running_mean"] = trained.state[f"bn{k}_mean"]
            out[f"{bn}.running_var"] = trained.state[f"bn{k}_var"]
            out[f"{bn}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        out["8.weight"], out["8.bias"] = _t(p["W3"]), p["b3"]
        return out
    if name.startswith("mlp_"):
        step = 3 if "dropout" in trained.meta["config"]["model_hypers"] else 2
        return OrderedDict((f"{step * (k - 1)}.{what}", _t(p[f"W{k}"]) if what == "weight" else p[f"b{k}"])
                           for k in (1, 2, 3) for what in ("weight", "bias"))
    if name == "cnn_digits":
        h, w, c = 2, 2, p["K2"].shape[3]  # the last pooled map, flattened h, w, c here and c, h, w in torch
        dense = p["W"].reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        return OrderedDict([("0.weight", p["K1"].transpose(3, 2, 0, 1).copy()), ("0.bias", p["c1"]),
                            ("3.weight", p["K2"].transpose(3, 2, 0, 1).copy()), ("3.bias", p["c2"]),
                            ("7.weight", _t(dense)), ("7.bias", p["b"])])
    gates = ("i", "f", "g", "o") if RECURRENT[name] == "LSTM" else ("r", "z", "n")

    def stacked(base: str) -> np.ndarray:  # per-gate (in, hidden) blocks -> (gates * hidden, in)
        return np.concatenate([p[f"{base}_{g}"].T for g in gates], axis=0)

    out = OrderedDict([("rnn.weight_ih_l0", stacked("Wx")), ("rnn.weight_hh_l0", stacked("Wh"))])
    if RECURRENT[name] == "LSTM":
        bias = np.concatenate([p[f"b_{g}"] for g in gates])
        out["rnn.bias_ih_l0"], out["rnn.bias_hh_l0"] = bias, np.zeros_like(bias)
    else:
        out["rnn.bias_ih_l0"] = np.concatenate([p[f"bx_{g}"] for g in gates])
        out["rnn.bias_hh_l0"] = np.concatenate([p[f"bh_{g}"] for g in gates])
    out["fc.weight"], out["fc.bias"] = _t(p["W"]), p["c"]
    return out


def architecture(trained: TrainedModel) -> str:
    """PyTorch code of the model the state_dict loads into."""
    sd, name = state_dict(trained), family(trained)
    if name in LINEAR:
        n_out, n_in = sd["weight"].shape
        return f"nn.Linear({n_in}, {n_out})"
    if name == "mlp_regularised":
        rate = trained.meta["config"]["model_hypers"].get("dropout", 0.2)
        (h1, n_in), (h2, _), (n_out, _) = sd["0.weight"].shape, sd["4.weight"].shape, sd["8.weight"].shape
        return (f"nn.Sequential(nn.Linear({n_in}, {h1}, bias=False), nn.BatchNorm1d({h1}), nn.Tanh(), "
                f"nn.Dropout({rate:g}), nn.Linear({h1}, {h2}, bias=False), nn.BatchNorm1d({h2}), nn.Tanh(), "
                f"nn.Dropout({rate:g}), nn.Linear({h2}, {n_out}))")
    if name.startswith("mlp_"):
        act = ACTIVATIONS[name.removeprefix("mlp_")]
        rate = trained.meta["config"]["model_hypers"].get("dropout")
        drop = f", nn.Dropout({rate:g})" if rate is not None else ""
        shapes = [w.shape for k, w in sd.items() if k.endswith("weight")]
        (h1, n_in), (h2, _), (n_out, _) = shapes
        return (f"nn.Sequential(nn.Linear({n_in}, {h1}), {act}{drop}, nn.Linear({h1}, {h2}), {act}{drop}, "
                f"nn.Linear({h2}, {n_out}))")
    if name == "cnn_digits":
        c1, c2, n_out = sd["0.weight"].shape[0], sd["3.weight"].shape[0], sd["7.weight"].shape[0]
        return (f"nn.Sequential(nn.Conv2d(1, {c1}, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), "
                f"nn.Conv2d({c1}, {c2}, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), "
                f"nn.Linear({sd['7.weight'].shape[1]}, {n_out}))  # input NCHW: x.permute(0, 3, 1, 2)")
    kind = RECURRENT[name]
    n_in, n_h = sd["rnn.weight_ih_l0"].shape[1], sd["rnn.weight_hh_l0"].shape[1]
    n_out = sd["fc.weight"].shape[0]
    last = "every step" if name == "rnn_sines" else "the last step, y = fc(out[:, -1])"
    return (f"rnn = nn.{kind}({n_in}, {n_h}, batch_first=True); fc = nn.Linear({n_h}, {n_out})  "
            f"# fc on {last}")


def export(run_dir: str | pathlib.Path, fmt: str = "torch",
           out: str | pathlib.Path | None = None) -> pathlib.Path:
    """Write the run's state_dict (default: RUN_DIR/model.pt); return the path."""
    if fmt not in FORMATS:
        raise SymgradError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    trained = load_trained(run_dir)
    if not isinstance(trained, TrainedModel):
        raise SymgradError(f"{run_dir} is a GAN run; export knows the classifiers and regressions")
    tensors = state_dict(trained)
    try:
        import torch
    except ImportError:
        raise SymgradError("export --format torch writes with torch.save: pip install torch") from None
    path = pathlib.Path(out) if out is not None else pathlib.Path(run_dir) / "model.pt"
    buffer = io.BytesIO()
    torch.save(OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in tensors.items()),
               buffer)
    try:
        return write_bytes(path, buffer.getvalue())
    except OSError as e:
        raise SymgradError(f"cannot write {path}: {e.strerror}") from None


def export_command(args) -> int:
    path = export(args.run_dir, args.format, args.out)
    print(f"wrote {path}: load it with model.load_state_dict(torch.load({str(path)!r})) into")
    print(f"  {architecture(load_trained(args.run_dir))}")
    return 0
