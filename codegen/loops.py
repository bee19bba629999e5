"""Lowering a scan (the loop over time) and its VJP (the reverse loop) to Python `for` loops.

The body of each loop is the cell's own program, lowered by the same `Lowering` with its
placeholders bound to loop variables and the values it reads from outside bound to the outer
program's names. Each step's work is a few BLAS products and fused kernels; the state and
residual sequences are written one time step at a time. Lines are written out only when the
module is assembled (kernels get their names last).
"""
from __future__ import annotations

import re

from symgrad.codegen.program import BATCH_MAJOR, Instr, Lowering, Program, atom, is_large
from symgrad.symbolic.graph import Node
from symgrad.symbolic.scan import TIME_AXIS, Cell


def _step(outer: Lowering, roots: dict[str, Node], bound: dict[Node, str], targets: dict[str, str],
          invariant: list[str], transient: set[str]) -> tuple[Program, list[str], dict[str, str]]:
    """The program of one step, its placeholders and outside values bound to names, the lines
    to run before the loop, and the step's temporaries kept across steps (name -> shape text).
    `targets` are the sequence slices results are written into (see Lowering._place_targets);
    a product with the transpose of an `invariant` matrix reads a contiguous copy made once
    before the loop (BLAS is faster on it, every step). When the function has a workspace, a
    temporary the workspace would hold, and that no later step reads (no result carried to the
    next step names it or its memory; `transient` results are read within their step), is one
    array made before the loop and overwritten every step: a fresh (B, 4 n_h) product a step
    is 128 KiB, which glibc hands back to the system when it is freed."""
    inner = Lowering(roots, outer.names, {}, outer.kernels, copy_results=False, targets=targets,
                     dim_names=outer.dim_names, reserved=outer.reserved, own=outer.own,
                     workspace=outer.workspace, every_temporary=outer.every_temporary)
    inner.transient = transient
    inner.var.update(bound)
    inner.taken |= outer.taken | set(bound.values())
    program = inner.run()
    kept = {}
    for ins in program.instrs:
        if ins.scratch:  # written into its own array, made before the loop
            ins.scratch, ins.buffer = False, ins.out
            kept[ins.out] = ins.shape
    outer.dims |= set(program.dims)
    for condition, message in program.requirements.items():
        outer.requirements.setdefault(condition, message)
    outer.taken |= inner.taken
    before, copies = [], {}
    for ins in program.instrs:
        b = ins.args[1] if ins.op == "matmul" else ""
        if b.endswith(".T") and (b in invariant or b[:-2] in invariant):
            if b not in copies:
                base = b[:-2] if b[:-2].isidentifier() else "captured"
                copies[b] = name = _claim(outer, f"{base}_T")
                if outer.workspace:  # the copy is the loop's own: kept across calls like its sequences
                    before += [f'{name} = _scratch(ws, "{name}", {outer._shape(ins.node.args[1].shape)}, dt)',
                               f"np.copyto({name}, {b})"]
                else:
                    before.append(f"{name} = np.ascontiguousarray({b})")
            ins.args[1] = copies[b]
    return program, before, kept


def _body(program: Program) -> list[str]:
    from symgrad.codegen.emit import statements  # the same writer as whole functions

    return statements(program, {})


# The sequences a loop writes (states, residuals, adjoints of sequences) are stored step-major,
# (T, B, ...), so that each step's slice is one contiguous block: kernels writing into or
# reading from slices strided by T run up to twice as slowly. The rest of the program sees
# them batch-major, as the model defines them, through the free view BATCH_MAJOR.


REVERSED = f"[{', '.join([':'] * TIME_AXIS + ['::-1'])}]"  # how a sequence reversed in time prints


def _at(seq: str, t: str, T: str) -> str:
    """Step t of a sequence: a loop's own array (step-major) or any other (batch-major). Of a
    sequence reversed in time, step T-1-t of the sequence itself: one index a step where the
    reversed view cost three (0.66 us against 0.05, for every sequence an HVP's loops read)."""
    step = re.fullmatch(r"([A-Za-z_]\w*)(?: - (\d+))?", t)
    if seq.endswith(REVERSED) and step:
        name, k = step[1], 1 - int(step[2] or 0)  # T - 1 - (name - j) = T - (1 - j) - name
        back = f"{int(T) - k} - {name}" if T.isdigit() else f"{T} - {k} - {name}" if k else f"{T} - {name}"
        return _at(seq.removesuffix(REVERSED), back, T)
    if seq.endswith(BATCH_MAJOR):
        return f"{seq.removesuffix(BATCH_MAJOR)}[{t}]"
    return f"{seq}[{', '.join([':'] * TIME_AXIS + [t])}]"


def _steps_first(seq: str) -> str:
    """A sequence with its step axis first (a view)."""
    return seq.removesuffix(BATCH_MAJOR) if seq.endswith(BATCH_MAJOR) else f"{atom(seq)}{BATCH_MAJOR}"


def _step_major(outer: Lowering, shape) -> str:
    return outer._shape((shape[TIME_AXIS], *shape[:TIME_AXIS], *shape[TIME_AXIS + 1:]))


def _claim(outer: Lowering, base: str) -> str:
    name = outer.fresh(base)
    outer.taken.add(name)
    return name


def _locals(outer: Lowering, placeholders) -> dict[Node, str]:
    """The loop-body name of each placeholder (x_t, h_prev, ...): its own, unless the model
    uses that name (a parameter `h_prev`) or the generated code does, then a fresh one."""
    return {p: p.name if p.name not in outer.reserved else _claim(outer, p.name) for p in placeholders}


def lower_loop(outer: Lowering, node: Node) -> Instr:
    cell: Cell = node.attr("cell")
    args = [outer.ref(a) for a in node.args]
    build = _forward if node.op == "scan" else _backward
    ins = Instr(node.op, node, _claim(outer, f"{cell.name}_{node.op}"), args, eqs=outer._eqs(node, []))
    ins.render, ins.allocates = build(outer, node, cell, args, ins)
    return ins


def _allocations(ins: Instr, skip: set[str] = frozenset()) -> list[str]:
    """The loop's arrays (but `skip`): from the call's workspace when the plan put them there."""
    lines = []
    for name, (shape, zeroed, _) in ins.allocates.items():
        if name in skip:
            continue
        if name in ins.scratch_names:
            lines.append(f'{name} = _scratch(ws, "{name}", {shape}, dt)')
            lines += [f"{name}.fill(0)"] if zeroed else []
        else:
            lines.append(f"{name} = {'np.zeros' if zeroed else 'np.empty'}({shape}, dtype=dt)")
    return lines


def _outputs(outer: Lowering, node: Node, bases: list[str], sequences: int) -> list[str | None]:
    """Names of the loop's output arrays (an equation's name where the model gave one); None
    for an output nothing reads. The first `sequences` are stored step-major."""
    names = []
    for k, base in enumerate(bases):
        item = next((c for c in outer.consumers.get(node, []) if c.op == "item" and c.attr("index") == k),
                    None)
        given = outer.names.get(item) if item is not None else None
        if given and outer.own.get(item) == given and given not in outer.taken:
            name = given  # the model's own name for the sequence
            outer.taken.add(name)
        else:
            name = _claim(outer, given if given and given.isidentifier() else base)
        if item is not None:
            outer.var[item] = name + BATCH_MAJOR if k < sequences else name
        names.append(name if item is not None else None)
    return names


def _forward(outer: Lowering, node: Node, cell: Cell, args: list[str], ins: Instr):
    ns, nh = len(cell.seq_ph), len(cell.state_ph)
    shapes = node.attr("shapes")
    T = outer._dim_text(shapes[0][TIME_AXIS])
    t = "t" if not outer._unavailable("t") else _claim(outer, "step")
    bases = [f"{p.name.removesuffix('_prev')}_seq" for p in cell.state_ph]
    bases += [f"{r.name.removesuffix('_t')}_seq" for r in cell.res_ph]
    outs = _outputs(outer, node, bases, len(bases))
    outs = [o or _claim(outer, f"{cell.name}_unused{k}") for k, o in enumerate(outs)]  # states are kept
    ph = _locals(outer, (*cell.seq_ph, *cell.state_ph))
    bound = dict(ph)
    bound |= dict(zip(cell.captured, args[ns + nh:], strict=True))
    roots = {f"s{k}": o for k, o in enumerate(cell.outs)} | {f"r{k}": r for k, r in enumerate(cell.residuals)}
    targets = {key: f"{o}[{t}]" for key, o in zip(roots, outs, strict=True)}
    carried = {f"s{k}" for k, p in enumerate(cell.state_ph)}  # the next step reads the states
    program, before, kept = _step(outer, roots, bound, targets, args[ns + nh:], set(roots) - carried)
    allocates = {o: (_step_major(outer, s), False, is_large(s)) for o, s in zip(outs, shapes, strict=True)}
    allocates |= {name: (shape, False, True) for name, shape in kept.items()}

    def render() -> list[str]:
        results = program.results
        allocations = _allocations(ins)
        lines = [f"# {cell.name}: the loop over the {T} steps of axis {TIME_AXIS}, keeping every "
                 "state (and residual) for back-propagation through time"]
        if not T.isdigit():
            message = f"scan {cell.name}: the time axis has length 0"
            lines += [f"if {T} == 0:", f'    raise ValueError("{message}")']
        lines += allocations + before
        lines += [f"{ph[p]} = {a}" for p, a in zip(cell.state_ph, args[ns:ns + nh], strict=True)
                  if p in program.leaves]
        lines.append(f"for {t} in range({T}):")
        inner = [f"{ph[p]} = {_at(a, t, T)}" for p, a in zip(cell.seq_ph, args[:ns], strict=True)]
        inner += _body(program)
        inner += [f"{target} = {results[key]}" for key, target in targets.items()
                  if key not in program.placed]
        inner += [f"{ph[p]} = {targets[key] if key in program.placed else results[key]}"
                  for p, key in zip(cell.state_ph, [f"s{k}" for k in range(nh)], strict=True)
                  if p in program.leaves]  # a per-step output no step reads is not carried
        return lines + ["    " + line for line in inner]

    return render, allocates


def _backward(outer: Lowering, node: Node, cell: Cell, args: list[str], ins: Instr):
    ns, nh, nr = len(cell.seq_ph), len(cell.state_ph), len(cell.residuals)
    cts, residuals = args[:nh], args[nh:nh + nr]
    states, rest = args[nh + nr:2 * nh + nr], args[2 * nh + nr:]
    sequences, inits, rest = rest[:ns], rest[ns:ns + nh], rest[ns + nh:]
    nb = len(cell.back_captured)
    back_captured, res_cts = rest[:nb], rest[nb:]  # adjoints of residuals: an HVP's second pass
    fwd_args = node.args[nh + nr].args[0].args  # the arguments of the scan this loop reverses
    shapes = node.attr("shapes")
    T = outer._dim_text(fwd_args[0].shape[TIME_AXIS])
    t = "t" if not outer._unavailable("t") else _claim(outer, "step")
    names = [f"d{p.name.removesuffix('_t')}_seq" for p in cell.seq_ph]
    names += [f"d{p.name.removesuffix('_prev')}0" for p in cell.state_ph]
    names += [_grad_name(outer, c, k) for k, c in enumerate(fwd_args[ns + nh:])]
    outs = _outputs(outer, node, names, ns)
    carries = [_claim(outer, f"carry_{p.name.removesuffix('_prev')}") for p in cell.state_ph]
    ph = _locals(outer, (*cell.seq_ph, *cell.state_ph, *cell.res_ph, *cell.ct_ph, *cell.ctr_ph,
                         *(p for p in cell.out_ph if p is not None)))
    bound = dict(ph)
    bound |= dict(zip(cell.back_captured, back_captured, strict=True))
    wanted = [*cell.d_seq, *cell.d_state, *cell.d_captured]
    roots = {f"d{k}": d for k, d in enumerate(wanted) if d is not None and (outs[k] or ns <= k < ns + nh)}
    after = {}  # captured adjoints summed over time by one product after the loop, not step by step
    zero_inits = [_is_zero(h0) for h0 in fwd_args[ns:ns + nh]]
    zero_cts = [_is_zero(ct) for ct in node.args[:nh]]
    for k, d in enumerate(cell.d_captured):
        found = _summed_after_loop(d, cell, outs, sequences, states, inits, zero_inits, zero_cts)
        if found is not None and outs[ns + nh + k] is not None:
            after[ns + nh + k] = found
            roots.pop(f"d{ns + nh + k}", None)
    targets = {f"d{k}": f"{outs[k]}[{t}]" for k in range(ns) if f"d{k}" in roots}
    carried = {f"d{ns + k}" for k in range(nh)}  # the carries: the next step reads them
    program, before, kept = _step(outer, roots, bound, targets, back_captured, set(roots) - carried)
    # an initial state's adjoint is the last carry, allocated with the carries
    allocates = {o: (_step_major(outer, s) if k < ns else outer._shape(s), k >= ns, is_large(s))
                 for k, (o, s) in enumerate(zip(outs, shapes, strict=True))
                 if o is not None and not ns <= k < ns + nh and k not in after}
    allocates |= {name: (shape, False, True) for name, shape in kept.items()}
    # a product summed after the loop goes into the workspace where the plan puts it (an HVP's
    # intermediate: a fresh (4 n_h, n_h) result would be handed back to the system each call)
    summed = {outs[k]: (outer._shape(shapes[k]), False, outer.every_temporary or is_large(shapes[k]))
              for k, found in after.items() if isinstance(found, tuple)}
    allocates |= summed
    # a state the step does not read (an HVP's second pass carries the first pass's adjoint of
    # the gate inputs, which no step reads back) has no adjoint to carry: its carry stays zero,
    # so each step takes its cotangent as it is, without adding zeros to a fresh array
    zero = [f"d{ns + k}" not in program.results for k in range(nh)]
    needed = [not z or outs[ns + k] is not None or _is_zero(ct)
              for k, (z, ct) in enumerate(zip(zero, node.args[:nh], strict=True))]
    # the carries end as the initial states' adjoints: never in the workspace
    carried = [f"{c} = np.zeros({outer._shape(p.shape)}, dtype=dt)"
               for c, p, keep in zip(carries, cell.state_ph, needed, strict=True) if keep]

    def render() -> list[str]:
        results = program.results
        fresh = {name for name in summed if name not in ins.scratch_names}  # assigned, not written into
        allocations = _allocations(ins, skip=fresh) + carried
        lines = [f"# {cell.name}: back-propagation through time, the reverse loop over the {T} steps"]
        lines += allocations + before
        lines.append(f"for {t} in range({T} - 1, -1, -1):")
        inner = [f"{ph[p]} = {_at(a, t, T)}" for p, a in zip(cell.seq_ph, sequences, strict=True)]
        inner += [f"{ph[p]} = {_at(s, f'{t} - 1', T)} if {t} else {h0}"
                  for p, s, h0 in zip(cell.state_ph, states, inits, strict=True) if p in program.leaves]
        inner += [f"{ph[p]} = {_at(s, t, T)}" for p, s in zip(cell.out_ph, states, strict=True)
                  if p is not None and p in program.leaves]  # one summed after the loop is not read
        inner += [f"{ph[p]} = {_at(r, t, T)}" for p, r in zip(cell.res_ph, residuals, strict=True)]
        inner += [f"{ph[p]} = {_at(c, t, T)}" for p, c in zip(cell.ctr_ph, res_cts, strict=True)]
        for p, c, carry, ct, keep in zip(cell.ct_ph, cts, carries, node.args[:nh], needed, strict=True):
            if _is_zero(ct):
                inner.append(f"{ph[p]} = {carry}")
            else:
                inner.append(f"{ph[p]} = {_at(c, t, T)} + {carry}" if keep else f"{ph[p]} = {_at(c, t, T)}")
        inner += _body(program)
        for k in range(ns):
            if outs[k] is not None and f"d{k}" not in program.placed:
                inner.append(f"{outs[k]}[{t}] = {results.get(f'd{k}', '0.0')}")
        for k, carry in enumerate(carries):
            value = results.get(f"d{ns + k}")
            if value:
                inner.append(f"{carry} = {value}")
        for k in range(len(cell.d_captured)):
            acc, value = outs[ns + nh + k], results.get(f"d{ns + nh + k}")
            if acc is not None and value:
                inner.append(f"np.add({acc}, {value}, out={acc})")
        lines += ["    " + line for line in inner]
        lines += [f"{outs[ns + k]} = {carry}" for k, carry in enumerate(carries) if outs[ns + k] is not None]
        return lines + [_after_line(outs[k], found, outs[k] not in fresh) for k, found in after.items()]

    return render, allocates


def _is_zero(n: Node) -> bool:
    return n.op == "broadcast_to" and n.args[0].op == "const" and n.args[0].attr("value") == 0


def _summed_after_loop(d: Node | None, cell: Cell, outs: list[str | None], sequences: list[str],
                       states: list[str], inits: list[str], zero_inits: list[bool],
                       zero_cts: list[bool]) -> str | tuple[str, str] | None:
    """A captured value's adjoint, summed over all steps at once, when each step's part is a
    product (or a batch sum) of a stored sequence's adjoint: sum_t a_t^T g_t is one product of
    the (B*T)-row stacks, and sum_t sum_b g_t one column sum. None when it is not of that form.
    With a zero initial state, h_{t-1}^T g_t is the stored states but the last times the
    adjoints but the first, read in place (two views, one GEMM): the stack with the zero state
    in front was a fresh (T, B, n) copy and its product a tensordot (the LSTM's W_h gradient:
    596 -> 1xx us in float32, its page faults gone). A carried adjoint with no incoming
    sequence of its own, whose value is also stored, is that stored sequence one step later
    (zero at the loop's first step, T - 1): an HVP's second backward loop sums the recurrent
    weight's adjoint so, one GEMM instead of a product and an addition a step."""
    if d is None:
        return None
    stored = {g: outs[j] for j, g in enumerate(cell.d_seq) if g is not None and outs[j] is not None}
    if d.op == "sum" and d.attr("axes") == (0,) and not d.attr("keepdims") and d.args[0] in stored:
        return f"_colsum({stored[d.args[0]]})"
    if d.op != "matmul" or d.args[0].op != "transpose":
        return None
    a = d.args[0].args[0]
    if d.args[1] not in stored:
        return _carry_summed(a, d.args[1], cell, stored, sequences, states, zero_cts)
    if a in cell.seq_ph:  # x_t: the sequence itself
        rows = _steps_first(sequences[cell.seq_ph.index(a)])
    elif a in cell.state_ph:  # h_{t-1}: the states shifted one step, the initial state first
        i = cell.state_ph.index(a)
        if zero_inits[i] and a.ndim == 2 and d.args[1].ndim == 2:
            return _rows(_steps_first(states[i]), ":-1"), _rows(stored[d.args[1]], "1:")
        rows = f"np.concatenate([{atom(inits[i])}[None], {_steps_first(states[i])}[:-1]], axis=0, dtype=dt)"
    else:
        return None
    return f"np.tensordot({rows}, {stored[d.args[1]]}, axes=([0, 1], [0, 1]))"


def _carry_summed(a: Node, g: Node, cell: Cell, stored: dict[Node, str], sequences: list[str],
                  states: list[str], zero_cts: list[bool]) -> tuple[str, str] | None:
    """sum_t a_t^T c_t for the carry c of a state with no incoming adjoint sequence (the loop
    starts it at zero and sets it to the step's adjoint of that state): when that adjoint is
    also a stored sequence S, c_t = S[t + 1] for t < T - 1 and 0 at t = T - 1, so the sum is
    a[:-1]^T S[1:] over the stacked rows. None when it is not of that form."""
    if g not in cell.ct_ph or a.ndim != 2 or g.ndim != 2:
        return None
    k = cell.ct_ph.index(g)
    if not zero_cts[k] or cell.d_state[k] not in stored:
        return None
    if a in cell.seq_ph:
        rows = _steps_first(sequences[cell.seq_ph.index(a)])
    elif a in cell.out_ph:
        rows = _steps_first(states[cell.out_ph.index(a)])
    else:
        return None
    return _rows(rows, ":-1"), _rows(stored[cell.d_state[k]], "1:")


def _rows(seq: str, steps: str) -> str:
    """Steps `steps` of a step-major sequence as one stack of rows."""
    return f"{seq}[{steps}].reshape(-1, {seq}.shape[-1])"


def _after_line(name: str, found: str | tuple[str, str], into: bool) -> str:
    """The line summing a captured value's adjoint after the loop: a text, or (a, g) for
    a^T g, written into the array made before the loop when `into`."""
    if isinstance(found, str):
        return f"{name} = {found}"
    a, g = found
    return f"np.matmul({a}.T, {g}, out={name})" if into else f"{name} = {a}.T.dot({g})"


def _grad_name(outer: Lowering, captured: Node, k: int) -> str:
    base = outer.names.get(captured)
    return f"dL_d{base}" if base and base.isidentifier() else f"d_captured{k + 1}"
