"""A recurrence as a textbook writes it: the cell's named equations and its backward step.

The scan's cell is a graph over placeholders in which every gate is a slice of one product
(x_t [W_i | W_f | ...] + h_{t-1} [...] + [b_i | ...]). For a reader that graph is rebuilt one
step at a time: the hoisted input projection is put back in terms of x_t, and each slice is
pushed through the sums, products and concatenations it was taken of, so that a gate reads
x_t Wx_i + h_{t-1} Wh_i + b_i. A gate is named by the suffix of its parameters (Wx_i -> i_t),
so the names are the model's own. The backward step is then derived from that graph by the
same reverse mode as everything else (`pullback`), seeded with the adjoints of the new states;
nothing here differentiates anything by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from symgrad.documents import mathtext
from symgrad.documents.content import Equation, Section, prose
from symgrad.symbolic.autodiff import Accumulation, pullback
from symgrad.symbolic.graph import Node, apply, elementwise, placeholder, rebuild, topological
from symgrad.symbolic.printing import Printer, latex_name
from symgrad.symbolic.scan import TIME_AXIS


@dataclass(frozen=True)
class Line:
    """One displayed equation of the cell: `lhs = rhs`, and what it is."""

    lhs: str  # LaTeX
    rhs: str  # LaTeX
    shape: str  # LaTeX
    what: str  # a few words: "input gate", "carried to step t-1", ...


@dataclass(frozen=True)
class CellView:
    name: str
    forward: tuple[Line, ...]
    backward: tuple[Line, ...]
    weights: tuple[Line, ...]  # each weight's gradient as a sum over time
    seeds: tuple[str, ...]  # LaTeX: how the adjoint of each new state starts
    stored: tuple[str, ...]  # LaTeX names of the values BPTT keeps from the forward loop
    inputs: tuple[str, ...]  # LaTeX names of the step's inputs (x_t)
    states: tuple[tuple[str, str], ...]  # (h_{t-1}, h_t) LaTeX names of each state


def _same(a, b) -> bool:
    return sympy.expand(sympy.sympify(a) - sympy.sympify(b)) == 0


def _slice(x: Node, axis: int, start, stop) -> Node:
    """x[start:stop] along `axis`, pushed through the operations x was built with."""
    if _same(start, 0) and _same(stop, x.shape[axis]):
        return x
    if x.op == "concat" and x.attr("axis") == axis:
        at = sympy.Integer(0)
        for piece in x.args:
            end = at + piece.shape[axis]
            if _same(at, start) and _same(end, stop):
                return piece
            at = end
    if x.op == "matmul" and axis == x.ndim - 1 and x.args[1].ndim == 2:
        return apply("matmul", [x.args[0], _slice(x.args[1], 1, start, stop)])
    if x.op == "ew":
        args = []
        for a in x.args:
            k = axis - (x.ndim - a.ndim)
            spans = k >= 0 and not _same(a.shape[k], 1)
            args.append(_slice(a, k, start, stop) if spans else a)
        return elementwise(x.attr("expr"), args)
    return apply("slice", [x], axis=axis, start=start, stop=stop)


def _rebuild(roots, mapping: dict[Node, Node]) -> dict[Node, Node]:
    """Every node under `roots` rebuilt with `mapping` applied and slices pushed inwards."""
    out: dict[Node, Node] = {}
    for n in topological(roots):
        if n in mapping:
            out[n] = mapping[n]
        elif n.op == "slice":
            out[n] = _slice(out[n.args[0]], n.attr("axis"), n.attr("start"), n.attr("stop"))
        else:
            out[n] = rebuild(n, [out[a] for a in n.args])
    return out


def _suffix(leaf: Node) -> str | None:
    base, sep, rest = leaf.name.rpartition("_")
    return rest if sep and base and rest.isalpha() and len(rest) <= 2 else None


def _gate_of(node: Node, named: dict[Node, tuple[str, str]]) -> str | None:
    """The one gate suffix of the parameters `node` reads (not through a named value)."""
    found, stack, seen = set(), [node], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n is not node and n in named and not n.is_leaf:
            continue
        if n.op == "param":
            found.add(_suffix(n))
        stack.extend(n.args)
    return found.pop() if len(found) == 1 and None not in found else None


def _single_function(n: Node) -> bool:
    expr = n.attr("expr") if n.op == "ew" else None
    return isinstance(expr, sympy.Function) and len(n.args) == 1


def cell_view(scan: Node, printer: Printer) -> CellView:
    cell = scan.attr("cell")
    ns = len(cell.seq_ph)
    names: dict[Node, tuple[str, str]] = dict(printer.names)
    # one time step of each sequence: a raw input X becomes x_t, a hoisted product its formula in x_t
    mapping: dict[Node, Node] = {}
    inputs = []
    for ph, seq in zip(cell.seq_ph, scan.args[:ns], strict=True):
        steps = {}
        for leaf in topological([seq]):
            if leaf.is_leaf and leaf.op == "input" and leaf.ndim > TIME_AXIS:
                shape = leaf.shape[:TIME_AXIS] + leaf.shape[TIME_AXIS + 1:]
                x_t = placeholder(f"{leaf.name.lower()}_t", shape)
                names[x_t] = (x_t.name, f"{latex_name(leaf.name.lower())}_{{t}}")
                inputs.append(names[x_t][1])
                steps[leaf] = x_t
        mapping[ph] = _rebuild([seq], steps)[seq] if steps else ph
    states = []
    for ph in cell.state_ph:
        base = ph.name.removesuffix("_prev")
        names[ph] = (ph.name, f"{latex_name(base)}_{{t-1}}")
        states.append((names[ph][1], f"{latex_name(base)}_{{t}}"))
    rebuilt = _rebuild(cell.outs, mapping)
    outs = [rebuilt[o] for o in cell.outs]
    for (_, now), ph, o in zip(states, cell.state_ph, outs, strict=True):
        names[o] = (f"{ph.name.removesuffix('_prev')}_t", now)
    # gates: a function of one argument whose parameters all carry one suffix (Wx_i, Wh_i, b_i)
    gates: dict[Node, str] = {}
    pre: dict[Node, Node] = {}
    for n in topological(outs):
        if n in names or not _single_function(n):
            continue
        gate = _gate_of(n, names)
        if gate is not None and f"{gate}_t" not in {v[0] for v in names.values()}:
            names[n] = (f"{gate}_t", f"{gate}_{{t}}")
            gates[n] = gate
            pre[n.args[0]] = n
    p = Printer(names)
    forward = []
    suffixes = [_suffix(leaf) for leaf in topological(list(cell.outs)) if leaf.op == "param"]
    for n in sorted(gates, key=lambda n: suffixes.index(gates[n])):  # the parameters' order
        forward.append(Line(names[n][1], p.latex(n, expand=True), mathtext.shape(n.shape),
                            f"gate {gates[n]}"))
    for o in [n for n in topological(outs) if n in outs]:  # a state the others read comes first
        forward.append(Line(names[o][1], p.latex(o, expand=True), mathtext.shape(o.shape), "state"))
    # pre-activations get names for the backward step: a_{i,t} = x_t Wx_i + h_{t-1} Wh_i + b_i
    back_names = dict(names)
    for a, g in pre.items():
        if a not in back_names and not a.is_leaf:
            back_names[a] = (f"a_{gates[g]}_t", f"a_{{{gates[g]},t}}")
    # the backward step: reverse mode over this graph, seeded with the new states' adjoints
    seeds = {}
    seed_text = []
    inside = {a for n in topological(outs) for a in n.args}
    for (_, now), o in zip(states, outs, strict=True):
        ph = placeholder(f"d_{names[o][0]}", o.shape)
        # a new state the step itself reads (C_t in h_t): the seed is only the part from step t+1
        seed = rf"\left[\delta_{{{now}}}\right]_{{t+1}}" if o in inside else rf"\delta_{{{now}}}"
        back_names[ph] = (ph.name, seed)
        seeds[o] = ph
        seed_text.append(seed)
    wrt = [n for n in topological(outs) if n.op == "param" or n in cell.state_ph]
    grads = pullback(seeds, wrt)
    for node, adj in grads.adjoints.items():
        if node in back_names and adj not in back_names and adj.op not in ("const", "placeholder"):
            back_names[adj] = (f"d_{back_names[node][0]}", rf"\delta_{{{back_names[node][1]}}}")
    q = Printer(back_names)
    totals = {s.node: s.total for s in grads.steps if isinstance(s, Accumulation)}
    backward, done = [], set()
    for s in grads.steps:
        node = s.node if isinstance(s, Accumulation) else s.node.args[s.arg]
        if node in done or node not in back_names or node.op == "param" or node in seeds.values():
            continue
        if node in totals and not isinstance(s, Accumulation):
            continue  # a part: the sum is shown when it is complete
        adj = grads.adjoints.get(node)
        if adj is None:
            continue
        done.add(node)
        rhs = q.latex(adj, expand=True)
        if node in seeds:  # a new state used inside the step too: its carry plus that use
            rhs = q.latex(adj, expand=True)
        lhs = rf"\delta_{{{back_names[node][1]}}}"
        if rhs == lhs:
            continue
        if node.op == "placeholder" and node in cell.state_ph:
            what = "carried to step t-1"
        elif node in gates:
            what = f"gate {gates[node]}"
        elif node in pre:
            what = f"pre-activation of gate {gates[pre[node]]}"
        elif node.op == "placeholder":
            what = "the step's input"
        else:
            what = ""
        backward.append(Line(lhs, rhs, mathtext.shape(node.shape), what))
    weights = []
    for leaf in wrt:
        if leaf.op != "param" or leaf not in grads.adjoints:
            continue
        per_step = q.latex(grads.adjoints[leaf], expand=True)
        weights.append(Line(mathtext.partial("L", latex_name(leaf.name)),
                            rf"\sum_{{t=1}}^{{T}} {_group(per_step)}", mathtext.shape(leaf.shape), leaf.name))
    rebuilt_all = _rebuild(list(cell.outs), mapping)
    stored = []
    for r in cell.residuals:
        shown = rebuilt_all.get(r)
        if shown is not None:
            stored.append(p.latex(shown) if shown in names else p.latex(shown, expand=True))
    return CellView(cell.name, tuple(forward), tuple(backward), tuple(weights), tuple(seed_text),
                    tuple(dict.fromkeys(stored)), tuple(inputs), tuple(states))


def _group(s: str) -> str:
    top = s.replace(r"\left(", "(").replace(r"\right)", ")")
    depth, plain = 0, True
    for i, c in enumerate(top):
        depth += c in "({[" and 1 or c in ")}]" and -1 or 0
        if depth == 0 and c in "+-" and i > 0:
            plain = False
    return s if plain else rf"\left({s}\right)"


def _order_backward(lines: tuple[Line, ...]) -> list[Line]:
    """Adjoints of gates and states first, then pre-activations, then the carries (each group
    only reads the groups before it)."""
    rank = {"carried to step t-1": 2}
    return sorted(lines, key=lambda ln: rank.get(ln.what, 1 if ln.what.startswith("pre-") else 0))


def cell_sections(d, scan: Node, incoming: dict[int, str], prefix: str = "") -> tuple[Section, Section]:
    """The cell's forward equations (numbered N.1, N.2, ... under the scan's equation N) and its
    backward step (numbered under the first backward equation through the scan).
    `incoming` maps a state's index to the LaTeX of the loss's adjoint of its sequence."""
    view = cell_view(scan, d.printer)
    cell = scan.attr("cell")
    n_fwd = d.owners[scan]
    backs = [e.number for e in d.backward if getattr(e.step, "node", None) is scan]
    n_back = backs[0]
    T = sympy.latex(next(a for a in scan.args if a.ndim > TIME_AXIS).shape[TIME_AXIS])
    starts = ", ".join(f"${prev.replace('t-1', '0')} = 0$" for prev, _ in view.states)
    reads = _list([f"${x}$ (the slice $t$ of the sequence along its time axis)" for x in view.inputs]
                  + [f"${prev}$" for prev, _ in view.states])
    fwd: list = [prose(
        f"Equation (#{n_fwd}) runs the cell `{cell.name}` over $T = {T}$ time steps, $t = 1, \\dots, T$, "
        f"from {starts}. Step $t$ reads {reads}. A gate is named after the suffix of its parameters "
        "(the model's own names); every product is computed for all rows of the batch at once:",
        prefix)]
    fwd += _numbered(view.forward, n_fwd, 1, prefix)
    outs = [f"${now}$" for _, now in view.states]
    read = [f"${e.lhs_latex}$ is the sequence of ${view.states[e.node.attr('index')][1]}$"
            for e in d.forward if d.train.get(e.node, e.node).op == "item"
            and d.train.get(e.node, e.node).args[0] is scan]
    fwd.append(prose(f"The scan returns the sequences of {_list(outs)} over $t$, each of shape "
                     f"${mathtext.shape(scan.attr('shapes')[0])}$" + (f": {_list(read)}." if read else "."),
                     prefix))
    seeds = []
    for k, ((_, now), seed) in enumerate(zip(view.states, view.seeds, strict=True)):
        carry = rf"\left[\delta_{{{now}}}\right]_{{t+1}}"
        loss = incoming.get(k)
        if seed == carry:
            seeds.append(f"${carry}$, the part of the adjoint of ${now}$ that step $t+1$ sends back "
                         "(zero at $t = T$)")
        elif loss is not None:
            seeds.append(f"$\\delta_{{{now}}} = \\left({loss}\\right)_{{:,t}} + {carry}$: the loss's "
                         "adjoint of the sequence at step $t$ plus what step $t+1$ sends back (zero at "
                         "$t = T$)")
    pre = [ln for ln in view.backward if ln.what.startswith("pre-")]
    back: list = [prose(
        f"The backward equations through the recurrence, (#{n_back}) to (#{backs[-1]}), run one reverse "
        f"loop $t = T, \\dots, 1$ over the cell's backward step, which reverse mode derived from the "
        f"cell's equations (#{n_fwd}.1) to (#{n_fwd}.{len(view.forward)}). Step $t$ starts from "
        + "; and from ".join(seeds) + ".", prefix)]
    if pre:
        back.append(prose(
            "Below, $a_{k,t}$ is the pre-activation of gate $k$ (the argument of its function in "
            f"(#{n_fwd}.1) to (#{n_fwd}.{len(view.forward)})).", prefix))
    back += _numbered(_order_backward(view.backward), n_back, 1, prefix)
    kb = len(view.backward)
    carried = _list([f"$\\delta_{{{prev}}}$" for prev, _ in view.states])
    back.append(prose(
        f"The carries {carried} are what step $t-1$ starts from. The weights are the same at every "
        "step, so each weight's gradient is the sum of its contributions over time:", prefix))
    order = list(d.model.params)
    weights = sorted(view.weights, key=lambda ln: order.index(ln.what) if ln.what in order else 0)
    back += _numbered(weights, n_back, kb + 1, prefix)
    stored = _list([f"${s}$" for s in view.stored]) if view.stored else "nothing beyond the states"
    back.append(prose(
        "**What back-propagation through time stores, and why.** Step $t$ of the backward loop reads "
        "values of forward step $t$, and the loops run in opposite directions, so the forward loop "
        f"keeps, for every $t$, the states and {stored}, each as a sequence over $t$. The backward loop "
        "then recomputes nothing: it trades memory that grows linearly with $T$ for not running "
        "any forward step a second time.", prefix))
    return (Section(f"{prefix}cell", f"The {cell.name} cell, one time step", 3, blocks=tuple(fwd)),
            Section(f"{prefix}bptt", f"Back-propagation through time in the {cell.name} cell", 3,
                    blocks=tuple(back)))


def _numbered(lines, number: int, first: int, prefix: str) -> list[Equation]:
    """Equations numbered number.first, number.first+1, ... under equation `number`."""
    return [Equation(f"{number}.{k}", f"{prefix}eq-{number}.{k}", ln.lhs, ln.rhs, shape=ln.shape)
            for k, ln in enumerate(lines, first)]


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
