"""A document's opening paragraph, read off the model's equations rather than written by hand.

What the model reads and computes, which operations and elementwise functions each equation
applies (with their parameters, such as a leaky relu's slope), and what is minimised over which
parameters: a summary built from the graph cannot disagree with the equations below it.
"""
from __future__ import annotations

import sympy

from symgrad.documents.content import Inline, prose
from symgrad.symbolic.derivation import Derivation
from symgrad.symbolic.functions import ElementwiseFunction
from symgrad.symbolic.graph import Node, topological

#: Operations worth naming in a summary, in the order they are listed.
OPERATIONS = {
    "matmul": "matrix products", "im2col": "convolutions (as im2col products)",
    "max": "maxima over axes (pooling)", "scan": "a recurrence over time", "softmax": "a softmax",
    "log_softmax": "a log-softmax", "dropout_mask": "dropout masks", "einsum": "index contractions",
    "inv": "a matrix inverse", "solve": "a linear solve", "logdet": "a log-determinant",
    "trace": "a trace",
}
#: sympy's own functions by the names a reader knows them by
FUNCTION_NAMES = {"Abs": "absolute value", "exp": "exp", "log": "log"}


def _function_label(f: sympy.Function) -> str:
    name = FUNCTION_NAMES.get(type(f).__name__, type(f).__name__.replace("_", " "))
    params = getattr(type(f), "parameters", ()) if isinstance(f, ElementwiseFunction) else ()
    values = [f"{sympy.latex(p)} = {float(v):g}" for p, v in zip(params, f.args[1:], strict=False)]
    return name + (f" (${', '.join(values)}$)" if values else "")


def _owned(d: Derivation, number: int, root: Node) -> list[Node]:
    """The nodes equation `number` computes itself (not those of the equations it reads)."""
    owned = [n for n in topological([root]) if d.owners.get(n) == number]
    masks = [a for n in owned for a in n.args if a.op == "dropout_mask"]  # named, so unowned
    return owned + list(dict.fromkeys(masks))


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cites(numbers: list[int]) -> str:
    return _list([f"(#{n})" for n in numbers])


def structure(d: Derivation, prefix: str = "") -> Inline:
    """`It reads X and computes z, P and L in 3 equations, with matrix products (1), tanh in (2) ...`"""
    model, p = d.model, d.printer
    functions: dict[str, list[int]] = {}
    operations: dict[str, list[int]] = {}
    for e in d.forward:
        for n in _owned(d, e.number, d.train.get(e.node, e.node)):
            if n.op == "ew":
                for f in sorted(n.attr("expr").atoms(sympy.Function), key=lambda f: type(f).__name__):
                    if len(f.args) >= 1 and (isinstance(f, ElementwiseFunction) or len(f.args) == 1):
                        functions.setdefault(_function_label(f), [])
                        if e.number not in functions[_function_label(f)]:
                            functions[_function_label(f)].append(e.number)
            elif n.op in OPERATIONS:
                operations.setdefault(n.op, [])
                if e.number not in operations[n.op]:
                    operations[n.op].append(e.number)
    reads = _list([f"${p.latex(v)}$" for v in model.data.values()]) if model.data else "only its parameters"
    computed = _list([f"${e.lhs_latex}$" for e in d.forward])
    parts = [f"{OPERATIONS[op]} in {_cites(ns)}" for op, ns in sorted(
        operations.items(), key=lambda kv: list(OPERATIONS).index(kv[0]))]
    parts += [f"{name} in {_cites(ns)}" for name, ns in functions.items()]
    uses = f", using {_list(parts)}" if parts else ""
    return prose(f"Read off its {len(d.forward)} equations: the model `{model.name}` reads {reads} and "
                 f"computes {computed}{uses}.", prefix)


def training(d: Derivation, loss_number: int, prefix: str = "") -> Inline:
    """What is minimised over which parameters: the loss, or each player's own objective."""
    model, p = d.model, d.printer
    if not model.objectives:
        return prose(f"Its {len(model.params)} parameters are trained by minimising the loss "
                     f"${p.latex(model.loss_nodes[d.loss_name])}$ (#{loss_number}).", prefix)
    numbers = {e.lhs_text: e.number for e in d.forward}
    players = []
    for name, params in model.objectives.items():
        names = _list([f"${p.latex(model.params[q])}$" for q in params])
        players.append(f"${p.latex(model.loss_nodes[name])}$ (#{numbers[name]}) over {names}")
    return prose(
        f"It has {len(model.objectives)} players, each minimising its own objective over its own "
        f"parameters while the others are held fixed: {'; '.join(players)}. Training alternates "
        "one gradient step of each (`loss_and_grad_` followed by the objective's name computes "
        f"it). The loss ${p.latex(model.loss_nodes[d.loss_name])}$ (#{loss_number}), their sum, "
        "only keeps the module's common contract (`loss_and_grad`); no player minimises it.", prefix)
