"""Assemble a generated module: lower the derivation's programs, render the jinja2 template.

`generate(derivation, backend)` is a pure function of its arguments (and the committed
calibration), so generating twice gives the same bytes; `write_module` puts it in place
atomically.
"""
from __future__ import annotations

import pathlib
import textwrap

import jinja2
import sympy

from codegen import calibration as calib
from codegen.atomic import write_text
from codegen.kernels import Kernel, _literal
from codegen.lowering import LOWERINGS
from codegen.program import Program, lower
from symbolic import __version__
from symbolic.derivation import Derivation
from symbolic.errors import SymgradError
from symbolic.graph import Node

BACKENDS = ("auto", "numpy", "numexpr")

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(pathlib.Path(__file__).with_name("templates")),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined, autoescape=False,
)


def _tuple_text(shape) -> str:
    parts = [str(int(d)) if d.is_Integer else repr(str(d)) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _dict_text(items: dict) -> str:
    if not items:
        return "{}"
    body = "".join(f"    {k!r}: {v},\n" for k, v in items.items())
    return "{\n" + body + "}"


def _safe_doc(text: str) -> str:
    """Text placed inside a docstring cannot end it or start an escape."""
    return text.replace("\\", "\\\\").replace('"""', r"\"\"\"")


def _numexpr_call(k: Kernel) -> list[str]:
    if k.numexpr_source is None:
        return []
    typed = {p: f"k({p})" for p in k.scalars} | {c: f"k({v})" for c, v in k.numexpr_constants.items()}
    locals_ = ", ".join(f'"{p}": {typed.get(p, p)}' for p in k.operands if p in k.numexpr_source) + (
        ", " if k.numexpr_constants else "") + ", ".join(
        f'"{c}": k({v})' for c, v in k.numexpr_constants.items())
    lines = ["k = out.dtype.type"] if typed else []
    lines.append(f'return ne.evaluate("{k.numexpr_source}", local_dict={{{locals_}}}, out=out)')
    return lines


def _body(program: Program, derivation: Derivation, model_leaves: list[Node], arg: str,
          first_param: str) -> list[str]:
    used = set(program.leaves)
    lines = []
    for leaf in model_leaves:
        if leaf in used and leaf.op == "param":
            lines.append(f'{leaf.name} = params["{leaf.name}"]')
    lines.append(f'dt = params["{first_param}"].dtype')
    for leaf in model_leaves:
        if leaf in used and leaf.op in ("input", "target"):
            lines.append(f'{leaf.name} = np.asarray({arg}["{leaf.name}"], dtype=dt)')
        elif leaf in used and leaf.op == "hyper":
            lines.append(f'{leaf.name} = _hyper(hypers, "{leaf.name}")')
    for dim in program.dims:
        source = next(((leaf.name, axis) for leaf in model_leaves if leaf in used
                       for axis, d in enumerate(leaf.shape) if isinstance(d, sympy.Symbol) and d.name == dim),
                      None)
        if source is None:
            raise SymgradError(f"model {derivation.model.name!r}: dim {dim} cannot be read off "
                               "the arrays this function receives")
        lines.append(f"{dim} = {source[0]}.shape[{source[1]}]")
    texts = {e.number: derivation.text(e) for e in derivation.equations}
    shown: set[int] = set()
    for ins in program.instrs:
        for number in ins.eqs:  # cite each equation once, before the first line computing it
            if number not in shown:
                shown.add(number)
                lines += textwrap.wrap(f"({number}) {texts[number]}", 96, initial_indent="# ",
                                       subsequent_indent="#     ", break_on_hyphens=False)
        lines += LOWERINGS[ins.op].emit(ins)
    return lines


def generate(derivation: Derivation, backend: str = "auto", calibration: dict | None = None) -> str:
    """The source of the generated module for `derivation`."""
    if backend not in BACKENDS:
        raise SymgradError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    calibration = calibration or calib.load()
    model = derivation.model
    names = {n: t for n, (t, _) in derivation.names.items()}
    kernels: dict[str, Kernel] = {}
    loss = derivation.loss
    programs = {
        "forward": lower(dict(model.outputs), names, derivation.owners, kernels),
        "loss": lower({"loss": loss}, names, derivation.owners, kernels),
        "loss_and_grad": lower({"loss": loss, **derivation.gradients}, names, derivation.owners, kernels),
    }
    for i, k in enumerate(kernels.values(), 1):
        k.name = f"_ew{i}"
        k.math = _safe_doc(sympy.sstr(k.expr, full_prec=False))
        k.numexpr_call = _numexpr_call(k) if backend != "numpy" else []
    leaves = list(model.leaves.values())
    first_param = next(iter(model.params))
    hyper_arg = "hypers: Mapping[str, float] | None = None"
    grad_numbers = sorted({derivation.owners[g] for g in derivation.gradients.values() if g in derivation.owners})
    functions = []
    for name, arg, returns, doc in (
        ("forward", "inputs", "dict[str, np.ndarray]", "The model's outputs for a batch of inputs."),
        ("loss", "batch", "float", f"The loss {derivation.loss_name} for a batch."),
        ("loss_and_grad", "batch", "tuple[float, dict[str, np.ndarray]]",
         f"The loss {derivation.loss_name} and its gradient w.r.t. every parameter"
         + (f" (eqs. {grad_numbers[0]}-{grad_numbers[-1]})." if grad_numbers else ".")),
    ):
        program = programs[name]
        body = _body(program, derivation, leaves, arg, first_param)
        if name == "forward":
            body.append("return {" + ", ".join(f'"{k}": {v}' for k, v in program.results.items()) + "}")
        elif name == "loss":
            body.append(f"return float({program.results['loss']})")
        else:
            grads = ", ".join(f'"{p}": {program.results[p]}' for p in derivation.gradients)
            body.append(f"return float({program.results['loss']}), {{{grads}}}")
        functions.append({
            "name": name, "returns": returns, "doc": doc, "body": body,
            "signature": f"params: Mapping[str, np.ndarray], {arg}: Mapping[str, np.ndarray], {hyper_arg}",
        })
    helpers = sorted({LOWERINGS[i.op].helper.strip() for p in programs.values() for i in p.instrs
                      if LOWERINGS[i.op].helper})
    thresholds = calib.thresholds(calibration)
    context = {
        "model": model,
        "summary": _safe_doc(model.description or f"a symgrad model with parameters {', '.join(model.params)}"),
        "version": __version__,
        "spec_hash": model.spec_hash(),
        "backend": backend,
        "allowed_backends": ("numpy",) if backend == "numpy" else BACKENDS,
        "equations": [_safe_doc(f"({e.number}) {derivation.text(e)}") for e in derivation.forward],
        "uses_numexpr": backend != "numpy" and any(k.numexpr_source for k in kernels.values()),
        "dims": repr(tuple(model.dim_symbols)),
        "default_dims": _dict_text(model.dim_defaults),
        "params": _dict_text({n: _tuple_text(v.shape) for n, v in model.params.items()}),
        "inputs": _dict_text({n: _tuple_text(v.shape) for n, v in model.data.items()}),
        "targets": repr(tuple(n for n, v in model.data.items() if v.op == "target")),
        "outputs": _dict_text({n: _tuple_text(v.shape) for n, v in model.outputs.items()}),
        "hypers": _dict_text({n: repr(v) for n, v in model.hyper_defaults.items()}),
        "task": repr(model.task),
        "prediction": repr(model.prediction),
        "inits": _dict_text({n: repr((i.scheme, float(i.std))) for n, i in model.inits.items()}),
        "thresholds": _dict_text({k: repr(v) for k, v in thresholds.items()}),
        "calibrated_on": calibration.get("measured_on", "unknown"),
        "helpers": helpers,
        "kernels": list(kernels.values()),
        "functions": functions,
    }
    return _ENV.get_template("module.py.j2").render(**context)


def write_module(source: str, folder: str | pathlib.Path, name: str) -> pathlib.Path:
    """Write `folder/name.py` atomically (temp file + rename)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise SymgradError(f"output folder {folder} does not exist or is not a folder")
    return write_text(folder / f"{name}.py", source)


__all__ = ["BACKENDS", "generate", "write_module", "_literal"]
