"""Lowering: from graph nodes to a straight-line program of assignments.

The program computes a set of named results (outputs, the loss, gradients). Lowering decides:

* which elementwise nodes fuse into one kernel (a node used once, by another elementwise node);
* which nodes are free views written inline (transpose -> `W.T`, reshape, broadcast), and which
  broadcasts vanish into a kernel's own broadcasting;
* where each result lives: a kernel writes in place into an operand that dies at that
  instruction when the kernel allows it, else into a buffer a dead value left behind, else into
  a new one. Returned arrays are never reused and never alias a parameter or an input;
* which large temporaries (images, patch matrices, sequences: see `is_large`) live in a
  workspace kept across calls instead of fresh memory.

Every node is computed once (nodes are hash-consed), so a forward value the backward pass
needs is kept, not recomputed.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy
from symgrad.codegen.kernels import OPERAND_NAMES, InlineNumpy, Kernel, build_kernel, checked_name
from symgrad.codegen.numba_kernels import operand_layout
from symgrad.symbolic.errors import ModelError, RuleError
from symgrad.symbolic.graph import ARG, Node, topological
from symgrad.symbolic.shapes import Shape, shapes_equal
from sympy.printing.str import StrPrinter

_VIEW_OPS = ("transpose", "reshape", "broadcast_to", "slice", "flip")
_CHECKED_OPS = ("inv", "solve", "cholesky")  # their errors (a singular matrix) name the equation
_LOOP_OPS = ("scan", "scan_vjp")  # lowered by codegen.loops into a loop over time
_HEAVY = (sympy.exp, sympy.log, sympy.tanh)
# the operations whose lowerings can write into a workspace array
_WORKSPACE_OPS = ("ew", "matmul", "im2col", "col2im", "col2im_matmul", "max", "sum", "pad", "concat", "rows")
# The sequences a loop writes are stored step-major, (T, B, ...), and read by the rest of the
# program batch-major, as the model defines them, through this view (see codegen.loops).
BATCH_MAJOR = ".swapaxes(0, 1)"
WORKSPACE_MIN = 256  # elements per batch row (the fixed dims' product) that make a value large


@dataclass
class Instr:
    """`out = <op>(args)`: one line (or a few) of generated code."""

    op: str  # key of the lowering table, codegen.lowering.LOWERINGS
    node: Node
    out: str
    args: list[str]  # operand expressions
    kernel: Kernel | None = None
    buffer: str | None = None  # write into this dead value's memory (out=) instead of allocating
    eqs: tuple[int, ...] = ()
    inline: str | None = None  # scalar elementwise: the numpy expression
    shape: str = ""  # the output's shape as Python text, for allocating it
    discard: bool = False  # the value lands in a leaf in place and no later line names it
    # zero padding: widths before and after, and where the padded operand ends, as Python text
    pad: tuple[str, str, str] = ("0", "0", "0")
    render: Callable[[], list[str]] | None = None  # a loop's lines, written once kernels have names
    scratch: bool = False  # the output lives in the call's workspace (never returned)
    # a loop's arrays: name -> (shape text, zeroed, large); `scratch_names` live in the workspace
    allocates: dict[str, tuple[str, bool, bool]] = field(default_factory=dict)
    scratch_names: set[str] = field(default_factory=set)
    placed: bool = False  # `buffer` is a target outside this program (a slice of a loop's sequence)
    order: str = ""  # an identity matrix's order, or the shape `rows` copies from, as Python text
    where: str = ""  # a linear-algebra operation's label for its errors, as a Python string literal
    rows: int = 0  # an elementwise kernel over a bias row runs on (-1, rows) views (see _row_width)
    also: str = ""  # a second value the line computes (a softmax cross-entropy's adjoint), its name
    also_node: Node | None = None
    ones: str = ""  # a column sum's vector of ones, a local (`_ones_B`), and its dim
    ones_rows: str = ""
    ones_bind: bool = False  # this line binds it (the function's first such sum)


@dataclass(frozen=True)
class SoftmaxXent:
    """A softmax cross-entropy and its adjoint, computed by one helper (`_softmax_xent`): the
    full sum `total` of y * log_softmax(z) and the node `adjoint`, scale * (sum(y, axis=1) *
    softmax(z) - y), which is what reverse mode through the log-softmax makes of the loss
    -scale * total. log_softmax(z) itself is never stored; `absorbed` are the nodes the helper
    computes on the way (the log-softmax, the row sums of y), whose lines disappear."""

    total: Node  # the dotted sum of y * log_softmax(z)
    adjoint: Node
    logits: Node
    target: Node
    scale: sympy.Expr
    absorbed: frozenset[Node]


@dataclass
class Program:
    instrs: list[Instr]
    results: dict[str, str]  # result key -> expression returning it
    leaves: list[Node]  # the parameters, inputs, states and hypers it reads
    dims: list[str]  # dim names it needs bound
    copies: list[tuple[str, str]] = field(default_factory=list)  # (leaf, value) written at the end
    placed: set[str] = field(default_factory=set)  # result keys computed straight into their targets
    # bounds that hold for some dim values only, checked once the dims are bound: condition -> message
    requirements: dict[str, str] = field(default_factory=dict)

    @property
    def uses_workspace(self) -> bool:
        return any(ins.scratch or ins.scratch_names for ins in self.instrs)


def _dim_names(expr: sympy.Expr) -> set[str]:
    return {s.name for s in expr.free_symbols if s.is_integer and s.is_positive}


class _DimPrinter(StrPrinter):
    """A dim expression in Python's integer arithmetic: floor(p/q) as (p)//q; only the model's
    dims are printed as names."""

    def __init__(self, names: frozenset[str]):
        super().__init__()
        self.names = names

    def _print_Symbol(self, expr):
        return checked_name(expr.name, self.names)

    def _print_floor(self, expr):
        num, den = sympy.fraction(sympy.together(expr.args[0]))
        if not (den.is_Integer and den > 0):
            raise ModelError(f"generated code: the dim {expr} divides by {den}, not by a number")
        return f"({self._print(sympy.expand(num))})//{int(den)}"

    def _print_Rational(self, expr):
        raise ModelError(f"generated code: a dim holds the fraction {expr}")

    def _print_Basic(self, expr):
        raise ModelError(f"generated code: a dim holds {type(expr).__name__}")


def _proved(expr: sympy.Expr) -> bool:
    """expr >= 0 for every positive integer value of its dims."""
    return sympy.sympify(expr).is_nonnegative is True


class Lowering:
    def __init__(self, roots: dict[str, Node], names: dict[Node, str], owners: dict[Node, int],
                 kernels: dict[str, Kernel], stores: dict[str, str] | None = None,
                 copy_results: bool = True, workspace: bool = False, targets: dict[str, str] | None = None,
                 dim_names: frozenset[str] = frozenset(), reserved: frozenset[str] = frozenset(),
                 own: dict[Node, str] | None = None, every_temporary: bool = False):
        self.roots = roots
        self.dim_names = dim_names  # the model's dims: the only symbols a shape or constant may name
        # the model's names and the generated code's fixed locals: a name the code makes up
        # (t1, dL_dz, z_2, carry_h, ...) never takes one; only a node the model itself named
        # (`own`: equations and their training/evaluation forms) is written by its name
        self.reserved = reserved
        self.own = own or {}
        self.targets = targets or {}  # result key -> the array (a sequence's step) it is written into
        # a function's top level, or a loop body whose outer function has one: there the body's
        # temporaries are kept across steps in arrays made before the loop (codegen.loops)
        self.workspace = workspace
        self.transient: set[str] = set()  # result keys read within the same step only (a loop body)
        # an HVP's: every temporary of two axes or more, not only the large ones (see `temporary`)
        self.every_temporary = every_temporary
        self.copy_results = copy_results  # a loop body's results are copied by the loop itself
        self.stores = stores or {}  # result key -> the leaf its value overwrites in place
        self.names = names
        self.owners = owners
        self.kernels = kernels  # shared across programs of one module: identical kernels merge
        self._analyse(topological(roots.values()))
        self.var: dict[Node, str] = {}
        self.taken: set[str] = set()
        self._next_t = 1  # the lowest t<k> that may be free
        self.dims: set[str] = set()
        self.requirements: dict[str, str] = {}  # see Program.requirements and _require_fit
        self.row_ones: set[str] = set()  # the `_ones_<dim>` locals bound so far (see _row_ones)

    def _analyse(self, order: list[Node]) -> None:
        """Consumers, fusion and views of the nodes the program computes."""
        self.order = order
        self.consumers: dict[Node, list[Node]] = {n: [] for n in order}
        for n in order:
            for a in dict.fromkeys(n.args):
                if a in self.consumers:
                    self.consumers[a].append(n)
        self.pinned = set(self.roots.values())
        # sum(a * b) over every axis is one BLAS dot product, the product never stored
        self.dotted = {n: n.args[0] for n in order if self._dot_sum(n)}
        self.fused = {n for n in order if self._fuses(n)} | set(self.dotted.values())
        # col2im(G @ K) scatters one product per kernel offset: the patch matrix is never stored
        self.folded = {n.args[0] for n in order if n.op == "col2im" and self._folds(n.args[0], n)}
        self.transparent = {n for n in order if self._transparent(n)}
        # a softmax cross-entropy with its adjoint: one helper call at the first of the two
        at = {n: k for k, n in enumerate(order)}
        self.xents: dict[Node, SoftmaxXent] = {}
        for total, product in self.dotted.items():
            x = self._softmax_xent(total, product)
            if x is not None:
                self.xents[min(x.total, x.adjoint, key=at.__getitem__)] = x
        self.absorbed = {n for x in self.xents.values() for n in x.absorbed}

    # -- classification -------------------------------------------------------------------
    def _fuses(self, n: Node) -> bool:
        if n.op != "ew" or n in self.pinned or len(self.consumers[n]) != 1 or not n.shape:
            return False
        c = self.consumers[n][0]
        if c.op != "ew" or c in self.dotted.values():  # a dot product reads stored operands
            return False
        cheap = not any(isinstance(e, _HEAVY) for e in sympy.preorder_traversal(n.attr("expr")))
        return shapes_equal(n.shape, c.shape) or cheap  # never repeat a transcendental per row

    def _named(self, instr: Instr) -> Instr:
        self.var[instr.node] = instr.out
        return instr

    def _dot_sum(self, n: Node) -> bool:
        if n.op != "sum" or len(n.attr("axes")) != n.args[0].ndim or n.attr("keepdims"):
            return False
        e = n.args[0]
        return (e.op == "ew" and e.attr("expr") == ARG[0] * ARG[1] and e not in self.pinned
                and self.consumers.get(e) == [n] and all(shapes_equal(a.shape, e.shape) for a in e.args))

    def _folds(self, m: Node, into: Node) -> bool:
        return (m.op == "matmul" and m not in self.pinned and self.consumers.get(m) == [into]
                and m.args[0].ndim > 2 and m.args[1].ndim == 2)

    def _softmax_xent(self, total: Node, product: Node) -> SoftmaxXent | None:
        """The cross-entropy pattern behind a dotted sum(y * ls), ls = log_softmax(z) along the
        last axis of a matrix: ls read only there and by one kernel (through the nodes fused
        into it) whose expression is scale * (sum(y, axis=1, keepdims) * exp(ls) - y), the
        row sums read by that kernel only, and scale a number or an expression of dims."""
        ls = next((a for a in product.args if a.op == "log_softmax"), None)
        if ls is None or ls.ndim != 2 or ls.attr("axis") != 1 or ls in self.pinned:
            return None
        y = product.args[1] if product.args[0] is ls else product.args[0]
        if y is ls or not shapes_equal(y.shape, ls.shape):
            return None
        readers = [c for c in self.consumers[ls] if c is not product]
        if not readers:
            return None
        ends = set()
        for c in readers:  # follow the fused chain to the kernel that computes it
            while c in self.fused and c not in self.dotted.values():
                c = self.consumers[c][0]
            ends.add(c)
        if len(ends) != 1:
            return None
        (adjoint,) = ends
        if adjoint.op != "ew" or adjoint in self.pinned or not shapes_equal(adjoint.shape, ls.shape):
            return None
        symbols: dict[Node, sympy.Symbol] = {}
        parts: list[Node] = []
        expr = self._graph_expr(adjoint, symbols, parts)
        sums = [n for n in symbols if n.op == "sum" and n.args[0] is y and n.attr("axes") == (1,)
                and n.attr("keepdims") and n not in self.pinned]
        if len(sums) != 1 or set(symbols) != {ls, y, sums[0]}:
            return None
        inside = {adjoint, *parts}
        if not set(readers) <= inside or not set(self.consumers[sums[0]]) <= inside:
            return None
        scale = sympy.cancel(expr / (symbols[sums[0]] * sympy.exp(symbols[ls]) - symbols[y]))
        if (scale.has(*symbols.values()) or not scale.is_finite or scale == 0
                or any(s.name not in self.dim_names for s in scale.free_symbols)):
            return None
        return SoftmaxXent(total, adjoint, ls.args[0], y, scale, frozenset({ls, sums[0]}))

    def _graph_expr(self, n: Node, symbols: dict[Node, sympy.Symbol], parts: list[Node]) -> sympy.Expr:
        """n's expression with the nodes fused into it inlined and every other argument a
        symbol of its own (`symbols`); `parts` collects the fused nodes."""
        subs = {}
        for i, a in enumerate(n.args):
            if a in self.fused and a not in self.dotted.values():
                parts.append(a)
                subs[ARG[i]] = self._graph_expr(a, symbols, parts)
            else:
                subs[ARG[i]] = symbols.setdefault(a, sympy.Dummy(real=True))
        return n.attr("expr").xreplace(subs)

    def _transparent(self, n: Node) -> bool:
        return (n.op == "broadcast_to" and n not in self.pinned and bool(self.consumers[n])
                and all(c.op == "ew" and c.shape for c in self.consumers[n]))

    # -- naming -----------------------------------------------------------------------------
    def _name(self, n: Node) -> str:
        base = self.names.get(n)
        if base is None or not base.isidentifier():
            k = self._next_t  # every t1..t{k-1} is taken (or reserved) already: search on from there
            while self._unavailable(f"t{k}"):
                k += 1
            self._next_t = k
            name = f"t{k}"
        elif self.own.get(n) == base and base not in self.taken:
            name = base  # the model's own name for this value
        else:
            name = self.fresh(base)
        self.taken.add(name)
        return name

    def _unavailable(self, name: str) -> bool:
        return name in self.taken or name in self.reserved

    def fresh(self, base: str) -> str:
        """`base`, or `base_2`, `base_3`, ...: the first that is neither taken nor reserved."""
        name, k = base, 2
        while self._unavailable(name):
            name, k = f"{base}_{k}", k + 1
        return name

    # -- operand text -----------------------------------------------------------------------
    def ref(self, n: Node) -> str:
        """Python text that evaluates node n (already computed, or a free view of one)."""
        if n in self.var:
            return self.var[n]
        if n.op == "const":
            value = n.attr("value")
            self.dims |= _dim_names(value)
            return InlineNumpy(self.dim_names).doprint(value)
        if n in self.transparent:
            return self.ref(n.args[0])
        if n.op == "transpose":
            base = self._atom(n.args[0])
            perm = n.attr("perm")
            return f"{base}.T" if len(perm) == 2 else f"{base}.transpose{perm}"
        if n.op == "reshape":
            return f"{self._atom(n.args[0])}.reshape{self._shape(n.shape)}"
        if n.op == "broadcast_to":
            return f"np.broadcast_to({self.ref(n.args[0])}, {self._shape(n.shape)})"
        if n.op == "flip":  # a reversed basic slice: np.flip costs 2.6 us a call in Python, this 0.2
            axis = n.attr("axis") % len(n.shape)
            return f"{self._atom(n.args[0])}[{', '.join([':'] * axis + ['::-1'])}]"
        if n.op == "slice":
            start, stop = (self._dim_text(n.attr(k)) for k in ("start", "stop"))
            view = f"{self._atom(n.args[0])}[{', '.join([':'] * n.attr('axis') + [f'{start}:{stop}'])}]"
            self._require_fit(n, view)
            return view
        raise RuleError(f"internal: node {n.op} used before it was computed")

    def _atom(self, n: Node) -> str:
        return atom(self.ref(n))

    def _dim_text(self, d, spaced: bool = False) -> str:
        """Python text of a dim expression (`B`, `T - 1`, `(H - 3)//2 + 1`); registers the dims it
        needs. A size that is a whole number for some dims only (`k/2`, a split of k in two) is
        an exact integer division, checked at the function's entry."""
        d = d if isinstance(d, sympy.Expr) else sympy.Integer(d)
        for s in d.free_symbols:
            checked_name(s.name, self.dim_names)
        for number in d.atoms(sympy.Number):
            if not number.is_Rational:
                raise ModelError(f"generated code: the dim {d} holds the number {number}, not a rational")
        self.dims |= _dim_names(d)
        if d.is_Integer:
            return str(int(d))
        num, den = sympy.fraction(sympy.together(d))
        if den == 1 and not d.has(sympy.floor):
            return str(d) if spaced else str(d).replace(" ", "")
        if not den.is_Integer:
            raise ModelError(f"generated code: the dim {d} divides by {den}, not by a number")
        text = _DimPrinter(self.dim_names).doprint(num)
        if den == 1:
            return text
        values = ", ".join(f"{k} = {{{k}}}" for k in sorted(_dim_names(d)))
        message = f"the size {sympy.sstr(d)} must be a whole number; here {values}"
        if not re.fullmatch(r"[\w\s(),./*+=;-]*", message.replace("{", "").replace("}", "")):
            raise RuleError(f"internal: unexpected text in the check of {d}")
        self.requirements.setdefault(f"({text}) % {den} == 0", message)
        return f"({text})//{den}"

    def _require_fit(self, n: Node, view: str) -> None:
        """A slice whose bounds fit its axis for some dim values only (`take(x, 1, 3, k - 1)`)
        gets a check at the function's entry: numpy would silently clip such a slice, or read
        a negative start from the end, and fail later with a message about broadcasting."""
        size = n.args[0].shape[n.attr("axis")]
        start, stop = (sympy.sympify(n.attr(k)) for k in ("start", "stop"))
        if all(_proved(e) for e in (start, stop - start - 1, size - stop)):
            return
        texts = [self._dim_text(d) for d in (start, stop, size)]
        condition = f"0 <= {texts[0]} < {texts[1]} <= {texts[2]}"
        dims = sorted(_dim_names(start) | _dim_names(stop) | _dim_names(size))
        values = ", ".join(f"{d} = {{{d}}}" for d in dims)
        at = [str(self.owners[n])] if n in self.owners else []
        where = f" (eq. {at[0]})" if at else ""
        message = f"take {view}{where} needs {condition}"
        if not re.fullmatch(r"[\w\s:,\[\]().<=+*/-]*", message):  # validated names, dims and ints only
            raise RuleError(f"internal: unexpected text in the check of {view!r}")
        self.requirements.setdefault(condition, f"{message}; here {values}")

    def _shape(self, shape: Shape) -> str:
        """Python text of a shape tuple, e.g. `(B, n_h1)`; registers the dims it needs."""
        parts = []
        for d in shape:
            parts.append(self._dim_text(d, spaced=True))
        return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"

    # -- the program ------------------------------------------------------------------------
    def run(self) -> Program:
        from symgrad.codegen.loops import lower_loop
        from symgrad.codegen.lowering import LOWERINGS

        if self.var:  # values bound from outside (a loop body): do not look behind them
            self._analyse(topological(self.roots.values(), stop=set(self.var)))

        leaves = [n for n in self.order if n.is_leaf and n.op != "const"]
        for leaf in leaves:
            self.var.setdefault(leaf, leaf.name)
            self.taken.add(self.var[leaf])
        instrs: list[Instr] = []
        for n in self.order:
            if n.op == "reshape" and self.workspace and n not in self.var and self._strided_rows(n):
                instrs.append(self._named(Instr("rows", n, self._name(n), [self.ref(n.args[0])],
                                                eqs=self._eqs(n, []), order=self._shape(n.args[0].shape))))
                continue
            if n in self.var or n.is_leaf or n in self.fused or n in self.folded or n.op in _VIEW_OPS \
                    or n.op == "item" or n in self.absorbed:
                continue  # bound already, fused into a kernel, a view written inline, or a loop's output
            if n.op in _LOOP_OPS:
                instrs.append(lower_loop(self, n))
                continue
            if n.op not in LOWERINGS:
                raise RuleError(f"no lowering for operation {n.op!r}")
            ordered = self._rows_in_memory_order(n)
            if ordered is not None:
                copies, args = ordered
                instrs += copies
                instrs.append(self._named(Instr("matmul", n, self._name(n), args, eqs=self._eqs(n, []))))
                continue
            instrs.append(self._instr(n))
        results = {}
        roots = list(self.roots.values())
        for key, n in self.roots.items():
            text = self.ref(n)
            base = n
            while base.op in _VIEW_OPS and base not in self.var:
                base = base.args[0]
            # a returned array must not be a caller's array, a constant, or another result
            if self.copy_results and (base.is_leaf or base.op == "const" or n.op == "broadcast_to"
                                      or roots.count(n) > 1):
                text = self._copy(n, text)
            elif self.copy_results and text.endswith(BATCH_MAJOR):  # a loop's sequence, as laid out
                text = f"np.ascontiguousarray({text})"  # for the caller: batch-major in memory too
            results[key] = text
        placed = self._place_targets(instrs)
        self._plan_memory(instrs, list(results.values()))
        copies = self._place_stores(instrs)
        if self.workspace:
            self._plan_workspace(instrs, [t for k, t in results.items() if k not in self.transient])
        for ins in instrs:  # a kernel with no buffer to reuse writes into a new one
            if ins.kernel is not None and ins.buffer is None or LOWERINGS[ins.op].needs_shape or ins.scratch:
                ins.shape = self._shape(ins.node.shape)
        return Program(instrs, results, leaves, sorted(self.dims), copies, placed, self.requirements)

    def _copy(self, n: Node, text: str) -> str:
        if n.op == "const" or n.op == "broadcast_to" and n.args[0].op == "const":
            value = n.attr("value") if n.op == "const" else n.args[0].attr("value")
            v = InlineNumpy(self.dim_names).doprint(value)
            return f"np.full({self._shape(n.shape)}, {v}, dtype=dt)" if n.shape else f"dt.type({v})"
        return f"np.array({text}, dtype=dt)"

    def _eqs(self, n: Node, parts: list[Node]) -> tuple[int, ...]:
        return tuple(sorted({self.owners[p] for p in [n, *parts] if p in self.owners}))

    def _instr(self, n: Node) -> Instr:
        if n in self.xents:
            x = self.xents[n]
            self.dims |= _dim_names(x.scale)
            scale = InlineNumpy(self.dim_names).doprint(x.scale)
            parts: list[Node] = []
            self._graph_expr(x.adjoint, {}, parts)
            instr = Instr("softmax_xent", x.total, self._name(x.total),
                          [self.ref(x.logits), self.ref(x.target), scale],
                          eqs=self._eqs(x.total, [self.dotted[x.total], x.adjoint, *parts, *x.absorbed]))
            instr.also, instr.also_node = self._name(x.adjoint), x.adjoint
            self.var[x.total], self.var[x.adjoint] = instr.out, instr.also
            return instr
        if n in self.dotted:
            e = self.dotted[n]
            return self._named(Instr("vdot", n, self._name(n), [self.ref(a) for a in e.args],
                                     eqs=self._eqs(n, [e])))
        if n.op == "col2im" and n.args[0] in self.folded:
            m = n.args[0]
            return self._named(Instr("col2im_matmul", n, self._name(n), [self.ref(a) for a in m.args],
                                     eqs=self._eqs(n, [m])))
        if n.op != "ew":
            args = [self.ref(a) for a in n.args]
            rows = n.op == "sum" and n.attr("axes") == tuple(range(n.args[0].ndim - 1))
            if rows and not n.attr("keepdims"):  # a column sum: the rows in any order
                args = [self.ref(self._unreversed(n.args[0]))]
            instr = Instr(n.op, n, self._name(n), args, eqs=self._eqs(n, []))
            if n.op == "pad":
                before, size = n.attr("before"), n.args[0].shape[n.attr("axis")]
                instr.pad = (self._dim_text(before), self._dim_text(n.attr("after")),
                             self._dim_text(sympy.sympify(before) + size))
            elif n.op == "eye":
                instr.order = self._dim_text(n.attr("n"))
            elif n.op in _CHECKED_OPS:
                instr.where = self._where(n, instr.eqs)
            elif n.op == "sum":
                self._row_ones(instr)
            self.var[n] = instr.out
            return instr
        operands: dict[str, str] = {}  # operand expression -> kernel parameter name
        scalars: set[str] = set()  # kernel parameters that are Python/numpy scalars
        parts: list[Node] = []
        shapes: dict[str, Shape] = {}  # kernel parameter -> the shape of the array it receives
        expr = self._expand(n, operands, parts, scalars, shapes)
        for d in sorted(_dim_names(expr)):  # dims a kernel needs arrive as scalar operands
            self.dims.add(checked_name(d, self.dim_names))
            sym = sympy.Symbol(OPERAND_NAMES[len(operands)], real=True)
            operands[d] = sym.name
            scalars.add(sym.name)
            expr = expr.xreplace({s: sym for s in expr.free_symbols if s.name == d and s.is_integer})
        eqs = self._eqs(n, parts)
        if not n.shape:  # scalar arithmetic: a plain numpy expression, no kernel
            inline = InlineNumpy(set(operands)).doprint(expr.xreplace(
                {sympy.Symbol(p, real=True): sympy.Symbol(o, real=True) for o, p in operands.items()}))
            instr = Instr("ew", n, self._name(n), list(operands), eqs=eqs, inline=inline)
        else:
            params = tuple(operands.values())
            layout = (len(n.shape), tuple(operand_layout(shapes.get(p, ()), n.shape) for p in params))
            # an image's bias row by rows; a compiled loop (numba) has no inner-loop cost
            rows = 0 if getattr(self.kernels, "layouts", False) else _row_width(n.shape, layout[1])
            full = tuple(range(len(n.shape)))
            # a small array's broadcast operands are spread into `out` first (NumpyWriter.first_into);
            # a large one (an image) keeps its ufunc's broadcast, run by rows (_by_rows), in place
            broadcast = frozenset() if rows or is_large(n.shape) else frozenset(
                p for p, at in zip(params, layout[1], strict=True) if at is not None and at != full
                and p not in scalars)
            kernel = self._kernel(expr, params, frozenset(scalars), layout, broadcast)
            instr = Instr("ew", n, self._name(n), list(operands), kernel, eqs=eqs, rows=rows)
        self.var[n] = instr.out
        return instr

    def _row_ones(self, instr: Instr) -> None:
        """A matrix's column sums (a bias gradient) as one product with a vector of ones that the
        function binds once, `_ones_B = _ones(B, x.dtype)`, at its first such sum: `_colsum`'s call
        and cache lookup cost 0.15-0.2 us a sum at batch 32 (a third of it)."""
        n = instr.node
        x = n.args[0]
        if x.ndim != 2 or n.attr("axes") != (0,) or n.attr("keepdims"):
            return
        rows = self._dim_text(x.shape[0])
        if not rows.isidentifier():  # a dim's name (checked when the model declared it)
            return
        instr.ones = f"_ones_{rows}"
        instr.ones_bind = instr.ones not in self.row_ones
        instr.ones_rows = rows
        self.row_ones.add(instr.ones)

    # -- stacked rows, in any order -----------------------------------------------------------
    def _stacked(self, r: Node) -> bool:
        """r merges the first two axes of a value of three: (B, T, k) -> (B*T, k)."""
        if r.op != "reshape" or r.ndim != 2 or r.args[0].ndim != 3:
            return False
        s = r.args[0].shape
        return not any(_is_one(d) for d in s[:2]) and shapes_equal((s[0] * s[1], s[2]), r.shape)

    def _row_free(self, m: Node) -> str | None:
        """How a product reads stacked rows in an order of its choosing: "sum" for a sum over
        them, P.reshape(B*T, k).T @ Q.reshape(B*T, n) (the same in any row order, P's and Q's
        alike), "rows" for (B*T, k) @ W whose every reader splits the rows back into (B, T, n)
        (each row mapped alone); None for any other product."""
        if m.op != "matmul" or m.ndim != 2 or not self.workspace:
            return None
        x, y = m.args
        if x.op == "transpose" and self._stacked(x.args[0]) and self._stacked(y) \
                and shapes_equal(x.args[0].args[0].shape[:2], y.args[0].shape[:2]) \
                and self._under_reversals(x.args[0].args[0]) is not None \
                and self._under_reversals(y.args[0]) is not None:
            return "sum"
        split = (*x.args[0].shape[:2], m.shape[1]) if self._stacked(x) else None
        if split and y.ndim == 2 and m not in self.pinned and self._under_reversals(x.args[0]) is not None \
                and self.consumers.get(m) and all(c.op == "reshape" and shapes_equal(c.shape, split)
                                                  for c in self.consumers[m]):
            return "rows"
        return None

    def _peel_reversals(self, s: Node) -> tuple[Node, frozenset[int]]:
        """The value under s's reversals of its first two axes (not computed already), and
        which of those axes they reverse."""
        flips: set[int] = set()
        while s.op == "flip" and s.attr("axis") % s.ndim < 2 and s not in self.var:
            flips ^= {s.attr("axis") % s.ndim}
            s = s.args[0]
        return s, frozenset(flips)

    def _under_reversals(self, s: Node) -> Node | None:
        """The value under s's reversals of its first two axes, when it is stored (computed, an
        input, a loop's sequence) rather than another view."""
        s, _ = self._peel_reversals(s)
        stored = s in self.var or s.is_leaf and s.op != "const" or s.op not in (*_VIEW_OPS, "const")
        return s if stored and s not in self.transparent else None

    def _reorderable(self, r: Node) -> bool:
        """Every reader of the stacked rows r takes them in an order of its choosing."""
        readers = self.consumers.get(r, [])
        for c in readers:
            if c.op == "transpose" and c.ndim == 2 and c not in self.pinned:
                if not self.consumers.get(c) or any(k.args[0] is not c or self._row_free(k) != "sum"
                                                    for k in self.consumers[c]):
                    return False
            elif not (c.op == "matmul" and (c.args[1] is r and self._row_free(c) == "sum"
                                            or c.args[0] is r and self._row_free(c) == "rows")):
                return False
        return bool(readers) and r not in self.pinned

    def _memory_rows(self, s: Node) -> tuple[str, bool, frozenset[int]]:
        """A stacked operand's (B, T, k) value as the array in memory: its text, whether it is a
        loop's sequence stored step-major (T, B, k), and which of the two axes s reverses."""
        s, flips = self._peel_reversals(s)
        text = self.ref(s)
        return text.removesuffix(BATCH_MAJOR), text.endswith(BATCH_MAJOR), flips

    def _rows_in_memory_order(self, m: Node) -> tuple[list[Instr], list[str]] | None:
        """The copies and the operands of a product that reads stacked rows in an order of its
        choosing (_row_free), taken in the order of the memory under them. A loop stores its
        sequences step-major and the program reads them batch-major, reversed in time where the
        HVP's loops run backwards; reshaping such a view to rows copied it into fresh memory
        (1 MiB for the LSTM's (B, 8, 4 n_h) gate adjoints). Now a stored sequence is read in
        place: a row-wise product runs on its rows as stored and its readers see the result
        through the same view; a sum over rows takes both operands in the order of one of them,
        reversed alike, and copies the other (an input X, a joined state sequence) into the
        workspace. None when the rows are read as they are."""
        kind = self._row_free(m)
        if kind is None:
            return None
        x, y = m.args
        if kind == "rows":
            mem, swapped, flips = self._memory_rows(x.args[0])
            if not swapped and not flips:
                return None
            T, B = x.args[0].shape[1], x.args[0].shape[0]
            out = self._name(m)
            layout = self._shape((T, B, m.shape[1]) if swapped else (B, T, m.shape[1]))
            view = f"{out}.reshape{layout}{BATCH_MAJOR if swapped else ''}{_reversal(flips)}"
            for c in self.consumers[m]:
                self.var[c] = view
            self.taken.discard(out)  # _named below takes it again
            return [], [f"{atom(mem)}.reshape{self._shape(x.shape)}", self.ref(y)]
        stacks = [x.args[0], y]
        forms = [self._memory_rows(r.args[0]) for r in stacks]
        if not any(swapped or flips for _, swapped, flips in forms):
            return None
        anchor = 1 if forms[1][1] or not forms[0][1] else 0  # the rows stay as a stored sequence lies
        step_major = forms[anchor][1]
        flips = forms[0][2] ^ forms[1][2]  # reversed alike, the sum is the same
        copies, args = [], []
        for k, (r, (mem, swapped, _)) in enumerate(zip(stacks, forms, strict=True)):
            text, whole = _ordered(mem, swapped, frozenset() if k == anchor else flips, step_major)
            if whole:
                args.append(f"{atom(text)}.reshape{self._shape(r.shape)}")
                continue
            B, T, c = r.args[0].shape
            copy = Instr("rows", r, self._name(r), [text], eqs=self._eqs(m, []),
                         order=self._shape((T, B, c) if step_major else (B, T, c)))
            copies.append(copy)
            args.append(copy.out)
        args[0] = f"{atom(args[0])}.T"
        return copies, args

    def _where(self, n: Node, eqs: tuple[int, ...]) -> str:
        """`"equation (3): inv(Sigma)"` as a string literal: what a singular matrix's error names.
        The text holds only validated names, operators and checked numbers."""
        from symgrad.symbolic.printing import Printer

        text = Printer(self.names).text(n, expand=True)
        if len(text) > 72:
            text = f"{n.op}(...)"
        cite = f"equation ({', '.join(map(str, eqs))}): " if eqs else ""
        return repr(cite + text)

    def _expand(self, n: Node, operands: dict[str, str], parts: list[Node], scalars: set[str],
                shapes: dict[str, Shape]) -> sympy.Expr:
        """n's expression with fused arguments inlined and the rest as operand symbols."""
        subs = {}
        for i, a in enumerate(n.args):
            if a in self.fused:
                parts.append(a)
                subs[ARG[i]] = self._expand(a, operands, parts, scalars, shapes)
                continue
            text = self.ref(a)
            if text not in operands:
                operands[text] = OPERAND_NAMES[len(operands)]
                if not a.shape:
                    scalars.add(operands[text])
                base = a
                while base in self.transparent:  # the kernel receives the array before the broadcast
                    base = base.args[0]
                shapes[operands[text]] = base.shape
            subs[ARG[i]] = sympy.Symbol(operands[text], real=True)
        return n.attr("expr").xreplace(subs)

    def _kernel(self, expr: sympy.Expr, params: tuple[str, ...], scalars: frozenset[str],
                layout: tuple, broadcast: frozenset[str] = frozenset()) -> Kernel:
        key = sympy.srepr(expr) + repr(params) + repr(sorted(scalars))
        if getattr(self.kernels, "layouts", False):  # a compiled loop is written for one layout
            key += repr(layout)
        if broadcast:  # the numpy form spreads these operands into `out` first
            key += repr(sorted(broadcast))
        if key not in self.kernels:
            self.kernels[key] = build_kernel(expr, params, scalars, broadcast)
            self.kernels[key].layout = layout
        return self.kernels[key]

    # -- memory -------------------------------------------------------------------------------
    def _place_targets(self, instrs: list[Instr]) -> set[str]:
        """Compute each targeted result (a loop step's value) straight into its target, saving
        a copy a step, when a kernel, product or concatenation computes it here. Returns the
        result keys placed (the caller reads their targets); the caller copies the others."""
        at = {ins.node: k for k, ins in enumerate(instrs)}
        results = list(self.roots.values())
        placed = set()
        for key, target in self.targets.items():
            k = at.get(self.roots[key])
            ins = instrs[k] if k is not None else None
            if ins is not None and results.count(ins.node) == 1 and (
                    ins.op == "ew" and ins.kernel is not None or ins.op in ("matmul", "concat")):
                ins.buffer, ins.placed = target, True
                # the caller reads the target; a value no later line reads needs no name
                ins.discard = not any(_mentions(t, ins.out) for i in instrs[k + 1:] for t in i.args)
                placed.add(key)
        return placed

    def _plan_memory(self, instrs: list[Instr], result_texts: list[str]) -> None:
        """Give each instruction an output buffer: in place, a dead value's, or a new one."""
        var_node = {i.out: i.node for i in instrs}
        var_node.update({i.also: i.also_node for i in instrs if i.also})
        last_use: dict[str, int] = {}
        for k, ins in enumerate(instrs):
            for text in ins.args:
                for name in re.findall(r"[A-Za-z_]\w*", text):
                    if name in var_node:
                        last_use[name] = k
        # names the results read, views included (a gradient returned as t21.reshape(...))
        returned = {name for text in result_texts for name in re.findall(r"[A-Za-z_]\w*", text)}
        free: list[str] = []  # dead values whose memory may be reused
        # values living in a target outside the program: their memory is never reused
        returned |= {i.out for i in instrs if i.placed}
        for k, ins in enumerate(instrs):
            if ins.op == "softmax_xent":  # the shifted logits, then the adjoint, in the logits' memory
                z = ins.args[0]
                if z in var_node and last_use.get(z) == k and z not in returned \
                        and var_node[z].op in ("ew", "matmul") and not _mentions(ins.args[1], z):
                    ins.buffer = z
            # a product of two matrices allocates: `a.dot(b)` is 0.4 us less than np.matmul with
            # `out=` (a sixth of a 32x32 product), and the dead buffer goes to a kernel instead
            plain_dot = ins.op == "matmul" and all(a.ndim == 2 for a in ins.node.args)
            if ins.op in ("ew", "matmul") and ins.node.shape and not ins.placed and not plain_dot:
                dying = [a for a in ins.args if a in var_node and last_use.get(a) == k
                         and a not in returned and shapes_equal(var_node[a].shape, ins.node.shape)
                         and sum(_mentions(t, a) for t in ins.args) == 1]
                if ins.op == "ew":
                    own = [a for a, p in zip(ins.args, ins.kernel.operands, strict=True) if a in dying
                           and p in ins.kernel.alias_safe]
                    if own:
                        ins.buffer = own[0]
                if ins.buffer is None:
                    for j, name in enumerate(free):
                        if shapes_equal(var_node[name].shape, ins.node.shape):
                            ins.buffer = free.pop(j)
                            break
            for a in ins.args:  # values that die here free their memory for later instructions
                if a in var_node and last_use.get(a) == k and a != ins.buffer and a not in returned \
                        and var_node[a].op in ("ew", "matmul") and var_node[a] is not ins.also_node:
                    free.append(a)

    def _plan_workspace(self, instrs: list[Instr], result_texts: list[str]) -> None:
        """Put large temporaries in the workspace: values that no result names (views
        included) and whose memory no returned value reuses."""
        escaped = {name for text in result_texts for name in re.findall(r"[A-Za-z_]\w*", text)}
        for ins in reversed(instrs):  # a value written into another's memory takes it along
            if ins.out in escaped and ins.buffer:
                escaped.add(ins.buffer)
        for ins in instrs:
            n = ins.node
            ins.scratch_names = {name for name, (_, _, large) in ins.allocates.items()
                                 if large and name not in escaped}
            if (ins.op in _WORKSPACE_OPS and ins.buffer is None and ins.inline is None and not ins.discard
                    and ins.out not in escaped and self._kept(ins)
                    and not (ins.op == "sum" and (len(n.attr("axes")) == n.args[0].ndim
                                                  or n.attr("axes") == tuple(range(n.args[0].ndim - 1))))):
                ins.scratch = True

    def _unreversed(self, x: Node) -> Node:
        """x without the reversals of its leading axes (of a view not computed already): a sum
        over those axes reads the rows in memory order, and a reversed view of a loop's
        sequence would make numpy copy it before summing."""
        while x not in self.var and x.op == "flip" and x.attr("axis") % x.ndim < x.ndim - 1:
            x = x.args[0]
        return x

    def _strided_rows(self, n: Node) -> bool:
        """A reshape that merges the first two axes of a view whose first two axes are not one
        block of memory: a loop's sequence read batch-major (stored step-major), reversed or
        cut in time. numpy would copy it into fresh memory on every call (1 MiB for an LSTM's
        (B, 8, 4 n_h) gate adjoints, handed back to the system when freed and faulted in
        again); the program copies it into the workspace instead (`rows`)."""
        if self._reorderable(n):
            return False  # its readers take the rows as they lie (_rows_in_memory_order)
        x = n.args[0]
        if x.ndim < 2 or n.ndim != x.ndim - 1 or any(_is_one(d) for d in x.shape[:2]) \
                or not shapes_equal((x.shape[0] * x.shape[1], *x.shape[2:]), n.shape):
            return False
        while x not in self.var:
            if x.op == "flip" and x.attr("axis") % x.ndim < 2:
                return True
            if x.op == "slice" and x.attr("axis") == 1:
                return True
            if x.op not in ("flip", "slice"):
                return False  # another view: numpy decides, as before
            x = x.args[0]
        return self.var[x].endswith(BATCH_MAJOR)

    def _kept(self, ins: Instr) -> bool:
        """Whether a temporary of this shape lives in the workspace. An HVP keeps about twice as
        many (batch, features) arrays alive as a gradient: freed at the end of each call, the
        heap's top grows past glibc's trim threshold and is handed back to the kernel, to be
        faulted in again on the next call (the digits MLP's `hvp`: 80 page faults a call)."""
        shape = ins.node.shape
        every = self.every_temporary and len(shape) >= 2 and ins.op in ("ew", "matmul")
        return ins.op == "rows" or is_large(shape) or every

    def _place_stores(self, instrs: list[Instr]) -> list[tuple[str, str]]:
        """Write each stored result straight into its leaf when nothing later reads the leaf's
        old value and the kernel allows it; otherwise copy it over at the end."""
        copies = []
        for key, leaf in self.stores.items():
            node = self.roots[key]
            k = next((j for j, ins in enumerate(instrs) if ins.node is node), None)
            ins = instrs[k] if k is not None else None
            later = any(_mentions(t, leaf) for i in instrs[k + 1:] for t in i.args) if ins else True
            params = dict(zip(ins.args, ins.kernel.operands, strict=True)) if ins and ins.kernel else {}
            safe = leaf not in params or ins is not None and params[leaf] in ins.kernel.alias_safe
            if ins and ins.kernel and not later and safe:
                ins.buffer = leaf
                ins.discard = not any(_mentions(t, ins.out) for i in instrs[k + 1:] for t in i.args)
            else:
                copies.append((leaf, self.ref(node)))
        return copies



def atom(text: str) -> str:
    """Parenthesise an operand's text unless it is a primary: a name followed by attribute
    accesses, calls and subscripts (`W.T`, `x.reshape(B, 1)`, `H[:, t]`)."""
    head = re.match(r"[A-Za-z_][\w.]*", text)
    at = head.end() if head else 0
    while head and at < len(text):
        if text[at] == ".":
            tail = re.match(r"\.[A-Za-z_]\w*", text[at:])
            if not tail:
                break
            at += tail.end()
            continue
        if text[at] not in "([":
            break
        close = _closing(text, at)
        if close is None:
            break
        at = close + 1
    return text if head and at == len(text) else f"({text})"


def _closing(text: str, start: int) -> int | None:
    depth, pairs = 0, {"(": ")", "[": "]"}
    for i in range(start, len(text)):
        if text[i] in pairs:
            depth += 1
        elif text[i] in ")]":
            depth -= 1
            if depth == 0:
                return i
    return None


ROW_WIDTH = 512  # the longest row _by_rows makes of an image's pixels


def _row_width(shape: Shape, layouts: tuple) -> int:
    """The row length an elementwise kernel over an image (B, H, W, C) with a short channel axis
    and a bias row (C,) should run on, or 0. numpy broadcasts the row with an inner loop of C
    elements, one loop per pixel: for C = 16 the bias add took 277 us on a (64, 28, 28, 16)
    float32 image, against 122 us over rows of 28 pixels (448 entries) with the row tiled 28
    times (`_by_rows`). The pixels per row divide the fixed pixels of one image. One channel
    needs none of it (numpy merges the axes of a broadcast single number), nor an image of fewer
    than 64 pixels (the digits CNN's 4x4x32 maps: 11 us as they are, 14 through `_by_rows`)."""
    channels = shape[-1] if len(shape) >= 3 else None
    fixed = list(shape[1:-1])
    if channels is None or not all(getattr(d, "is_Integer", False) for d in (channels, *fixed)):
        return 0
    channels, pixels = int(channels), math.prod(int(d) for d in fixed)
    full = tuple(range(len(shape)))
    if not 2 <= channels <= 64 or pixels < 64 or not any(lay == (len(shape) - 1,) for lay in layouts) \
            or not all(lay is None or lay == full or lay == (len(shape) - 1,) for lay in layouts):
        return 0
    per_row = max((k for k in range(1, pixels + 1) if pixels % k == 0 and k * channels <= ROW_WIDTH),
                  default=1)
    return per_row * channels if per_row >= 4 else 0


def is_large(shape: Shape) -> bool:
    """Images, patch matrices, sequences: three axes or more, a dim that stacks several blocks
    ((8*B, n_h): the rows of 8 time steps; 4*n_h: four gates), or a fixed part of the shape of
    WORKSPACE_MIN elements. A dense model's (batch, features) arrays are not: they stay few and
    small enough for the allocator to recycle without asking the kernel."""
    size = 1
    for d in shape:
        if isinstance(d, int) or getattr(d, "is_Integer", False):
            size *= int(d)
        elif isinstance(d, sympy.Mul) and d.as_coeff_Mul()[0] >= 2:
            return True
    return len(shape) >= 3 or size >= WORKSPACE_MIN


def _reversal(axes) -> str:
    """The basic slice that reverses these leading axes of an array ("" for none)."""
    return f"[{', '.join(['::-1' if a in axes else ':' for a in range(max(axes) + 1)])}]" if axes else ""


def _ordered(mem: str, swapped: bool, flips: frozenset[int], step_major: bool) -> tuple[str, bool]:
    """A stacked operand's array with its (batch, step) axes in the wanted order (step-major or
    batch-major) and its (batch, step) axes `flips` reversed: the text, and whether it is the
    memory as it lies (reshaping it to rows is then free). `mem` is stored step-major when
    `swapped`, else batch-major."""
    if swapped == step_major:  # the memory lies in the wanted order
        axes = {1 - a for a in flips} if swapped else set(flips)
        return f"{mem}{_reversal(axes)}", not flips
    if swapped:  # stored step-major, wanted batch-major: the program's own view of it
        return f"{mem}{BATCH_MAJOR}{_reversal(flips)}", False
    return f"{atom(mem)}{_reversal(flips)}{BATCH_MAJOR}", False


def _is_one(d) -> bool:
    return d == 1 or getattr(d, "is_Integer", False) and int(d) == 1


def _mentions(text: str, name: str) -> bool:
    return name in re.findall(r"[A-Za-z_]\w*", text)


def lower(roots: dict[str, Node], names: dict[Node, str], owners: dict[Node, int],
          kernels: dict[str, Kernel], stores: dict[str, str] | None = None,
          workspace: bool = False, dim_names: frozenset[str] = frozenset(),
          reserved: frozenset[str] = frozenset(), own: dict[Node, str] | None = None,
          every_temporary: bool = False) -> Program:
    """Lower the graph that computes `roots` into a Program (see the module docstring);
    `stores` names results that overwrite a leaf (a state or parameter) in place; with
    `workspace`, large temporaries live in the call's workspace (`ws`); `dim_names` are the
    model's dims, the only symbols its shapes and constants may name; no name the code makes up
    is one of `reserved`, and only the nodes in `own` are written by the model's names; with
    `every_temporary` (an HVP), every temporary of two axes or more lives in the workspace."""
    return Lowering(roots, names, owners, kernels, stores, workspace=workspace, dim_names=dim_names,
                    reserved=reserved, own=own, every_temporary=every_temporary).run()
