"""Plain-text and LaTeX printing of graph nodes and of elementwise sympy expressions.

Elementwise nodes print through subclasses of sympy's own printers: an argument symbol x_i
prints as the (already printed) argument node, a product of two tensors prints as a Hadamard
product (odot), and Heaviside(t, 0) as an indicator [t > 0]. Every other primitive prints by
the `text`/`latex` forms in its rule-table entry. Named nodes (leaves, equations) print as
their names unless asked to expand.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import sympy
from symgrad.symbolic.graph import ARG, Node
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

ATOM, POSTFIX, PRODUCT, SUM = 4, 3, 2, 1


def latex_name(name: str) -> str:
    r"""W1 -> W_{1}, n_in -> n_{in}, alpha -> \alpha (sympy's convention for symbol names);
    bn1_gamma -> \gamma_{\mathrm{bn1}} and bn1_sigma2 -> \sigma^{2}_{\mathrm{bn1}} (a layer's
    Greek-named value, subscripted by the layer), bn1_mean -> \mathrm{bn1}_{mean}; sympy would read
    the digit of bn1 as a subscript too."""
    base, _, rest = name.partition("_")
    if rest and any(c.isdigit() for c in base) and not base.isdigit():
        if rest == "sigma2":  # a variance, as textbooks write it: sigma^2 of layer bn1
            return rf"\sigma^{{2}}_{{\mathrm{{{base}}}}}"
        inner = sympy.latex(sympy.Symbol(rest))
        if inner.startswith("\\") and inner[1:].isalpha():  # a Greek letter: gamma_{bn1}
            return rf"{inner}_{{\mathrm{{{base}}}}}"
        return rf"\mathrm{{{base}}}_{{{inner}}}"
    return sympy.latex(sympy.Symbol(name))


def latex_number(value: sympy.Expr) -> str:
    r"""A number as a textbook prints it: 10^{-5}, 2.5 \cdot 10^{-3}, 0.2 (not 1.0 \cdot 10^{-5} or
    0.200000000000000)."""
    if not isinstance(value, sympy.Float):
        return sympy.latex(value)
    text = repr(float(value))  # the shortest form that reads back as the same double
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text[:-2] if text.endswith(".0") else text
    mantissa = mantissa[:-2] if mantissa.endswith(".0") else mantissa
    power = f"10^{{{int(exponent)}}}"
    if mantissa in ("1", "-1"):
        return power if mantissa == "1" else f"-{power}"
    return rf"{mantissa} \cdot {power}"


class _Subst:
    """Mixin: print chosen symbols as given strings, parenthesised where the context needs it."""

    def __init__(self, strings: Mapping[sympy.Symbol, tuple[str, int]], tensors: set, **settings):
        super().__init__(settings)
        self.strings = strings
        self.tensors = tensors
        self._stack: list[sympy.Basic] = []

    def _print(self, expr, **kwargs):
        self._stack.append(expr)
        try:
            return super()._print(expr, **kwargs)
        finally:
            self._stack.pop()

    def _print_Symbol(self, expr, **kwargs):
        if expr not in self.strings:
            return super()._print_Symbol(expr, **kwargs)
        s, prec = self.strings[expr]
        parent = self._stack[-2] if len(self._stack) > 1 else None
        if isinstance(parent, sympy.Add):
            needed = SUM
        elif isinstance(parent, sympy.Mul) and self.bare_negation and parent.args == (-1, expr):
            needed = PRODUCT  # -A B: a negated product needs no parentheses in LaTeX
        elif isinstance(parent, sympy.Mul):
            needed = POSTFIX  # a matrix product inside a Hadamard product gets parentheses
        elif isinstance(parent, sympy.Pow):
            needed = ATOM
            if "^" in s and parent.base == expr:  # sigma^{2} squared: no double superscript
                return self._wrap(s)
        else:
            needed = 0
        return s if prec >= needed else self._wrap(s)

    def _tensor_factors(self, expr) -> int:
        return sum(1 for a in expr.args if a.free_symbols & self.tensors)


_SCALAR_ODOT = re.compile(r"(?:(?<=^)|(?<=[\s(\[{]))(\d+(?:\.\d+)?) \\odot ")


class _LatexSubst(_Subst, LatexPrinter):
    bare_negation = True

    def _wrap(self, s: str) -> str:
        return rf"\left({s}\right)"

    def _print_Mul(self, expr):
        # each product decides for itself: a scalar times a tensor inside a Hadamard product's
        # factor (B u in (B u - v) / (B w)) is written B u, not B \odot u
        hadamard = self._tensor_factors(expr) >= 2
        old = self._settings["mul_symbol_latex"]
        self._settings["mul_symbol_latex"] = r" \odot " if hadamard else " "
        try:
            out = super()._print_Mul(expr)
        finally:
            self._settings["mul_symbol_latex"] = old
        if not hadamard:
            return out
        # a number or a dim scales a tensor: 2 \sqrt{v} and B v, not 2 \odot \sqrt{v} (sympy
        # prints a fraction's denominator with its numerator's product sign)
        out = _SCALAR_ODOT.sub(r"\1 ", out)
        for dim in sorted(expr.free_symbols - self.tensors - set(self.strings), key=str):
            name = re.escape(self._print(dim))
            out = re.sub(rf"(?:(?<=^)|(?<=[\s(\[{{]))({name}) \\odot ", r"\1 ", out)
        return out

    def _print_Heaviside(self, expr):
        return rf"\mathbb{{1}}\left[{self._print(expr.args[0])} > 0\right]"

    def _print_Float(self, expr):
        return latex_number(expr)

    def _print_Add(self, expr, order=None):
        # a term printed from a node may begin with its own minus sign: x + (-y) reads x - y
        return super()._print_Add(expr, order).replace(" + - ", " - ")

    def _print_Piecewise(self, expr):
        if _indicator(expr):
            return rf"\mathbb{{1}}\left[{self._print(expr.args[0][1])}\right]"
        return super()._print_Piecewise(expr)

    def _print_Function(self, expr, exp=None):
        if len(expr.args) == 1 and expr.args[0] in self.strings:  # f(name): no double parens
            s, _ = self.strings[expr.args[0]]
            inner = super()._print_Function(expr.func(sympy.Symbol("ARGUMENT")), exp)
            return inner.replace("ARGUMENT", s)
        return super()._print_Function(expr, exp)


class _TextSubst(_Subst, StrPrinter):
    bare_negation = False  # -(A @ B), as Python would need to read it the same way

    def _wrap(self, s: str) -> str:
        return f"({s})"

    def _print_Heaviside(self, expr):
        return f"({self._print(expr.args[0])} > 0)"

    def _print_Piecewise(self, expr):
        if _indicator(expr):
            cond = expr.args[0][1]
            return f"({self._print(cond.lhs)} {cond.rel_op} {self._print(cond.rhs)})"
        return self._print_Basic(expr)


def _indicator(expr: sympy.Piecewise) -> bool:
    """Piecewise((1, condition), (0, True)): an indicator [condition]."""
    return len(expr.args) == 2 and expr.args[0][0] == 1 and tuple(expr.args[1]) == (0, True)


def _scalar_broadcast(node: Node) -> bool:
    return node.op == "broadcast_to" and not node.args[0].shape


def _precedence_of(expr: sympy.Expr) -> int:
    if expr.is_Atom or isinstance(expr, sympy.Function):
        return ATOM
    if isinstance(expr, sympy.Pow):
        return POSTFIX
    return SUM if isinstance(expr, sympy.Add) else PRODUCT


class Printer:
    """Prints nodes; `names` maps nodes to the names they print as (equations, deltas): a
    plain name, or a pair (text name, LaTeX name)."""

    def __init__(self, names: Mapping[Node, str | tuple[str, str]] | None = None):
        self.names = dict(names or {})

    # -- public -----------------------------------------------------------------------
    def text(self, node: Node, expand: bool = False) -> str:
        return self._print(node, "text", expand)[0]

    def latex(self, node: Node, expand: bool = False) -> str:
        return self._print(node, "latex", expand)[0]

    def expr(self, expr: sympy.Expr, symbols: Mapping[sympy.Symbol, Node | str], kind: str) -> str:
        """Print a sympy expression whose symbols stand for nodes (or pre-printed strings)."""
        strings, tensors = {}, set()
        for sym, what in symbols.items():
            if isinstance(what, Node):
                strings[sym] = self._print(what, kind, False)
                if what.shape and not _scalar_broadcast(what):
                    tensors.add(sym)
            else:
                strings[sym] = (what, ATOM)
        cls = _LatexSubst if kind == "latex" else _TextSubst
        return cls(strings, tensors).doprint(expr)

    # -- internals ----------------------------------------------------------------------
    def _print(self, node: Node, kind: str, expand: bool) -> tuple[str, int]:
        if not expand and node in self.names and node.op != "const":
            name = self.names[node]
            if isinstance(name, tuple):  # (text, LaTeX)
                return (name[1] if kind == "latex" else name[0]), ATOM
            return (latex_name(name) if kind == "latex" else name), ATOM
        if node.op == "const":
            value = node.attr("value")
            return (latex_number(value) if kind == "latex" else str(value)), _precedence_of(value)
        if node.is_leaf:
            return (latex_name(node.name) if kind == "latex" else node.name), ATOM
        if _scalar_broadcast(node):  # a scalar spread over a tensor reads as the scalar itself
            return self._print(node.args[0], kind, expand)
        if node.op == "ew":
            expr = node.attr("expr")
            return self.expr(expr, dict(zip(ARG, node.args, strict=False)), kind), _precedence_of(expr)
        from symgrad.symbolic.rules import rule_for

        if kind == "latex":
            inverse = self._transposed_inverse(node)
            if inverse is not None:
                return inverse
        rule = rule_for(node)
        needed = _ARG_PRECEDENCE.get((node.op, kind), 0)
        args = []
        for i, a in enumerate(node.args):  # a mode's branches are its own forms: show them, not its name
            s, prec = self._print(a, kind, node.op == "mode" and self.names.get(a) == self.names.get(node))
            # a product of products needs no parentheses on the left: (A B) C = A B C
            chain = node.op == "matmul" and i == 0 and a.op == "matmul"
            args.append(s if prec >= needed or chain and prec >= PRODUCT else _wrap(s, kind))
        form = rule.latex if kind == "latex" else rule.text
        return form(node, *args), _RESULT_PRECEDENCE.get((node.op, kind), ATOM)

    def _transposed_inverse(self, node: Node) -> tuple[str, int] | None:
        """inv(X)^T as X^{-T} and solve(A^T, B) as A^{-T} B, as a textbook writes them (an
        unnamed transpose or inverse only: a named one prints by its name)."""
        from symgrad.symbolic.rules import swaps_last_two

        def transposed(x: Node) -> bool:
            return x.op == "transpose" and swaps_last_two(x)

        if transposed(node) and node.args[0].op == "inv" and node.args[0] not in self.names:
            return f"{self._operand(node.args[0].args[0], ATOM)}^{{-\\top}}", POSTFIX
        if node.op == "solve" and transposed(node.args[0]) and node.args[0] not in self.names:
            a, b = self._operand(node.args[0].args[0], ATOM), self._operand(node.args[1], ATOM)
            return f"{a}^{{-\\top}} {b}", PRODUCT
        return None

    def _operand(self, node: Node, needed: int) -> str:
        s, prec = self._print(node, "latex", False)
        return s if prec >= needed else _wrap(s, "latex")


def _wrap(s: str, kind: str) -> str:
    return rf"\left({s}\right)" if kind == "latex" else f"({s})"


#: How tightly a primitive's printed form binds: a product, a postfix (X.T, X^{-1}), or an atom
#: (a name, a function call such as tr(X) or inv(X) in text).
_RESULT_PRECEDENCE = {
    ("matmul", "text"): PRODUCT, ("matmul", "latex"): PRODUCT,
    ("transpose", "text"): POSTFIX, ("transpose", "latex"): POSTFIX,
    ("inv", "latex"): POSTFIX, ("outer", "latex"): PRODUCT, ("solve", "latex"): PRODUCT,
}


#: How tightly a primitive's printed form binds its arguments; forms that print their own
#: parentheses (softmax(...), broadcast(...)) need nothing.
_ARG_PRECEDENCE = {
    ("matmul", "text"): POSTFIX, ("matmul", "latex"): POSTFIX,
    ("transpose", "text"): ATOM, ("transpose", "latex"): ATOM,
    ("reshape", "text"): ATOM, ("sum", "latex"): POSTFIX,
    ("slice", "text"): ATOM, ("slice", "latex"): ATOM, ("item", "latex"): ATOM,
    ("inv", "latex"): ATOM, ("outer", "latex"): ATOM, ("solve", "latex"): ATOM,
}

_DEFAULT = Printer()


def text(node: Node) -> str:
    return _DEFAULT.text(node, expand=True)


def latex(node: Node) -> str:
    return _DEFAULT.latex(node, expand=True)
