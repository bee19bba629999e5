"""The symbol and dim tables: every name in the derivation, its role, shape and meaning.

Meanings are read off the model's structure (a parameter that is the right operand of a matrix
product is a weight matrix; one broadcast into a sum is a bias; an equation that applies one
function elementwise is an activation), so no model needs a hand-written glossary.
"""
from __future__ import annotations

import sympy

from symgrad.documents import mathtext
from symgrad.documents.content import DimRow, SymbolRow, prose
from symgrad.symbolic.derivation import Derivation
from symgrad.symbolic.functions import ElementwiseFunction
from symgrad.symbolic.graph import ARG, Node, topological
from symgrad.symbolic.model import Model

ROLES = {"input": "input", "target": "target", "param": "parameter", "hyper": "hyper-parameter",
         "state": "state"}
EQUATION_ROLES = {"let": "intermediate", "output": "output", "loss": "loss", "update": "state update"}
INITS = {"glorot_uniform": "Glorot-uniform", "he_normal": "He-normal", "zeros": "zeros",
         "ones": "ones"}
TASKS = {"multiclass": "one-hot class labels, one row per example",
         "binary": "labels 0 or 1, one row per example",
         "regression": "real-valued targets, one row per example"}


def batch_dim(model: Model) -> sympy.Symbol | None:
    """The leading axis of every input and target, when no parameter has it; else None."""
    data = [leaf for leaf in model.data.values()]
    if not data or any(not leaf.shape for leaf in data):
        return None
    first = data[0].shape[0]
    if not isinstance(first, sympy.Symbol) or any(leaf.shape[0] != first for leaf in data):
        return None
    if any(first in p.shape for p in model.params.values()):
        return None
    return first


def _consumers(d: Derivation) -> dict[Node, list[Node]]:
    out: dict[Node, list[Node]] = {}
    for node in topological([e.node for e in d.forward]):
        for a in node.args:
            out.setdefault(a, []).append(node)
    return out


def _all_users(d: Derivation, node: Node) -> list[Node]:
    """Consumers anywhere in the training graph (inside a scan's step too)."""
    roots = list(d.train.values())
    for n in topological(roots):
        if n.op == "scan":
            roots += list(n.attr("cell").outs)
    return [n for n in topological(roots) if node in n.args]


def _latex(d: Derivation, node: Node) -> str:
    return d.printer.latex(node)


def _param_meaning(d: Derivation, leaf: Node, users: list[Node]) -> str:
    init = d.model.inits.get(leaf.name)
    how = ""
    if init is not None:
        scheme = INITS.get(init.scheme)
        if init.scheme == "constant":
            scheme = f"the constant {init.scale:g}"
        elif init.scheme == "normal":
            scheme = f"normal noise of standard deviation {init.scale:g}"
        how = f"; starts from {scheme}"
    for user in users:
        owner = d.owners.get(user)
        cite = f" in (#{owner})" if owner is not None else ""
        if user.op == "concat":  # one gate's block of a product computed for all gates at once
            gate = leaf.name.rpartition("_")[2]
            product = any(u.op == "matmul" and u.args[-1] is user for u in _all_users(d, user))
            rows = " \\times ".join(sympy.latex(s) for s in leaf.shape)
            what = "weight matrix" if product else "bias"
            return (f"{what} of gate ${gate}$ (${rows}$), one block of the concatenation "
                    f"${_latex(d, user)}$ that computes every gate in one product{how}")
        kernel = user.op == "reshape" and leaf.ndim == 4
        if kernel and any(u.op == "matmul" and u.args[-1] is user for u in _all_users(d, user)):
            kh, kw, c, o = (sympy.latex(s) for s in leaf.shape)
            return (f"convolution kernel{cite}: ${kh} \\times {kw}$ windows over ${c}$ input channels "
                    f"to ${o}$ output channels{how}")
        if user.op == "matmul" and user.args[-1] is leaf and leaf.ndim == 2:
            rows, cols = (sympy.latex(s) for s in leaf.shape)
            return f"weight matrix{cite}: maps ${rows}$ features to ${cols}${how}"
        if user.op == "ew" and leaf.ndim and len(user.shape) > leaf.ndim:
            arg = ARG[user.args.index(leaf)]
            terms = sympy.Add.make_args(user.attr("expr"))
            if arg in terms:
                return f"bias{cite}, added to every row{how}"
            if any(arg in sympy.Mul.make_args(t) for t in terms):
                return f"scale{cite}, multiplies every row elementwise{how}"
            return f"applied to every row{cite}{how}"
    return f"a parameter the equations read directly{how}"


def _equation_meaning(d: Derivation, node: Node) -> str:
    if node.op == "ew":
        expr = node.attr("expr")
        if isinstance(expr, sympy.Function) and expr.args[0] == ARG[0] and len(node.args) == 1:
            name = expr.func.__name__
            if isinstance(expr, ElementwiseFunction):
                return f"the function {name} applied elementwise to ${_latex(d, node.args[0])}$"
            return f"{name} applied elementwise to ${_latex(d, node.args[0])}$"
        if isinstance(expr, sympy.Add) and any(a.op == "matmul" for a in node.args):
            return "an affine map: a matrix product plus a bias"
    if node.op == "softmax":
        axis = sympy.latex(node.shape[node.attr("axis")])
        return f"probabilities: a softmax along the axis of length ${axis}$"
    if node.op == "matmul":
        return "a matrix product"
    return "defined by its equation"


def symbol_rows(d: Derivation, batch: sympy.Symbol | None, prefix: str = "") -> list[SymbolRow]:
    """Leaves first (in declaration order), then every forward equation's left-hand side."""
    model = d.model
    users = _consumers(d)
    rows = []
    for name, leaf in model.leaves.items():
        role = ROLES.get(leaf.op, leaf.op)
        if leaf.op == "param":
            meaning = _param_meaning(d, leaf, users.get(leaf, []))
        elif leaf.is_integer:
            meaning = "integer class labels 0..k-1, one per example (not one-hot)"
        elif leaf.op == "target":
            meaning = TASKS.get(model.task, "what the model's output is compared with")
            if name in model.target_rows:
                meaning += f" (declared {model.target_rows[name]}: every row sums to 1)"
        elif leaf.op == "input":
            rowwise = batch is not None and leaf.shape and leaf.shape[0] == batch
            meaning = (f"a batch of ${sympy.latex(batch)}$ examples, one per row" if rowwise
                       else "given with each call")
            if leaf.ndim == 3 and rowwise:
                meaning += f", each a sequence of ${sympy.latex(leaf.shape[1])}$ steps"
            elif leaf.ndim == 4 and rowwise:
                meaning += ", each an image (height, width, channels)"
            readers = [e for e in d.forward if leaf in topological([e.node]) and e.kind not in ("loss",)]
            if readers:
                meaning += f"; first read by ${readers[0].lhs_latex}$ (#{readers[0].number})"
        elif leaf.op == "hyper":
            meaning = f"scalar set at run time (default {model.hyper_defaults[name]:g})"
        else:
            meaning = "carried between calls and changed by update equations"
        rows.append(SymbolRow(_latex(d, leaf), role, mathtext.shape(leaf.shape), prose(meaning, prefix)))
    for e in d.forward:
        role = EQUATION_ROLES.get(e.kind, e.kind)
        if e.kind == "loss":
            meaning = "the scalar every gradient is taken of"
        elif e.kind == "output" and model.prediction == e.lhs_text:
            meaning = f"the prediction; {_equation_meaning(d, e.node)}"
        else:
            meaning = _equation_meaning(d, e.node)
        rows.append(SymbolRow(e.lhs_latex, role, mathtext.shape(e.node.shape),
                              prose(f"{meaning} (#{e.number})", prefix)))
    return rows


def dim_rows(model: Model, check_dims: dict[str, int], batch: sympy.Symbol | None) -> list[DimRow]:
    rows = []
    for name, symbol in model.dim_symbols.items():
        if symbol == batch:
            meaning = "batch size: examples per call (the leading axis of every input)"
        else:
            meaning = _first_use(model, symbol)
        default = model.dim_defaults.get(name)
        if default is not None:
            meaning += f"; training default {default}"
        rows.append(DimRow(sympy.latex(symbol), prose(meaning), check_dims.get(name)))
    return rows


def _first_use(model: Model, symbol: sympy.Symbol) -> str:
    for leaf in model.leaves.values():
        for axis, dim in enumerate(leaf.shape):
            if dim == symbol:
                name = mathtext_name(leaf)
                if leaf.ndim == 1:
                    return f"entries of ${name}$"
                if leaf.ndim == 2:
                    return f"{'rows' if axis == 0 else 'columns'} of ${name}$"
                return f"length of axis {axis} of ${name}$"
    return "an axis length"


def mathtext_name(leaf: Node) -> str:
    from symgrad.symbolic.printing import latex_name

    return latex_name(leaf.name)
