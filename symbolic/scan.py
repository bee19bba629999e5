"""`scan`: a recurrence over the time axis whose step (the cell) is written in equations.

Building a scan derives everything the generated code needs, once:

* the cell's graph over placeholders (one time step of each sequence, each previous state);
* hoisting: the part of the step that reads only the sequences and parameters (x_t W_x + b
  for every gate of an LSTM) moves out of the loop as one matrix product over all time steps;
* the backward step: reverse mode applied to the cell itself, seeded with the incoming adjoint
  of each new state, gives the adjoints of the step's inputs, previous states and parameters;
* residuals: the forward values the backward step reads (gate activations, ...), which the
  forward loop stores for every step, so back-propagation through time recomputes nothing.

The scan node outputs the state sequences (B, T, ...) and the residual sequences; its VJP is
a `scan_vjp` node whose lowering is the reverse loop over time.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sympy
from symgrad.symbolic.autodiff import pullback
from symgrad.symbolic.errors import ModelError, ShapeError, located, user_location
from symgrad.symbolic.graph import (
    ARG,
    Node,
    apply,
    as_node,
    broadcast_to,
    const,
    elementwise,
    placeholder,
    rebuild,
    topological,
)
from symgrad.symbolic.names import check_identifier
from symgrad.symbolic.shapes import Shape, as_shape, fmt_shape, shapes_equal

TIME_AXIS = 1  # sequences are (batch, time, ...): the batch leads, as everywhere


@dataclass(eq=False)
class Cell:
    """One time step of a scan, forward and backward, as graphs over placeholders."""

    name: str
    seq_ph: tuple[Node, ...]  # x_t: one step of each sequence the loop reads
    state_ph: tuple[Node, ...]  # h_prev: the previous value of each state
    outs: tuple[Node, ...]  # the new value of each state
    captured: tuple[Node, ...]  # values from outside the loop that the step reads
    residuals: tuple[Node, ...] = ()  # step values the backward step reads
    ct_ph: tuple[Node, ...] = ()  # incoming adjoint of each new state
    res_ph: tuple[Node, ...] = ()  # stand-ins for the residuals in the backward step
    d_seq: tuple[Node | None, ...] = ()
    d_state: tuple[Node | None, ...] = ()
    d_captured: tuple[Node | None, ...] = ()
    back_captured: tuple[Node, ...] = ()  # values from outside the loop the backward step reads
    out_ph: tuple[Node | None, ...] = ()  # new states the backward step reads (from the states)
    equations: list[tuple[str, Node]] = field(default_factory=list)  # for documents
    # incoming adjoints of residuals (an HVP's second pass, see `with_residual_adjoints`): the
    # residual indices that have one, and a stand-in for each
    ctr_index: tuple[int, ...] = ()
    ctr_ph: tuple[Node, ...] = ()
    extended: dict = field(default_factory=dict)  # residual indices -> the Cell that takes them

    def __repr__(self) -> str:  # attrs print in error messages; keep them short
        return f"<cell {self.name}>"


def _depends(roots: Sequence[Node], on: set[Node]) -> set[Node]:
    out: set[Node] = set()
    for n in topological(roots):
        if n in on or any(a in out for a in n.args):
            out.add(n)
    return out


def substitute(roots: Sequence[Node], mapping: dict[Node, Node]) -> dict[Node, Node]:
    """Every node under `roots` rebuilt with `mapping` applied (nodes are immutable)."""
    out: dict[Node, Node] = {}
    for n in topological(roots):
        out[n] = mapping[n] if n in mapping else rebuild(n, [out[a] for a in n.args])
    return out


def _error(name: str, message: str) -> ShapeError:
    return ShapeError(located(f"scan {name!r}: {message}", user_location()))


def scan(cell_fn: Callable[..., Node | Sequence[Node]], sequences: Sequence[Node],
         init: Sequence[Node], name: str = "scan", arg_names: Sequence[str] | None = None) -> list[Node]:
    """Run `cell_fn(x_t..., h_prev...) -> h_t...` over axis 1 of `sequences`, from `init`.

    Returns one (B, T, ...) sequence per state: the state after every step. `arg_names` names
    the cell's arguments when `cell_fn` takes them as `*args`.
    """
    check_identifier(name, "scan name")
    sequences, init = [as_node(s) for s in sequences], [as_node(s) for s in init]
    if not sequences or not init:
        raise _error(name, "needs at least one sequence and one state")
    T = sequences[0].shape[TIME_AXIS] if sequences[0].ndim > TIME_AXIS else None
    for s in sequences:
        if s.ndim < 2 or not shapes_equal((s.shape[0], s.shape[TIME_AXIS]), (sequences[0].shape[0], T)):
            raise _error(name, f"sequences must share (batch, time) axes; got {fmt_shape(s.shape)} "
                               f"and {fmt_shape(sequences[0].shape)}")
    if T is not None and T.is_Integer and int(T) == 0:
        raise _error(name, "the time axis has length 0")
    params = list(arg_names) if arg_names is not None else list(inspect.signature(cell_fn).parameters)
    if len(params) != len(sequences) + len(init):
        raise _error(name, f"the cell takes {len(params)} arguments, but there are {len(sequences)} "
                           f"sequences and {len(init)} states")
    seq_names, state_names = params[:len(sequences)], params[len(sequences):]
    seq_ph = tuple(placeholder(f"{p}_t", s.shape[:TIME_AXIS] + s.shape[TIME_AXIS + 1:])
                   for p, s in zip(seq_names, sequences, strict=True))
    state_ph = tuple(placeholder(f"{p}_prev", h.shape) for p, h in zip(state_names, init, strict=True))
    outs = cell_fn(*seq_ph, *state_ph)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    if len(outs) != len(init):
        raise _error(name, f"the cell returns {len(outs)} values for {len(init)} states")
    for p, h, o in zip(state_names, init, outs, strict=True):
        o = as_node(o)
        if not shapes_equal(o.shape, h.shape):
            raise _error(name, f"state {p!r} starts with shape {fmt_shape(h.shape)} but the cell "
                               f"returns {fmt_shape(o.shape)}")
    outs = _regroup_sums(tuple(as_node(o) for o in outs), state_ph)
    seq_ph, outs, sequences = _hoist(seq_ph, state_ph, outs, sequences, name)
    cell = _derive_cell(name, seq_ph, state_ph, outs)
    shapes = [h.shape[:TIME_AXIS] + (T,) + h.shape[TIME_AXIS:] for h in init]
    shapes += [r.shape[:TIME_AXIS] + (T,) + r.shape[TIME_AXIS:] for r in cell.residuals]
    node = Node.make("scan", (*sequences, *init, *cell.captured), {"cell": cell, "shapes": tuple(shapes)}, ())
    return [item(node, k) for k in range(len(init))]


def item(node: Node, k: int) -> Node:
    return Node.make("item", (node,), {"index": k}, node.attr("shapes")[k])


# -- hoisting the per-step work that does not depend on the states ------------------------
def _flat_sum(n: Node, single: set[Node]) -> tuple[sympy.Expr, list[Node]]:
    """n's expression with the sums it adds up (nodes in `single`) inlined, over its terms' nodes."""
    subs, args = {}, []
    for i, a in enumerate(n.args):
        if a in single:
            inner, inner_args = _flat_sum(a, single)
            subs[ARG[i]] = inner.xreplace({ARG[j]: ARG[len(args) + j] for j in range(len(inner_args))})
            args += inner_args
        else:
            subs[ARG[i]] = ARG[len(args)]
            args.append(a)
    return n.attr("expr").xreplace(subs), args


def _regroup_sums(outs: tuple[Node, ...], state_ph: Sequence[Node]) -> tuple[Node, ...]:
    """Gather the state-independent terms of each sum into one term, so that hoisting moves
    them out of the loop together: `x W_x + h W_h + b` is built as (x W_x + h W_h) + b, and
    becomes (x W_x + b) + h W_h, whose first term is computed for every step at once."""
    on_state = _depends(outs, set(state_ph))
    users: dict[Node, list[Node]] = {}
    for n in topological(outs):
        for a in set(n.args):
            users.setdefault(a, []).append(n)
    sums = {n for n in on_state if n.op == "ew" and n.attr("expr").is_Add}
    # a sum whose one user is another sum is one of that sum's terms
    single = {n for n in sums if len(users.get(n, ())) == 1 and users[n][0] in sums and n not in outs}
    mapping: dict[Node, Node] = {}
    for n in [n for n in topological(outs) if n in sums and n not in single]:
        expr, args = _flat_sum(n, single)
        free = [t for t in expr.args
                if not any(args[ARG.index(s)] in on_state for s in t.free_symbols if s in ARG)]
        if len(free) < 2 or len(free) == len(expr.args):
            continue
        fixed = elementwise(sympy.Add(*free), args)
        k = len(args)
        mapping[n] = elementwise(sympy.Add(*[t for t in expr.args if t not in free]) + ARG[k], [*args, fixed])
    if not mapping:
        return outs
    new = substitute(outs, mapping)
    return tuple(new[o] for o in outs)


def _batchable(n: Node, hoisted: set[Node]) -> bool:
    if n.op == "ew":
        return True
    if n.op == "matmul":
        return n.args[1] not in hoisted and n.args[1].ndim == 2 and n.args[0].ndim >= 2
    return False


def _hoist(seq_ph, state_ph, outs, sequences, name):
    """Move state-independent work on the sequences out of the loop, batched over time."""
    on_state = _depends(outs, set(state_ph))
    inside = _depends(outs, set(seq_ph) | set(state_ph))
    hoisted: set[Node] = set()
    batched: dict[Node, Node] = dict(zip(seq_ph, sequences, strict=True))
    for n in topological(outs):
        if n in batched or n.is_leaf or n in on_state:
            continue
        if not any(a in batched for a in n.args) or not _batchable(n, hoisted):
            continue
        if any(a in inside and a not in batched for a in n.args):
            continue  # it reads a step value that stays in the loop (a slice of one, ...)
        args = []
        for a in n.args:
            if a in batched:
                args.append(batched[a])
            elif n.op == "ew" and a.ndim == n.ndim:  # a per-batch value: give it a time axis
                args.append(a.reshape(a.shape[:TIME_AXIS] + (sympy.Integer(1),) + a.shape[TIME_AXIS:]))
            else:
                args.append(a)
        batched[n] = rebuild(n, args) if n.op == "ew" else apply(n.op, args, **dict(n.attrs))
        hoisted.add(n)
    consumers: dict[Node, set[Node]] = {}
    for n in topological(outs):
        for a in n.args:
            consumers.setdefault(a, set()).add(n)
    frontier = [n for n in topological(outs) if n in hoisted
                and (n in outs or any(c not in hoisted for c in consumers.get(n, ())))]
    if not frontier:
        return seq_ph, outs, sequences
    mapping = {f: placeholder(f"{name}_u{k + 1}_t", f.shape) for k, f in enumerate(frontier)}
    new = substitute(outs, mapping)
    outs = tuple(new[o] for o in outs)
    used = set(topological(outs))
    keep = [(p, s) for p, s in zip(seq_ph, sequences, strict=True) if p in used]
    seq_ph = tuple(p for p, _ in keep) + tuple(mapping[f] for f in frontier)
    sequences = [s for _, s in keep] + [batched[f] for f in frontier]
    return seq_ph, outs, sequences


# -- the backward step ------------------------------------------------------------------------
def _outside(roots: Sequence[Node], placeholders: set[Node]) -> tuple[Node, ...]:
    """Values the step reads that do not change over the loop (parameters, their views, ...)."""
    inside = _depends(roots, placeholders)
    out = []
    for n in topological(roots):
        if n in inside or n.op == "const":
            continue
        if n.op == "broadcast_to" and n.args[0].op == "const":
            continue
        if any(n in c.args for c in inside):
            out.append(n)
    return tuple(dict.fromkeys(out))


def with_residual_adjoints(cell: Cell, index: tuple[int, ...]) -> Cell:
    """The cell whose backward step also takes an incoming adjoint for each residual in `index`
    (stand-ins `ctr_ph`) and pulls it back with the states' adjoints: an HVP's second pass
    reaches the forward loop's stored residuals too (the differentiable back-propagation reads
    them instead of computing them again), and their adjoints join the reverse loop's step
    work instead of a loop of their own. Derived once per `index`."""
    if index not in cell.extended:
        ctr_ph = tuple(placeholder(f"d{cell.res_ph[k].name}", cell.residuals[k].shape) for k in index)
        seeds = dict(zip(cell.outs, cell.ct_ph, strict=True))
        for k, c in zip(index, ctr_ph, strict=True):
            seeds[cell.residuals[k]] = c
        wrt = [*cell.seq_ph, *cell.state_ph, *cell.captured]
        grads = pullback(seeds, wrt)
        d = [grads.adjoints.get(w) for w in wrt]
        mapping = dict(zip(cell.residuals, cell.res_ph, strict=True))
        mapping |= {o: p for o, p in zip(cell.outs, cell.out_ph, strict=True) if p is not None}
        new = substitute([x for x in d if x is not None], mapping)
        d = [new[x] if x is not None else None for x in d]
        ns, nh = len(cell.seq_ph), len(cell.state_ph)
        bound = (set(cell.seq_ph) | set(cell.state_ph) | set(cell.ct_ph) | set(cell.res_ph) | set(ctr_ph)
                 | {p for p in cell.out_ph if p is not None})
        back_roots = [x for x in d if x is not None]
        cell.extended[index] = Cell(
            cell.name, cell.seq_ph, cell.state_ph, cell.outs, cell.captured, cell.residuals, cell.ct_ph,
            cell.res_ph, tuple(d[:ns]), tuple(d[ns:ns + nh]), tuple(d[ns + nh:]),
            _outside(back_roots, bound) if back_roots else (), cell.out_ph, cell.equations, index, ctr_ph)
    return cell.extended[index]


def _derive_cell(name, seq_ph, state_ph, outs) -> Cell:
    phs = set(seq_ph) | set(state_ph)
    captured = _outside(outs, phs)
    ct_ph = tuple(placeholder(f"d{o.name.removesuffix('_prev')}_t", o.shape) for o in state_ph)
    wrt = [*seq_ph, *state_ph, *captured]
    grads = pullback(dict(zip(outs, ct_ph, strict=True)), wrt)
    d = [grads.adjoints.get(w) for w in wrt]
    roots = [x for x in d if x is not None]
    forward = set(topological(outs))
    inside_fwd = _depends(outs, phs)
    residuals = [n for n in topological(roots) if n in forward and n in inside_fwd and not n.is_leaf]
    # keep only the outermost residuals: those the backward graph reads directly
    back_nodes = set(topological(roots))
    residuals = [r for r in residuals if any(r in c.args for c in back_nodes if c not in forward)
                 or r in roots]
    # a new state the backward step reads comes from the state sequence, not a second copy
    out_ph = tuple(placeholder(f"{p.name.removesuffix('_prev')}_t", o.shape) if o in residuals else None
                   for p, o in zip(state_ph, outs, strict=True))
    residuals = [r for r in residuals if r not in outs]
    res_ph = tuple(placeholder(f"{name}_r{k + 1}_t", r.shape) for k, r in enumerate(residuals))
    mapping = dict(zip(residuals, res_ph, strict=True))
    mapping |= {o: p for o, p in zip(outs, out_ph, strict=True) if p is not None}
    new = substitute(roots, mapping)
    d = [new[x] if x is not None else None for x in d]
    ns, nh = len(seq_ph), len(state_ph)
    back_roots = [x for x in d if x is not None]
    bound = phs | set(ct_ph) | set(res_ph) | {p for p in out_ph if p is not None}
    back_captured = _outside(back_roots, bound) if back_roots else ()
    return Cell(name, tuple(seq_ph), tuple(state_ph), tuple(outs), captured, tuple(residuals),
                ct_ph, res_ph, tuple(d[:ns]), tuple(d[ns:ns + nh]), tuple(d[ns + nh:]), back_captured,
                out_ph)


def scan_vjp(cotangents: tuple[Node | None, ...], node: Node) -> list[Node | None]:
    """The adjoints of a scan's sequences, initial states and captured values: one reverse
    loop over time (see the module docstring)."""
    cell: Cell = node.attr("cell")
    shapes = node.attr("shapes")
    nh = len(cell.state_ph)
    cts = [c if c is not None else broadcast_to(const(0), shapes[k]) for k, c in enumerate(cotangents[:nh])]
    states = [item(node, k) for k in range(nh)]
    residuals = [item(node, nh + k) for k in range(len(cell.residuals))]
    index = tuple(k for k, c in enumerate(cotangents[nh:]) if c is not None)
    if index:  # an HVP's second pass reads the stored residuals too
        cell = with_residual_adjoints(cell, index)
    ns = len(cell.seq_ph)
    sequences, inits = node.args[:ns], node.args[ns:ns + nh]
    res_cts = [cotangents[nh + k] for k in cell.ctr_index]
    args = (*cts, *residuals, *states, *sequences, *inits, *cell.back_captured, *res_cts)
    out_shapes = tuple(a.shape for a in node.args)
    back = Node.make("scan_vjp", args, {"cell": cell, "shapes": out_shapes}, ())
    return [item(back, k) for k in range(len(node.args))]


# -- back-propagation through time as a scan of its own (second order) ----------------------------
def differentiable_vjp(cotangents: tuple[Node | None, ...], node: Node) -> list[Node | None]:
    """The adjoints `scan_vjp` computes, written as a `scan` over the reversed sequences, so
    that reverse mode can differentiate them again with scan's own rule (Hessian-vector
    products through a recurrence).

    Step t of the reversed loop reads the state adjoint's share from outside (ct_t), the step's
    input x_t and previous state h_{t-1}; it recomputes the cell's forward values from them
    (work that reads no carried value is hoisted out as one product over all steps) and pulls
    the carried adjoint a_t = ct_t + a_{t+1} back through the cell. Its states are the adjoint
    carried to h_{t-1}, the adjoint of x_t (a per-step output) and a running sum of each
    captured value's adjoint; the initial states' adjoints are the carry's last value and the
    captured values' the sums' last values. A captured value whose step adjoint is a product
    of a step input with the adjoint of x_t (W_h's h_{t-1}^T da_t) is no running sum: it is one
    product of the two stacked sequences after the loop (see `_summed_outside`), which the
    second pass differentiates into two products over all steps, not two a step."""
    cell: Cell = node.attr("cell")
    shapes = node.attr("shapes")
    ns, nh = len(cell.seq_ph), len(cell.state_ph)
    sequences, inits, captured = node.args[:ns], node.args[ns:ns + nh], node.args[ns + nh:]
    T = shapes[0][TIME_AXIS]
    states = [item(node, k) for k in range(nh)]
    prev = [_previous(h0, h, T) for h0, h in zip(inits, states, strict=True)]
    cts = [(k, c) for k, c in enumerate(cotangents[:nh]) if c is not None]
    base = [p.name.removesuffix("_prev") for p in cell.state_ph]
    seq_base = [p.name.removesuffix("_t") for p in cell.seq_ph]
    # the forward loop's stored residuals (and the new states the backward step reads), read
    # as sequences instead of recomputed, when scan_vjp can take their adjoints (`_through_residuals`)
    read = [k for k, p in enumerate(cell.out_ph) if p is not None]
    reuse = bool(cell.residuals)
    stored = [item(node, nh + k) for k in range(len(cell.residuals))] + [states[k] for k in read]
    stored = stored if reuse else []
    arg_names = ([f"ct_{base[k]}" for k, _ in cts] + [f"in_{b}" for b in seq_base]
                 + [f"prev_{b}" for b in base])
    if reuse:
        arg_names += [p.name.removesuffix("_t") for p in cell.res_ph] + [f"new_{base[k]}" for k in read]
    arg_names += [f"adj_{b}" for b in base]
    flipped = [apply("flip", [x], axis=TIME_AXIS) for x in [*(c for _, c in cts), *sequences, *prev, *stored]]

    def pulled(args):
        """The step's adjoints of x_t, h_{t-1} and the captured values."""
        ct, rest = args[:len(cts)], args[len(cts):]
        x, h_prev = rest[:ns], rest[ns:ns + nh]
        adj = rest[ns + nh + len(stored):ns + 2 * nh + len(stored)]
        if reuse:  # the cell's own backward step, over the stored values
            r = rest[ns + nh:ns + nh + len(cell.residuals)]
            new = dict(zip(read, rest[ns + nh + len(cell.residuals):ns + nh + len(stored)], strict=True))
            seeds = list(adj)
            for j, (k, _) in enumerate(cts):
                seeds[k] = ct[j] + seeds[k]
            mapping = dict(zip((*cell.seq_ph, *cell.state_ph, *cell.res_ph, *cell.ct_ph),
                               (*x, *h_prev, *r, *seeds), strict=True))
            mapping |= {cell.out_ph[k]: v for k, v in new.items()}
            d = [*cell.d_seq, *cell.d_state, *cell.d_captured]
            new_d = substitute([g for g in d if g is not None], mapping)
            return [new_d[g] if g is not None else None for g in d]
        outs = substitute(cell.outs, dict(zip((*cell.seq_ph, *cell.state_ph), (*x, *h_prev), strict=True)))
        seeds = {}
        for k, o in enumerate(cell.outs):
            a = adj[k]
            for j, (kk, _) in enumerate(cts):
                if kk == k:
                    a = ct[j] + a
            seeds[outs[o]] = seeds[outs[o]] + a if outs[o] in seeds else a
        grads = pullback(seeds, [*x, *h_prev, *captured]).adjoints
        return [grads.get(v) for v in (*x, *h_prev, *captured)]

    # which adjoints exist: traced once over stand-ins of the step's arguments
    probe = [placeholder(f"{cell.name}_probe{k}", s) for k, s in enumerate(
        [c.shape[:TIME_AXIS] + c.shape[TIME_AXIS + 1:] for c in flipped] + [h.shape for h in inits])]
    traced = pulled(probe)
    present = [d is not None for d in traced]
    d_seq = [j for j in range(ns) if present[j]]
    outside = _summed_outside(traced, probe[:len(flipped)], d_seq, ns + nh, captured)
    d_cap = [i for i in range(len(captured)) if present[ns + nh + i] and i not in outside]
    # the loop reads only the sequences its step uses (reading the stored residuals, it needs
    # no x_t to recompute them from; a product summed outside reads its sequence there)
    used = set(topological([d for k, d in enumerate(traced) if d is not None and k - ns - nh not in outside]))
    keep = [i for i in range(len(flipped)) if probe[i] in used] or [0]
    arg_names = [arg_names[i] for i in keep] + arg_names[len(flipped):]
    arg_names += [f"d_{seq_base[j]}" for j in d_seq] + [f"acc{i + 1}" for i in d_cap]

    def step(*args):
        full = list(probe[:len(flipped)])  # stand-ins the step does not read
        for i, a in zip(keep, args, strict=False):
            full[i] = a
        d = pulled([*full, *args[len(keep):len(keep) + nh]])
        acc = args[len(keep) + nh + len(d_seq):]
        out = [d[ns + k] if d[ns + k] is not None else broadcast_to(const(0), inits[k].shape)
               for k in range(nh)]
        out += [d[j] for j in d_seq]
        out += [a + d[ns + nh + i] for a, i in zip(acc, d_cap, strict=True)]
        return out

    init = [broadcast_to(const(0), h.shape) for h in inits]
    init += [broadcast_to(const(0), sequences[j].shape[:TIME_AXIS] + sequences[j].shape[TIME_AXIS + 1:])
             for j in d_seq]
    init += [broadcast_to(const(0), captured[i].shape) for i in d_cap]
    out = scan(step, [flipped[i] for i in keep], init, name=f"{cell.name}_back", arg_names=arg_names)
    result: list[Node | None] = [None] * len(node.args)
    for k in range(nh):
        result[ns + k] = _last_step(out[k], inits[k].shape)
    for j, seq in zip(d_seq, out[nh:nh + len(d_seq)], strict=True):
        result[j] = apply("flip", [seq], axis=TIME_AXIS)
    for i, acc in zip(d_cap, out[nh + len(d_seq):], strict=True):
        result[ns + nh + i] = _last_step(acc, captured[i].shape)
    for i, (m, j) in outside.items():
        adj = _rows(out[nh + d_seq.index(j)])
        result[ns + nh + i] = _rows(flipped[m]).T @ adj if m is not None else adj.sum(axis=0)
    return result


def _previous(h0: Node, h: Node, T) -> Node:
    """The state before each step: the initial state, then the states of all steps but the last."""
    if sympy.sympify(T) == 1:  # a scan of one step: the initial state is all there is
        return _one_step(h0)
    return apply("concat", [_one_step(h0), apply("slice", [h], axis=TIME_AXIS, start=sympy.Integer(0),
                                                 stop=T - 1)], axis=TIME_AXIS)


def _summed_outside(traced: list[Node | None], inputs: list[Node], d_seq: list[int], first: int,
                    captured: Sequence[Node]) -> dict[int, tuple[int | None, int]]:
    """The captured values whose adjoint at a step is p_t^T g_t (p_t a step input, g_t the
    step's adjoint of a sequence: {i: (index of p among the inputs, index of g)}) or
    sum(g_t, axis=0) ({i: (None, index of g)}), read off the step traced over stand-ins. Their
    sum over steps is one product (one sum) over the (B*T)-row stacks of both sequences."""
    adjoints = {traced[j]: j for j in d_seq}
    found = {}
    for i in range(len(captured)):
        d = traced[first + i]
        if d is None or not shapes_equal(d.shape, captured[i].shape):
            continue
        if d.op == "sum" and d.attr("axes") == (0,) and not d.attr("keepdims") and d.args[0] in adjoints:
            found[i] = (None, adjoints[d.args[0]])
        elif (d.op == "matmul" and d.args[1] in adjoints and d.args[0].op == "transpose"
              and d.args[0].args[0] in inputs and d.args[0].args[0].ndim == d.ndim == 2):
            found[i] = (inputs.index(d.args[0].args[0]), adjoints[d.args[1]])
    return found


def _rows(seq: Node) -> Node:
    """A (B, T, n) sequence as the (B*T, n) stack of its steps' rows."""
    return seq.reshape((seq.shape[0] * seq.shape[TIME_AXIS], *seq.shape[TIME_AXIS + 1:]))


def _one_step(h: Node) -> Node:
    """(B, ...) -> (B, 1, ...): a state as a sequence of one step."""
    return h.reshape(h.shape[:TIME_AXIS] + (sympy.Integer(1),) + h.shape[TIME_AXIS:])


def _last_step(seq: Node, shape: Shape) -> Node:
    """The value after the last step of a scan's state sequence, of the state's `shape`."""
    axis = min(TIME_AXIS, len(shape))
    T = seq.shape[axis]
    return apply("slice", [seq], axis=axis, start=T - 1, stop=T).reshape(shape)


def zeros(shape: Shape) -> Node:
    """A tensor of zeros (an initial state)."""
    return broadcast_to(const(0), as_shape(shape))


__all__ = ["Cell", "scan", "scan_vjp", "item", "zeros", "ModelError"]
