"""A property over the whole class of "a user value reaches generated code": random models built
from random names (the generated code's own vocabulary among them), numbers and sympy symbols.

Each model is either refused while it is built (a SymgradError: one line, no other exception),
or its module compiles, imports, and its gradients match finite differences. Payloads that
would create a marker file if anything ran them are among the values; the marker never appears.
"""
from __future__ import annotations

import ast
import keyword
import os
import pathlib
import re
import tempfile
import tokenize
import warnings

import numpy as np
import sympy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from symgrad.codegen.emit import generate
from symgrad.symbolic.derivation import derive
from symgrad.symbolic.errors import ModelError, SymgradError
from symgrad.symbolic.names import check_identifier

import symgrad as sg
from symgrad import ops as F
from symgrad.pipeline import GENERATED, import_source
from tests.test_module_robustness import gradients_match

MARKER = pathlib.Path(tempfile.gettempdir()) / f"symgrad-property-marker-{os.getpid()}"
PAYLOADS = [f"__import__('os').system('touch {MARKER}')", f"open('{MARKER}', 'w')",
            "x); import os; os.system('true'); (", "a\nb", "nan", "inf", "1e999", "x" * 200]


def _vocabulary() -> list[str]:
    """Every identifier the committed generated modules use (their locals, helpers' arguments,
    numpy names, built-in models' names): the names most likely to clash."""
    names = set()
    for path in sorted(GENERATED.glob("*.py")):
        with tokenize.open(path) as f:
            names |= {t.string for t in tokenize.generate_tokens(f.readline) if t.type == tokenize.NAME}
    return sorted(n for n in names if not keyword.iskeyword(n))


def _valid(name: str) -> bool:
    try:
        check_identifier(name, "name")
    except ModelError:
        return False
    return True


VOCABULARY = _vocabulary()
identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
good_names = st.one_of(st.sampled_from([n for n in VOCABULARY if _valid(n)]), identifiers,
                       st.builds(lambda a, n: a + "_" + "q" * n, identifiers, st.integers(40, 90)))  # long
bad_names = st.one_of(st.sampled_from([n for n in VOCABULARY if not _valid(n)]), st.sampled_from(PAYLOADS),
                      st.sampled_from(["", "1x", "a b", "naïve", "_x", "lambda", "sum", "ws", "state"]))
# one bad name in 60 draws, one bad number in 16: many models get built, some are refused
# (a middle value picks the bad branch: hypothesis draws 0 and the ends far more often)
names = st.integers(0, 59).flatmap(lambda i: bad_names if i == 37 else good_names)
good_numbers = st.one_of(st.floats(-3, 3, allow_nan=False), st.integers(-3, 3), st.floats(0.01, 0.9))
bad_numbers = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308 * 10, 10**400, sympy.oo,
                               sympy.nan, sympy.zoo, sympy.I, True, None, *PAYLOADS])
numbers = st.integers(0, 15).flatmap(lambda i: bad_numbers if i == 7 else good_numbers)
fractions = st.integers(0, 15).flatmap(lambda i: bad_numbers if i == 7 else st.floats(0.01, 0.9))


@st.composite
def symbols(draw, dims: dict[str, sympy.Symbol]):
    """A model's own dim (allowed), or a symbol of any name and assumptions (refused)."""
    if dims and draw(st.integers(0, 3)):
        return draw(st.sampled_from(sorted(dims.values(), key=str)))
    assumptions = draw(st.sampled_from([{}, {"integer": True}, {"integer": True, "positive": True}]))
    return sympy.Symbol(draw(st.one_of(good_names, st.sampled_from(PAYLOADS))), **assumptions)


def build(draw) -> sg.Model:
    """A random model: a dense layer, then a random choice of the operations that take numbers,
    names or symbols from the user."""
    used: set[str] = set()

    def name() -> str:  # distinct (a repeated name is refused, but that is not this property)
        drawn = draw(names)
        while drawn in used:
            drawn += "_"
        used.add(drawn)
        return drawn

    m = sg.Model(name(), draw(st.sampled_from(["", "a model", 'quote" end', *PAYLOADS])))
    B, n, k = m.dims([name(), name(), name()])
    dims = {str(d): d for d in (B, n, k)}
    X, Y = m.input(name(), (B, n)), m.target(name(), (B, k))
    W, b = m.param(name(), (n, k)), m.param(name(), (k,), init=sg.Init("normal", draw(numbers)))
    h = m.hyper(name(), draw(fractions))  # also a dropout rate below
    z = m.let(name(), X @ W + b)
    scalar = st.one_of(numbers, numbers, symbols(dims))
    for op in draw(st.lists(st.sampled_from(["scale", "hyper", "leaky", "take", "dropout", "batchnorm"]),
                            min_size=1, max_size=3)):
        if op == "scale":
            z = z * draw(scalar)
        elif op == "hyper":
            z = z * h
        elif op == "leaky":
            z = sg.leaky_relu(z, draw(numbers))
        elif op == "take":
            # bounds the rule can check symbolically (start 0 or 1, stop a dim or 2); a foreign
            # symbol or a number that is not an int is refused
            start = draw(st.one_of(st.integers(0, 1), st.integers(0, 1), numbers, symbols({})))
            stop = draw(st.one_of(st.sampled_from([k, k - 1, 2]), symbols(dims)))
            z = z + F.take(z, 1, start, stop).sum(axis=1, keepdims=True)
        elif op == "dropout":
            z = m.dropout(z, draw(st.one_of(fractions, st.just(h))))
        else:
            z = m.batchnorm(z, name(), eps=draw(fractions), momentum=draw(fractions))
        z = m.let(name(), z)
    m.output(name(), sg.tanh(z))
    m.loss(sg.mse(z, Y), name=name())
    return m


# few examples by default (each built model is derived, generated, imported and checked);
# SYMGRAD_PROPERTY_EXAMPLES=200 searches longer
@settings(max_examples=int(os.environ.get("SYMGRAD_PROPERTY_EXAMPLES", 8)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), backend=st.sampled_from(["numpy", "numexpr"]))
def test_random_models_are_refused_or_correct(data, backend):
    MARKER.unlink(missing_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(data.draw)
            source = generate(derive(model), backend)
    except SymgradError as e:
        event(f"refused: {type(e).__name__}")
        assert "\n" not in str(e)  # one line
        assert not MARKER.exists(), "a value inside the model was executed"
        return
    assert not MARKER.exists(), "a value inside the model was executed"
    # payload text may sit in a docstring (a description); as code it would be a name or a call
    code = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    code |= {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    assert not code & {"__import__", "open", "os", "system", "exec", "eval", "compile"}
    event("generated")
    module = import_source(source, model.name)
    sizes = {name: data.draw(st.integers(1, 5), label=name) for name in module.DIMS}
    try:
        with np.errstate(all="ignore"):
            gradients_match(module, sizes, seed=data.draw(st.integers(0, 100), label="seed"))
    except ValueError as e:  # a take whose bounds fit other dims only: the module's own check
        assert re.fullmatch(r"model '\w+': take .+ needs 0 <= .+; here .+", str(e)), e
        event("refused at the call")
    assert not MARKER.exists(), "a value inside the model was executed"


def test_the_vocabulary_holds_the_generated_codes_own_names():
    assert {"ws", "dt", "state", "params", "t1", "dL_dz1", "rng", "training"} <= set(VOCABULARY)
