"""Fused elementwise kernels: one sympy expression, emitted two ways.

* numpy: a short sequence of ufunc calls that write into a caller-given `out` buffer (and, when
  the expression branches, a scratch buffer or two), so a chain like `g * (1 - h**2)` costs one
  pass per operation and no allocation;
* numexpr: one `numexpr.evaluate` string, whose numeric literals become typed locals (a
  float32 array times a Python float would otherwise come back float64).

Both are printed from the same expression by small printers, one method per sympy node kind.
Defined functions (sigmoid, softplus, ...) are first replaced by their numerically stable forms.
"""
from __future__ import annotations

import math
import re
import string
from collections.abc import Set
from dataclasses import dataclass

import sympy
from symgrad.symbolic.errors import ModelError, RuleError
from symgrad.symbolic.functions import ElementwiseFunction
from sympy.codegen.cfunctions import expm1, log1p
from sympy.logic.boolalg import ITE
from sympy.printing.str import StrPrinter

# a, b, c, ... (kernel parameter names); not k, the numexpr form's local for typed constants
OPERAND_NAMES = tuple(c for c in string.ascii_lowercase[:21] if c != "k")

_NUMPY_UNARY = {
    sympy.exp: "np.exp", sympy.log: "np.log", sympy.tanh: "np.tanh", sympy.Abs: "np.abs",
    sympy.sign: "np.sign", sympy.sin: "np.sin", sympy.cos: "np.cos", sympy.sinh: "np.sinh",
    sympy.cosh: "np.cosh", sympy.atan: "np.arctan", sympy.atanh: "np.arctanh", log1p: "np.log1p",
    expm1: "np.expm1", sympy.erf: "_erf",
}
_NUMEXPR_UNARY = {
    sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh", sympy.Abs: "abs", sympy.sin: "sin",
    sympy.cos: "cos", sympy.sinh: "sinh", sympy.cosh: "cosh", sympy.atan: "arctan",
    sympy.atanh: "arctanh", log1p: "log1p", expm1: "expm1",
}
_TRANSCENDENTAL = (sympy.exp, sympy.log, sympy.tanh, sympy.sin, sympy.cos, sympy.sinh,
                   sympy.cosh, sympy.atan, sympy.atanh, log1p, expm1, sympy.erf)


class Unsupported(RuleError):
    """The expression uses something this printer cannot express (a RuleError: a user's function
    built from, say, sympy.gamma is one line naming it, not a traceback)."""


def stable_form(expr: sympy.Expr) -> sympy.Expr:
    """Replace every defined function by its numerically stable lowering, innermost first, and
    every if-then-else condition (sympy folds `leaky_relu(leaky_relu(x)) > 0` into one) by
    and/or/not."""
    while any(isinstance(e, ElementwiseFunction) for e in sympy.preorder_traversal(expr)):
        expr = expr.replace(lambda e: isinstance(e, ElementwiseFunction), lambda e: e.lowered())
    return expr.replace(lambda e: isinstance(e, ITE), lambda e: sympy.Or(
        sympy.And(e.args[0], e.args[1]), sympy.And(sympy.Not(e.args[0]), e.args[2])))


def numeric_constants(expr: sympy.Expr) -> sympy.Expr:
    """Constant subexpressions that are not rationals (log(2 pi), sqrt(2)) as floats, so that
    every printer writes a number as a checked literal and never a name such as `pi`."""
    if isinstance(expr, sympy.Expr) and expr.is_number and not expr.is_Rational and not expr.is_Float:
        return sympy.Float(expr.evalf(17), 17)
    if not expr.args:
        return expr
    return expr.func(*(numeric_constants(a) for a in expr.args))


def _literal(value: sympy.Expr) -> str:
    """A number as a Python float literal; anything but a finite real number is refused (a
    literal `nan` or `inf` would be a name in generated source)."""
    if not (isinstance(value, sympy.Expr) and value.is_number and value.is_real and value.is_finite):
        raise ModelError(f"generated code: {value} is not a finite real number")
    v = sympy.nsimplify(value) if not value.is_Float else value
    if v.is_Integer:
        return f"{int(v)}.0"
    text = repr(float(v))
    if not math.isfinite(float(v)):
        raise ModelError(f"generated code: {value} overflows a float")
    return text


def checked_name(name: str, allowed: Set[str]) -> str:
    """A symbol's name as generated code writes it: only names the caller was given (kernel
    operands, scratch buffers, the model's dims). Defence in depth: the model checked its
    symbols when it was built, and this keeps any other name out of generated source."""
    if name not in allowed or not name.isidentifier():
        raise ModelError(f"generated code would name {name!r}, which is not one of its own names")
    return name


# -- the numpy form ------------------------------------------------------------------------
@dataclass
class _Line:
    text: str
    reads: frozenset[str]
    writes: str


class NumpyWriter:
    """Writes `expr` into a buffer as ufunc calls with an output (`np.add(a, b, out)`); scratch
    buffers are named s0, s1."""

    def __init__(self, operands: set[str], broadcast: Set[str] = frozenset()):
        self.operands = operands
        self.broadcast = broadcast  # operands of a smaller shape than the output's (a bias row)
        self.lines: list[_Line] = []
        self.scratch = 0

    def _spread_first(self, t: sympy.Expr) -> bool:
        """Sort key part: an operand that broadcasts goes first, to be spread into dest."""
        return not (t.is_Symbol and t.name in self.broadcast)

    @property
    def names(self) -> set[str]:
        """The names its lines may read: the operands and the scratch buffers made so far."""
        return self.operands | {f"s{i}" for i in range(self.scratch)}

    def write(self, expr: sympy.Expr, dest: str) -> None:
        if expr.is_Symbol or expr.is_Number:  # a kernel that is a copy (leaky_relu with slope 1)
            source = self.operand(expr)
            self.emit(f"np.copyto({dest}, {source})", {source}, dest)
            return
        method = getattr(self, f"_w_{type(expr).__name__}", None)
        if method is None:
            if type(expr) in _NUMPY_UNARY:
                method = self._w_unary
            else:
                raise Unsupported(f"no numpy lowering for {type(expr).__name__} in {expr}")
        method(expr, dest)

    # helpers
    def operand(self, expr: sympy.Expr) -> str:
        """A leaf's text, or a compound expression computed into a fresh scratch buffer."""
        if expr.is_Symbol:
            return checked_name(expr.name, self.names)
        if expr.is_Number:
            return _literal(expr)
        name = f"s{self.scratch}"
        self.scratch += 1
        self.emit(f"{name} = np.empty_like(out)", set(), name)
        self.write(expr, name)
        return name

    def emit(self, text: str, reads: set[str], writes: str) -> None:
        self.lines.append(_Line(text, frozenset(reads), writes))

    def call(self, fn: str, args: list[str], dest: str) -> None:
        # `out` passed by position: a keyword costs a ufunc call 0.05 us more to parse (a sixth
        # of an operation on a 32x32 array; CPU clock, numpy 2.4); numpy 2.4 deprecates it for
        # maximum and minimum only, which keep the keyword
        out = f"out={dest}" if fn in ("np.maximum", "np.minimum") else dest
        self.emit(f"{fn}({', '.join(args)}, {out})", set(args), dest)

    def first_into(self, expr: sympy.Expr, dest: str) -> str | None:
        """Compute a compound expr straight into dest (returning None), or return a leaf's text.
        An operand that broadcasts is spread into dest by assignment (`out[...] = b`): numpy's
        ufuncs take their slow path for a broadcast operand, and the assignment plus a ufunc
        over two arrays of one shape costs less than one broadcasting ufunc (0.65 against 0.92 us
        for a 32x32 array with a bias row; no slower up to the 256x256 measured)."""
        if expr.is_Symbol and expr.name in self.broadcast:
            self.emit(f"{dest}[...] = {checked_name(expr.name, self.names)}", {expr.name}, dest)
            return None
        if expr.is_Atom:
            return self.operand(expr)
        self.write(expr, dest)
        return None

    # one method per sympy node
    def _w_Add(self, expr: sympy.Add, dest: str) -> None:
        """A compound term first, straight into dest; the rest added or subtracted. dest may
        hold the negated partial sum for a while (1 - b**2: b**2 into dest, then 1 - dest), so
        a single compound term never needs a scratch buffer."""
        terms = [(-1, -t) if t.could_extract_minus_sign() else (1, t) for t in expr.args]
        terms.sort(key=lambda st: (st[1].is_Atom, self._spread_first(st[1]), st[0] < 0,
                                   sympy.default_sort_key(st[1])))
        (sign, head), rest = terms[0], terms[1:]
        acc = self.first_into(head, dest)  # a leaf's text, or None once dest holds it
        if acc is not None and sign < 0:
            self.call("np.negative", [acc], dest)
            acc, sign = None, 1
        for s, t in rest:
            other = self.operand(t)
            current = acc or dest
            if sign > 0:
                self.call("np.add" if s > 0 else "np.subtract", [current, other], dest)
            elif s > 0:  # -dest + t
                self.call("np.subtract", [other, current], dest)
                sign = 1
            else:  # -dest - t = -(dest + t)
                self.call("np.add", [current, other], dest)
            acc = None
        if sign < 0:
            self.call("np.negative", [dest], dest)

    def _w_Mul(self, expr: sympy.Mul, dest: str) -> None:
        coeff, factors = expr.as_coeff_mul()
        num = sorted((f for f in factors if not (f.is_Pow and f.exp.is_negative)),
                     key=lambda t: (t.is_Atom, self._spread_first(t), sympy.default_sort_key(t)))
        den = [f.base ** -f.exp for f in factors if f.is_Pow and f.exp.is_negative]
        if num:
            acc = self.first_into(num[0], dest)  # a leaf's text, or None once dest holds it
            for f in num[1:]:
                self.call("np.multiply", [acc or dest, self.operand(f)], dest)
                acc = None
        else:  # c / (d1 d2 ...): start from the coefficient
            acc = _literal(coeff)
            coeff = sympy.Integer(1)
        for d in den:
            self.call("np.divide", [acc or dest, self.operand(d)], dest)
            acc = None
        if coeff == -1:
            self.call("np.negative", [acc or dest], dest)
        elif coeff != 1:
            self.call("np.multiply", [acc or dest, _literal(coeff)], dest)

    def _w_Pow(self, expr: sympy.Pow, dest: str) -> None:
        base, e = expr.args
        src = self.first_into(base, dest) or dest
        if e == 2:
            self.call("np.square", [src], dest)
        elif e == sympy.S.Half:
            self.call("np.sqrt", [src], dest)
        elif e == -1:
            self.call("np.divide", ["1.0", src], dest)
        elif e == -sympy.S.Half:
            self.call("np.sqrt", [src], dest)
            self.call("np.divide", ["1.0", dest], dest)
        else:
            self.call("np.power", [src, _literal(e)], dest)

    def _w_unary(self, expr: sympy.Function, dest: str) -> None:
        src = self.first_into(expr.args[0], dest) or dest
        self.call(_NUMPY_UNARY[type(expr)], [src], dest)

    def _w_Max(self, expr: sympy.Max, dest: str) -> None:
        self._binary_fn("np.maximum", expr.args, dest)

    def _w_Min(self, expr: sympy.Min, dest: str) -> None:
        self._binary_fn("np.minimum", expr.args, dest)

    def _binary_fn(self, fn: str, args: tuple, dest: str) -> None:
        # numpy's maximum and minimum with a scalar miss their SIMD loop (relu's max(x, 0) ran
        # 3x slower in float32 than against an array of zeros): a 0 reads the helper `_zeros`
        zero = sympy.S.Zero in args and len(args) > 1
        args = sorted((a for a in args if not (zero and a == 0)),
                      key=lambda t: (t.is_Atom, self._spread_first(t), sympy.default_sort_key(t)))
        acc = self.first_into(args[0], dest) or dest
        for other in [*(self.operand(a) for a in args[1:]), *(["_zeros(out)"] if zero else [])]:
            self.call(fn, [acc, other], dest)
            acc = dest

    def _w_Heaviside(self, expr: sympy.Heaviside, dest: str) -> None:
        if len(expr.args) < 2 or expr.args[1] != 0:
            raise Unsupported("Heaviside needs its value at 0 fixed to 0")
        src = self.first_into(expr.args[0], dest) or dest
        self.call("np.greater", [src, "0.0"], dest)  # True/False land in `dest` as 1.0/0.0

    def _w_Piecewise(self, expr: sympy.Piecewise, dest: str) -> None:
        if _indicator(expr):  # [a == b], [a > b], ...: the comparison ufunc writes 1.0/0.0
            cond = expr.args[0][1]
            lhs, rhs = self.operand(cond.lhs), self.operand(cond.rhs)
            self.call(_COMPARISON[type(cond)], [lhs, rhs], dest)
            return
        printer = InlineNumpy(self.names)
        text = printer.doprint(expr)
        self.emit(f"{dest}[...] = {text}", {s.name for s in expr.free_symbols}, dest)


_COMPARISON = {sympy.Eq: "np.equal", sympy.StrictGreaterThan: "np.greater",
               sympy.GreaterThan: "np.greater_equal", sympy.StrictLessThan: "np.less",
               sympy.LessThan: "np.less_equal", sympy.Ne: "np.not_equal"}


def _indicator(expr: sympy.Piecewise) -> bool:
    """Piecewise((1, a <rel> b), (0, True))."""
    return (len(expr.args) == 2 and expr.args[0][0] == 1 and expr.args[1] == (0, True)
            and type(expr.args[0][1]) in _COMPARISON)


class InlineNumpy(StrPrinter):
    """Plain numpy expressions (allocating): for scalars, and branchy kernels like leaky relu.
    It prints only the symbol names it is given (`names`)."""

    def __init__(self, names: Set[str] = frozenset()):
        super().__init__()
        self.names = names

    def _print_Symbol(self, expr):
        return checked_name(expr.name, self.names)

    def doprint(self, expr, *args, **kwargs):
        return super().doprint(numeric_constants(stable_form(sympy.sympify(expr))), *args, **kwargs)

    def _print_Basic(self, expr):  # anything without its own method is not printed by its name
        raise Unsupported(f"no numpy lowering for {type(expr).__name__}")

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        if cond != sympy.true:
            raise Unsupported("a Piecewise needs a final `True` branch")
        out = self._print(last)
        for value, c in reversed(pieces):
            out = f"np.where({self._print(c)}, {self._print(value)}, {out})"
        return out

    def _print_And(self, expr):
        return self._fold("np.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._fold("np.logical_or", expr.args)

    def _print_Not(self, expr):
        return f"np.logical_not({self._print(expr.args[0])})"

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_Function(self, expr):
        fn = _NUMPY_UNARY.get(type(expr))
        if fn is None:
            raise Unsupported(f"no numpy lowering for {type(expr).__name__}")
        return f"{fn}({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        return self._fold("np.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("np.minimum", expr.args)

    def _fold(self, fn, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_Heaviside(self, expr):
        return f"np.greater({self._print(expr.args[0])}, 0.0)"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sympy.S.Half:
            return f"np.sqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational)

    def _print_Relational(self, expr):
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    def _print_Float(self, expr):
        return _literal(expr)

    def _print_Rational(self, expr):
        return _literal(expr)

    def _print_Integer(self, expr):
        return _literal(expr)


# -- the numexpr form ----------------------------------------------------------------------
class NumexprPrinter(StrPrinter):
    """numexpr source; every numeric literal becomes a typed local `k0, k1, ...`."""

    def __init__(self, names: Set[str] = frozenset()):
        super().__init__({"full_prec": False})
        self.constants: dict[str, str] = {}
        self.names = names  # the only symbol names it prints: the kernel's operands

    def _print_Symbol(self, expr):
        return checked_name(expr.name, self.names)

    def _const(self, value: sympy.Expr) -> str:
        text = _literal(value)
        for name, v in self.constants.items():
            if v == text:
                return name
        name = f"k{len(self.constants)}"
        self.constants[name] = text
        return name

    def _print_Integer(self, expr):
        return self._const(expr)

    _print_Rational = _print_Float = _print_Integer
    _print_Half = _print_One = _print_Zero = _print_NegativeOne = _print_Integer

    def _print_Pow(self, expr, rational=False):
        base, e = expr.args
        b = self.parenthesize(base, 60)
        if e == sympy.S.Half:
            return f"sqrt({self._print(base)})"
        if e == -1:
            return f"{self._const(sympy.Integer(1))} / {b}"
        if e == -sympy.S.Half:
            return f"{self._const(sympy.Integer(1))} / sqrt({self._print(base)})"
        if e.is_Integer and e > 0:
            return f"{b}**{int(e)}"  # integer powers keep the base's dtype
        return f"{b}**{self._const(e)}"

    def _print_Function(self, expr):
        fn = _NUMEXPR_UNARY.get(type(expr))
        if fn is None:
            raise Unsupported(f"numexpr has no {type(expr).__name__}")
        return f"{fn}({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        return self._minmax(expr.args, ">")

    def _print_Min(self, expr):
        return self._minmax(expr.args, "<")

    def _minmax(self, args, op):
        out = self._print(args[0])
        for a in args[1:]:
            a = self._print(a)
            out = f"where({out} {op} {a}, {out}, {a})"
        return out

    def _print_Heaviside(self, expr):
        zero, one = self._const(sympy.Integer(0)), self._const(sympy.Integer(1))
        return f"where({self._print(expr.args[0])} > {zero}, {one}, {zero})"

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        zero, one, m1 = (self._const(sympy.Integer(v)) for v in (0, 1, -1))
        return f"where({x} > {zero}, {one}, where({x} < {zero}, {m1}, {zero}))"

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        if cond != sympy.true:
            raise Unsupported("a Piecewise needs a final `True` branch")
        out = self._print(last)
        for value, c in reversed(pieces):
            out = f"where({self._print(c)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        return f"{self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)}"

    def _print_Basic(self, expr):  # anything without its own method is not printed by its name
        raise Unsupported(f"numexpr has no {type(expr).__name__}")

    def _print_And(self, expr):
        return " & ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Not(self, expr):
        return f"~({self._print(expr.args[0])})"

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"


# -- the kernel ----------------------------------------------------------------------------
@dataclass
class Kernel:
    """A fused elementwise kernel over operands a, b, ... (arrays, or scalars such as dims)."""

    expr: sympy.Expr  # the math, in operand symbols
    operands: tuple[str, ...]
    numpy_lines: list[str]
    numexpr_source: str | None  # None: numexpr cannot express it; numpy always runs it
    numexpr_constants: dict[str, str]
    heavy: bool  # has transcendental functions (the auto backend's threshold differs)
    alias_safe: frozenset[str]  # operands that `out` may be (in-place) without a wrong result
    scalars: frozenset[str] = frozenset()  # operands that are scalars (dims, hyper-parameters)
    name: str = ""  # given when the module is assembled
    # (output rank, each operand's codegen.numba_kernels.Layout): how the call site broadcasts
    layout: tuple = ()


class KernelTable(dict):
    """The kernels of one module, keyed by expression and operands (identical kernels merge);
    with `layouts`, by the call site's broadcasting too (a compiled loop is written for one)."""

    layouts = False


# The numpy form's cost per line, in ufunc passes over a small array (measured, numpy 2.4, a
# (32, 32) array): a ufunc with a Python number for an operand takes 0.55 us where one over two
# arrays takes 0.31 (numpy converts the number on every call); a scratch buffer is an allocation
# and one more array in cache.
_SCALAR_OPERAND_COST = 0.8
_SCRATCH_COST = 1.0
_NUMBER = re.compile(r"(?:^|[(, ])-?\d+\.\d*(?:e-?\d+)?[,)]")


def _numpy_cost(lines: list[_Line]) -> float:
    cost = 0.0
    for ln in lines:
        if ln.text.endswith("np.empty_like(out)"):
            cost += _SCRATCH_COST
        else:
            cost += 1.0 + (_SCALAR_OPERAND_COST if _NUMBER.search(ln.text) else 0.0)
    return cost


def _distributed(expr: sympy.Expr) -> list[sympy.Expr]:
    """`expr` with its factors multiplied into a sum of theirs that has a number for a term:
    a*(1 - b**2) -> a - a*b**2, the same three passes with no number operand. Only such sums,
    and none with a bare operand for a term: 1 - b is exact for b in [1/2, 2] (a gate near 1),
    where a - a*b would cancel, as multiplying out (x - y)*(x + y) would."""
    if not isinstance(expr, sympy.Mul):
        return []
    for factor in expr.args:
        terms = factor.args if isinstance(factor, sympy.Add) else ()
        bare = any((-t if t.could_extract_minus_sign() else t).is_Symbol for t in terms)
        if any(t.is_Number for t in terms) and not bare:
            rest = expr / factor
            return [sympy.Add(*(rest * t for t in factor.args))]
    return []


def _numpy_form(low: sympy.Expr, operands: tuple[str, ...], broadcast: Set[str]) -> list[_Line]:
    """The numpy lines writing `low` into `out`: shared subexpressions in scratch buffers first."""
    replacements, (reduced,) = sympy.cse([low], symbols=sympy.numbered_symbols("c_"))
    writer = NumpyWriter(set(operands), broadcast)
    buffers: dict[sympy.Symbol, sympy.Expr] = {}  # cse's c_k -> the scratch buffer holding it
    for sym, sub in replacements:
        sub = sub.xreplace(buffers)  # a temporary may read earlier ones
        if isinstance(sub, sympy.logic.boolalg.Boolean):  # a shared condition (x > 0) stays inline:
            buffers[sym] = sub  # comparisons are written where a Piecewise or indicator uses them
            continue
        name = f"s{writer.scratch}"
        writer.scratch += 1
        writer.emit(f"{name} = np.empty_like(out)", set(), name)
        writer.write(sub, name)
        buffers[sym] = sympy.Symbol(name, real=True)
    reduced = reduced.xreplace(buffers)
    writer.write(reduced, "out")
    return writer.lines


def build_kernel(expr: sympy.Expr, operands: tuple[str, ...],
                 scalars: frozenset[str] = frozenset(), broadcast: frozenset[str] = frozenset()) -> Kernel:
    """Emit both forms of the kernel computing `expr` (math form) over the named operands
    (`broadcast`: those with a smaller shape than the output's). The numpy form is the
    cheapest of the expression's equivalent forms (`_numpy_cost`); the numexpr form, one pass
    whatever its shape, is printed from the expression as it stands."""
    low = numeric_constants(stable_form(expr))
    factored = sympy.factor_terms(low)
    if sympy.count_ops(factored) < sympy.count_ops(low):  # (e*s - y)/B instead of e*s/B - y/B
        low = factored
    forms = [_numpy_form(form, operands, broadcast - scalars) for form in [low, *_distributed(low)]]
    lines = min(forms, key=_numpy_cost)  # the first of the cheapest: the same form on every run
    first_write = next(i for i, ln in enumerate(lines) if ln.writes == "out")
    read_later = set().union(*(ln.reads for ln in lines[first_write + 1:]))
    alias_safe = frozenset(op for op in operands if op not in read_later)
    try:
        printer = NumexprPrinter(set(operands))
        source = printer.doprint(low)
        constants = printer.constants
    except Unsupported:
        source, constants = None, {}
    heavy = any(isinstance(e, _TRANSCENDENTAL) for e in sympy.preorder_traversal(low))
    alias_safe -= scalars
    return Kernel(expr, operands, [ln.text for ln in lines], source, constants, heavy, alias_safe,
                  scalars)
