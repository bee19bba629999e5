"""The numba form of a fused elementwise kernel: one compiled loop nest over the output.

A kernel call site passes arrays of known ranks: the output's, or fewer axes broadcast along
the leading ones (a bias row), or size-1 axes (a `keepdims` sum), or scalars (dims,
hyper-parameters). The layout, fixed when the program is lowered, says for each operand which
loop index reads each of its axes, so the loop indexes every operand directly: no broadcast
copies, no temporaries, one pass over memory however long the expression.

The kernels use numpy's error model (a division by zero gives inf or nan, as numpy's ufuncs
do, where numba's default raises ZeroDivisionError). Numbers are typed like the output
(`out.dtype.type(0.5)`), scalars too, so a float32 kernel computes in float32 as numpy's does.
Functions are the `math` module's, which numba compiles to libm calls, one element at a time:
numpy's own float32 `tanh`/`exp` loops are SIMD and much faster per element (compiling the
LSTM's sigmoid and tanh kernels too made its float32 `loss_and_grad` 2.1x slower), so a numba
module compiles the kernels without transcendental functions and leaves the others to numpy's
ufuncs.
"""
from __future__ import annotations

import textwrap

import sympy
from symgrad.codegen.kernels import NumexprPrinter, Unsupported, numeric_constants, stable_form
from sympy.codegen.cfunctions import expm1, log1p

_MATH = {
    sympy.exp: "math.exp", sympy.log: "math.log", sympy.tanh: "math.tanh", sympy.Abs: "abs",
    sympy.sin: "math.sin", sympy.cos: "math.cos", sympy.sinh: "math.sinh", sympy.cosh: "math.cosh",
    sympy.atan: "math.atan", sympy.atanh: "math.atanh", log1p: "math.log1p", expm1: "math.expm1",
}
# Whether kernels with transcendental functions are compiled too (see the module docstring)
NUMBA_HEAVY = False
# Layout of one operand: None for a scalar, else for each of its axes the output axis whose loop
# index reads it, or -1 for a size-1 axis (always index 0).
Layout = tuple[int, ...] | None


def operand_layout(shape, out_shape) -> Layout:
    """How an operand of `shape` broadcasts against the output (numpy's rules: trailing axes
    align, a size-1 axis stretches)."""
    if not shape:
        return None
    lead = len(out_shape) - len(shape)
    return tuple(-1 if d == 1 and out_shape[lead + k] != 1 else lead + k for k, d in enumerate(shape))


class ScalarPrinter(NumexprPrinter):
    """The expression for one element: operands indexed by the loop, constants as typed
    locals k0, k1, ... (as the numexpr printer names them), functions from `math`."""

    def __init__(self, access: dict[str, str], names: set[str]):
        super().__init__(names)
        self.access = access  # an array operand -> the local holding its element

    def _print_Symbol(self, expr):
        if expr.name in self.access:
            return self.access[expr.name]
        return super()._print_Symbol(expr)  # a scalar operand or a local: checked

    def _print_Pow(self, expr, rational=False):
        base, e = expr.args
        b = self.parenthesize(base, 60)
        if e.is_Integer and 1 < e <= 4:  # a product keeps the dtype (x**2 would be float64)
            return "(" + "*".join([b] * int(e)) + ")"
        if e == sympy.S.Half:
            return f"math.sqrt({self._print(base)})"
        if e == -1:
            return f"({self._const(sympy.Integer(1))}/{b})"
        if e == -sympy.S.Half:
            return f"({self._const(sympy.Integer(1))}/math.sqrt({self._print(base)}))"
        return f"{b}**{self._const(e)}"

    def _print_Function(self, expr):
        fn = _MATH.get(type(expr))
        if fn is None:
            raise Unsupported(f"numba kernels have no {type(expr).__name__}")
        return f"{fn}({self._print(expr.args[0])})"

    def _minmax(self, args, op):
        out = self._print(args[0])
        for a in args[1:]:
            a = self._print(a)
            out = f"({out} if {out} {op} {a} else {a})"
        return out

    def _print_Heaviside(self, expr):
        zero, one = self._const(sympy.Integer(0)), self._const(sympy.Integer(1))
        return f"({one} if {self._print(expr.args[0])} > {zero} else {zero})"

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        zero, one, m1 = (self._const(sympy.Integer(v)) for v in (0, 1, -1))
        return f"({one} if {x} > {zero} else ({m1} if {x} < {zero} else {zero}))"

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        if cond != sympy.true:
            raise Unsupported("a Piecewise needs a final `True` branch")
        out = self._print(last)
        for value, c in reversed(pieces):
            out = f"({self._print(value)} if {self._print(c)} else {out})"
        return out


def numba_lines(expr: sympy.Expr, operands: tuple[str, ...], scalars: frozenset[str],
                ndim: int, layouts: tuple[Layout, ...]) -> list[str]:
    """The body of a compiled kernel `(operands..., out)`: typed constants and scalars,
    then one loop nest over the output writing the expression per element. Raises Unsupported
    when a function has no numba form."""
    index = [f"i{k}" for k in range(ndim)]
    body, values = [], {}
    for p, layout in zip(operands, layouts, strict=True):
        if p in scalars or layout is None:
            continue
        values[p] = f"v{p}"  # each operand's element, read once
        body.append(f"v{p} = {p}[{', '.join('0' if axis < 0 else index[axis] for axis in layout)}]")
    low = numeric_constants(stable_form(expr))
    low, hoisted = _hoist_branches(low)
    replacements, (reduced,) = sympy.cse([low], symbols=sympy.numbered_symbols("e"))
    local = {str(sym) for sym, _ in [*hoisted, *replacements]}
    printer = ScalarPrinter(values, {p for p in operands if p not in values} | local)
    for sym, sub in [*hoisted, *replacements]:
        body += _assign(str(sym), printer.doprint(sub), ndim)
    body += _assign(f"out[{', '.join(index)}]", printer.doprint(reduced), ndim)
    lines = [f"{k} = out.dtype.type({v})" for k, v in printer.constants.items()]
    lines += [f"{p} = out.dtype.type({p})" for p in operands if p not in values]
    indent = ""
    for k in range(ndim):
        lines.append(f"{indent}for i{k} in range(out.shape[{k}]):")
        indent += "    "
    return lines + [indent + line for line in body]


def _hoist_branches(expr: sympy.Expr) -> tuple[sympy.Expr, list[tuple[sympy.Symbol, sympy.Expr]]]:
    """Compound arguments of max/min, steps and branches as locals b0, b1, ... (a conditional
    expression names its operands twice: each is computed once)."""
    hoisted: list[tuple[sympy.Symbol, sympy.Expr]] = []

    def visit(e):
        if not e.args or e.is_Atom:
            return e
        args = [visit(a) for a in e.args]
        if isinstance(e, (sympy.Max, sympy.Min, sympy.Heaviside, sympy.sign)):
            named = []
            for a in args:
                if isinstance(a, sympy.Expr) and not a.is_Atom:
                    sym = sympy.Symbol(f"b{len(hoisted)}", real=True)
                    hoisted.append((sym, a))
                    a = sym
                named.append(a)
            args = named
        return e.func(*args, evaluate=False) if isinstance(e, (sympy.Max, sympy.Min)) else e.func(*args)

    return visit(expr), hoisted


def _assign(target: str, text: str, ndim: int) -> list[str]:
    """`target = text`, broken inside parentheses when it would pass the line width."""
    room = 104 - 4 * (ndim + 1)
    if len(target) + len(text) + 3 <= room:
        return [f"{target} = {text}"]
    return [f"{target} = ("] + ["    " + part for part in textwrap.wrap(text, room - 4)] + [")"]


# Helpers a numba module uses in place of the numpy ones (codegen.lowering.HELPERS): a
# matrix's softmax or log-softmax along its rows as one compiled loop per row (max, sum of
# exponentials, result), where numpy makes six calls with two reductions along a short axis,
# the largest cost of a small network's step after its matrix products.
NUMBA_HELPERS = {
    "_softmax": '''@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _softmax_rows(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each row of a matrix: exp(z - max) / sum(exp(z - max))."""
    for i in range(z.shape[0]):
        top = z[i, 0]
        for j in range(1, z.shape[1]):
            if z[i, j] > top:
                top = z[i, j]
        total = out.dtype.type(0.0)
        for j in range(z.shape[1]):
            e = math.exp(z[i, j] - top)
            out[i, j] = e
            total += e
        for j in range(z.shape[1]):
            out[i, j] /= total
    return out


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """exp(z) / sum(exp(z)) along `axis`, shifted by the max so that exp cannot overflow; a
    matrix's rows in one compiled loop."""
    if z.ndim == 2 and axis in (1, -1):
        return _softmax_rows(z, np.empty_like(z))
    e = z - z.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e
''',
    "_log_softmax": '''@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _log_softmax_rows(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each row of a matrix: z - max - log(sum(exp(z - max)))."""
    for i in range(z.shape[0]):
        top = z[i, 0]
        for j in range(1, z.shape[1]):
            if z[i, j] > top:
                top = z[i, j]
        total = out.dtype.type(0.0)
        for j in range(z.shape[1]):
            total += math.exp(z[i, j] - top)
        shift = top + math.log(total)
        for j in range(z.shape[1]):
            out[i, j] = z[i, j] - shift
    return out


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """z - log(sum(exp(z))) along `axis`: log-sum-exp, shifted by the max; a matrix's rows in
    one compiled loop."""
    if z.ndim == 2 and axis in (1, -1):
        return _log_softmax_rows(z, np.empty_like(z))
    s = z - z.max(axis=axis, keepdims=True)
    s -= np.log(np.exp(s).sum(axis=axis, keepdims=True))
    return s
''',
}
