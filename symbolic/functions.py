"""Elementwise functions: each one a sympy expression of one scalar, differentiated by sympy.

`define_function(name, definition, var)` turns a definition such as `1/(1 + exp(-x))` into a
sympy Function class (`sigmoid`) that prints nicely, lowers to a numerically stable form, and
whose derivative is *derived*: `sympy.diff` of the definition, simplified, then expressed in the
cheapest verified form among

* through the forward value y = f(x) (sigma' = sigma(1 - sigma), tanh' = 1 - tanh^2, exp' = exp),
* through another known function (softplus' = sigma),
* or sympy's derivative as it is.

A candidate counts only after a numeric check at sample points agrees with sympy's derivative,
so no rewrite can change the mathematics. Kinks follow the usual convention: Heaviside(0) = 0,
so relu'(0) = 0.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import mpmath
import numpy as np
import sympy
from symgrad.symbolic.errors import ModelError, located, user_location
from sympy.codegen.cfunctions import log1p

X = sympy.Symbol("x", real=True)  # the variable every definition is written in
_Y = sympy.Symbol("_y", real=True)  # stands for the forward value f(x) while rewriting
_SAMPLES = (-2.3, -1.1, -0.4, 0.3, 0.7, 1.6, 2.9, 4.2)

#: name -> Function class, for every function defined so far (built-in and users' own).
REGISTRY: dict[str, type[ElementwiseFunction]] = {}


class ElementwiseFunction(sympy.Function):
    """Base of every defined function. Subclasses are made by `define_function`."""

    is_real = True
    definition: sympy.Expr  # in X and the class's parameter symbols
    parameters: tuple[sympy.Symbol, ...] = ()
    latex_name: str
    stable: Callable[..., sympy.Expr] | None = None  # numerically stable form, for lowering

    @classmethod
    def eval(cls, *args):  # keep calls symbolic; the generated code evaluates them
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        if argindex != 1:
            raise sympy.ArgumentIndexError(self, argindex)
        return self._bind(derivative_of(type(self), self.args[1:]))

    def _bind(self, expr: sympy.Expr) -> sympy.Expr:
        """Substitute this call's argument and parameter values into an expression of X."""
        subs = dict(zip(self.parameters, self.args[1:], strict=True))
        own = type(self)(X, *self.parameters)
        return expr.xreplace({own: self}).xreplace({X: self.args[0], **subs})

    def expanded(self) -> sympy.Expr:
        """The definition applied to this call's argument (the math, not the stable form)."""
        return self._bind(self.definition)

    def lowered(self) -> sympy.Expr:
        """The numerically stable form used by generated code."""
        if self.stable is not None:
            return self.stable(*self.args)
        return self.expanded()

    def _latex(self, printer, exp=None) -> str:  # sympy passes `exp` for a power such as f(x)^2
        arg = printer._print(self.args[0])
        call = rf"{self.latex_name}\left({arg}\right)"
        return call if exp is None else rf"\left({call}\right)^{{{exp}}}"

    def _sympystr(self, printer) -> str:
        return f"{self.func.__name__}({', '.join(printer._print(a) for a in self.args)})"


def define_function(
    name: str,
    definition: sympy.Expr,
    var: sympy.Symbol,
    *,
    latex: str | None = None,
    parameters: tuple[sympy.Symbol, ...] = (),
    stable: Callable[..., sympy.Expr] | None = None,
) -> type[ElementwiseFunction]:
    """Register an elementwise function given as a sympy expression of one scalar `var`.

    `parameters` are further symbols of the definition that take a constant value per use
    (leaky_relu's slope). Defining the same name twice with the same definition returns the
    existing function; a different definition under a taken name is an error.
    """
    from symgrad.symbolic.checks import bad_atoms
    from symgrad.symbolic.names import check_identifier
    from symgrad.symbolic.texnames import check_latex

    check_identifier(name, "function name")
    where = user_location()
    if isinstance(definition, (int, float)) and not isinstance(definition, bool):
        definition = sympy.sympify(definition)  # a number: converted, never parsed
    if not isinstance(definition, sympy.Expr):
        raise ModelError(located(f"function {name!r}: the definition must be a sympy expression, "
                                 f"not {type(definition).__name__}", where))
    if not isinstance(var, sympy.Symbol):
        raise ModelError(located(f"function {name!r}: the variable must be a sympy Symbol, "
                                 f"not {var!r}", where))
    extra = definition.free_symbols - {var} - set(parameters)
    if extra:
        names = ", ".join(sorted(str(s) if str(s).isidentifier() else repr(str(s)) for s in extra))
        raise ModelError(located(f"function {name!r}: its definition may only use {var}, but also uses "
                                 f"{names}", where))
    problem = bad_atoms(definition, {var, *parameters})
    if problem:
        raise ModelError(located(f"function {name!r}: {problem}", where))
    definition = definition.xreplace({var: X})
    if name in REGISTRY:
        old = REGISTRY[name]
        if old.definition == definition and old.parameters == tuple(parameters):
            return old
        raise ModelError(
            f"function {name!r} is already defined as {old.definition}; choose another name"
        )
    attrs = {
        "definition": definition,
        "parameters": tuple(parameters),
        "latex_name": r"\operatorname{" + name.replace("_", r"\_") + "}" if latex is None
        else check_latex(latex, f"function {name!r}"),
        "stable": staticmethod(stable) if stable else None,
        "nargs": 1 + len(parameters),
        "__module__": __name__,
    }
    cls = type(name, (ElementwiseFunction,), attrs)
    REGISTRY[name] = cls
    return cls


# -- deriving a derivative ----------------------------------------------------------------
_DERIVATIVES: dict[object, sympy.Expr] = {}  # a function, or (function, its parameters' values)


def derivative_of(fn: type[ElementwiseFunction], values: tuple = ()) -> sympy.Expr:
    """f'(X), as an expression of X and f(X) itself, chosen as the module docstring says.

    The form is chosen once, checked at sample values of the function's parameters; with a
    call's own parameter `values` it is checked again at those, and chosen again there if it
    fails (leaky_relu's [y > 0] holds for a slope >= 0 only: with a negative slope y > 0 on
    both sides of the kink, and the derivative is written through x instead).
    """
    if fn not in _DERIVATIVES:
        _DERIVATIVES[fn] = _choose_derivative(fn)
    general = _DERIVATIVES[fn]
    if not fn.parameters or not values:
        return general
    key = (fn, tuple(values))
    if key not in _DERIVATIVES:
        at = dict(zip(fn.parameters, values, strict=True))
        d = _kinks_to_zero(sympy.diff(fn.definition, X)).xreplace(at)
        in_y = general.xreplace({fn(X, *fn.parameters): _Y}).xreplace(at)
        holds = _agree(in_y, d, fn.definition.xreplace(at))
        _DERIVATIVES[key] = general if holds else _choose_derivative(fn, at)
    return _DERIVATIVES[key]


def _choose_derivative(fn: type[ElementwiseFunction], sample_params: dict | None = None) -> sympy.Expr:
    own = fn(X, *fn.parameters)
    d = _kinks_to_zero(sympy.diff(fn.definition, X))
    if sample_params is None:
        sample_params = {p: sympy.Float(0.37 + 0.11 * i) for i, p in enumerate(fn.parameters)}

    def agrees(candidate_in_y: sympy.Expr) -> bool:
        return _agree(candidate_in_y.xreplace(sample_params), d.xreplace(sample_params),
                      fn.definition.xreplace(sample_params))

    candidates = [(d, False)]
    tidy = _tidy(sympy.simplify(d))
    if tidy != d:
        candidates.append((tidy, False))
    candidates += [(k, False) for k in _known_functions_equal_to(d, fn)]
    for in_y in _through_output(d, fn.definition):
        if _Y in in_y.free_symbols and X not in in_y.free_symbols and agrees(in_y):
            candidates.append((_tidy(in_y), True))
    extremes = _Extremes(d.xreplace(sample_params), own.xreplace(sample_params))
    scores = [extremes.score(c.xreplace(sample_params)) for c, _ in candidates]
    if max(scores) < extremes.points:  # every form overflows somewhere: try the tanh forms too
        for form in _tanh_forms(d):
            if form not in (c for c, _ in candidates) and agrees(form):
                candidates.append((form, False))
                scores.append(extremes.score(form.xreplace(sample_params)))
    # finite where the derivative is finite first, then cheapest, then through the output
    best = min(range(len(candidates)),
               key=lambda i: (-scores[i], cost(candidates[i][0]), not candidates[i][1]))
    return candidates[best][0].xreplace({_Y: own})


#: Inputs far out on both sides, where float32 exp and cosh overflow (past about 88.7): a form
#: that is inf or nan there, where the derivative itself is finite, loses to one that is not.
_EXTREMES = (-1000.0, -200.0, -90.0, -30.0, 30.0, 90.0, 200.0, 1000.0)


class _Extremes:
    """How many of the extreme inputs a candidate form gets right in float32, evaluated as the
    generated code evaluates it (defined functions by their stable forms, y = f(x) first)."""

    def __init__(self, d: sympy.Expr, own: sympy.Expr):
        self.truth = {}
        # at 30 digits, without evalf's adaptive precision (1 + erf(-707) would take minutes)
        exact = sympy.lambdify(X, _expand_functions(d), "mpmath")
        for x in _EXTREMES:
            try:
                with mpmath.workdps(30):
                    value = complex(exact(mpmath.mpf(x)))
            except (TypeError, ValueError, ZeroDivisionError, OverflowError, NameError):
                continue
            if value.imag == 0 and math.isfinite(value.real) and abs(value.real) < 3e38:
                self.truth[x] = value.real
        self.points = len(self.truth)
        self.forward = _float32_function(own, (X,))

    def score(self, candidate: sympy.Expr) -> int:
        f = _float32_function(candidate, (X, _Y))
        if f is None or self.forward is None:
            return 0
        right = 0
        with np.errstate(all="ignore"):
            for x, want in self.truth.items():
                try:
                    xv = np.float32(x)
                    got = float(np.float32(f(xv, np.float32(self.forward(xv)))))
                except (NameError, TypeError, ValueError, ZeroDivisionError, OverflowError):
                    continue
                right += math.isfinite(got) and abs(got - want) <= 1e-3 * max(1.0, abs(want))
        return right


def _float32_function(expr: sympy.Expr, args: tuple) -> Callable | None:
    """expr as a numpy function, defined functions replaced by their stable forms."""
    while any(isinstance(e, ElementwiseFunction) for e in sympy.preorder_traversal(expr)):
        expr = expr.replace(lambda e: isinstance(e, ElementwiseFunction), lambda e: e.lowered())
    try:  # numpy has no erf; the generated code computes it with math.erf too
        return sympy.lambdify(args, expr, [{"erf": np.vectorize(math.erf, otypes=[np.float32])}, "numpy"])
    except (NameError, TypeError, ValueError, KeyError, ImportError):
        return None


def _tanh_forms(d: sympy.Expr) -> list[sympy.Expr]:
    """d with exponentials written through tanh (e^x = (1 + tanh(x/2)) / (1 - tanh(x/2))),
    simplified and factored: tanh saturates where exp overflows."""
    if not d.has(sympy.exp) or sympy.count_ops(d) > 40:  # simplify is slow on a long expression
        return []
    r = d.rewrite(sympy.tanh)
    forms = []
    for tidy in (sympy.simplify, sympy.factor):
        try:
            form = _tidy(tidy(r))
        except (NotImplementedError, ValueError, TypeError):
            continue
        if form not in forms:
            forms.append(form)
    return forms


def _through_output(d: sympy.Expr, definition: sympy.Expr) -> list[sympy.Expr]:
    """Ways of writing d(x) through y = f(x): substitute f, rename x -> y, or invert f."""
    out = [d.subs(definition, _Y), d.xreplace({X: _Y})]
    if definition.count(X) == 1:  # a chain of invertible steps: solving is quick
        try:
            solutions = sympy.solve(sympy.Eq(_Y, definition), X)
        except (NotImplementedError, ValueError, TypeError):
            solutions = []
        if len(solutions) == 1:
            inv = sympy.factor(sympy.cancel(sympy.simplify(d.xreplace({X: solutions[0]}))))
            out += [inv, inv.replace(sympy.Abs, lambda a: a)]
    return out


def _known_functions_equal_to(d: sympy.Expr, fn: type) -> list[sympy.Expr]:
    found = []
    for other in REGISTRY.values():
        if other is fn or other.parameters:
            continue
        if _agree(other.definition.xreplace({X: _Y}), d, X) and sympy.simplify(d - other.definition) == 0:
            found.append(other(X))
    return found


def _agree(candidate_in_y: sympy.Expr, d: sympy.Expr, definition: sympy.Expr) -> bool:
    """Does candidate(f(x)) equal d(x) at the sample points where both are finite reals?"""
    if candidate_in_y.free_symbols - {_Y, X}:
        return False
    cf = sympy.lambdify((X, _Y), _expand_functions(candidate_in_y), "math")
    df = sympy.lambdify(X, _expand_functions(d), "math")
    ff = sympy.lambdify(X, _expand_functions(definition), "math")
    checked = 0
    for x in _SAMPLES:
        try:
            want, y = float(df(x)), float(ff(x))
            got = float(cf(x, y))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError, NameError):  # NameError: no math.f
            continue
        if not (math.isfinite(want) and math.isfinite(y)):
            continue
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            return False
        checked += 1
    return checked >= 3


def _expand_functions(expr: sympy.Expr) -> sympy.Expr:
    """Replace defined functions by their definitions and kinks by math-module-friendly forms."""
    expr = expr.replace(lambda e: isinstance(e, ElementwiseFunction), lambda e: e.expanded())
    return expr.replace(
        sympy.Heaviside, lambda a, *h: sympy.Piecewise((1, a > 0), (h[0] if h else 0, True))
    )


def _kinks_to_zero(expr: sympy.Expr) -> sympy.Expr:
    """Heaviside(t) -> Heaviside(t, 0): the derivative at a kink is taken as 0, as frameworks do."""
    return expr.replace(sympy.Heaviside, lambda a, *h: sympy.Heaviside(a, 0))


def _tidy(expr: sympy.Expr) -> sympy.Expr:
    """Print-friendly sign: -y*(y - 1) -> y*(1 - y)."""
    expr = sympy.factor_terms(expr)
    if isinstance(expr, sympy.Mul) and expr.args[0] == -1:
        adds = [a for a in expr.args[1:] if isinstance(a, sympy.Add)]
        if len(adds) == 1:
            rest = [a for a in expr.args[1:] if a is not adds[0]]
            return sympy.Mul(*rest, -adds[0])
    return expr


_TRANSCENDENTAL = (sympy.exp, sympy.log, sympy.tanh, sympy.sinh, sympy.cosh, sympy.sin,
                   sympy.cos, sympy.atan, sympy.atanh, sympy.LambertW, log1p, sympy.erf)


def cost(expr: sympy.Expr) -> int:
    """A rough operation count: transcendental functions and fractional powers weigh 8."""
    if expr.is_Atom:
        return 0
    own = 0
    if isinstance(expr, (*_TRANSCENDENTAL, ElementwiseFunction)):
        own = 8
    elif isinstance(expr, sympy.Pow):
        own = abs(int(expr.exp)) if expr.exp.is_Integer else 8
        return own + cost(expr.base)
    elif isinstance(expr, (sympy.Add, sympy.Mul)):
        own = len(expr.args) - 1
    else:
        own = 1
    return own + sum(cost(a) for a in expr.args)


# -- the built-in functions --------------------------------------------------------------
_alpha = sympy.Symbol("alpha", positive=True)

sigmoid = define_function(
    "sigmoid", 1 / (1 + sympy.exp(-X)), X, latex=r"\sigma",
    # 0.5 + 0.5 tanh(x/2) equals the logistic function, never overflows, and numpy's tanh is SIMD.
    stable=lambda x: sympy.S.Half + sympy.S.Half * sympy.tanh(x / 2),
)
relu = define_function(
    "relu", sympy.Max(X, 0), X, latex=r"\operatorname{relu}",
)
leaky_relu = define_function(
    "leaky_relu", sympy.Piecewise((X, X > 0), (_alpha * X, True)), X,
    latex=r"\operatorname{leaky\_relu}", parameters=(_alpha,),
)
softplus = define_function(
    "softplus", sympy.log(1 + sympy.exp(X)), X, latex=r"\operatorname{softplus}",
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no lost digits for small.
    stable=lambda x: sympy.Max(x, 0) + log1p(sympy.exp(-sympy.Abs(x))),
)

