"""No value inside a model reaches generated source except declared names and finite numbers.

Each payload below would, if it reached a generated module (or sympy's string parser), create a
marker file; the model must instead be refused when it is built, naming this file and line.
"""
from __future__ import annotations

import pathlib

import pytest
import sympy
from symgrad.codegen.emit import _compiled, _float
from symgrad.codegen.kernels import InlineNumpy, NumexprPrinter, _literal, build_kernel
from symgrad.codegen.program import Lowering
from symgrad.symbolic.errors import ModelError, ShapeError, SymgradError

import symgrad as sg
from symgrad import ops as F

HERE = pathlib.Path(__file__).name


@pytest.fixture
def marker(tmp_path):
    """A path the payload would create; the test fails if it ever exists."""
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a value inside the model was executed"


def payload(marker: pathlib.Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def small():
    m = sg.Model("m")
    B, n = m.dims("B n")
    X, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W = m.param("W", (n, 1))
    return m, X, y, W, B, n


def refused(build, match: str) -> str:
    with pytest.raises(ModelError, match=match) as e:
        build()
    message = str(e.value)
    assert f"{HERE}:" in message and "\n" not in message  # one line, naming the user's line
    return message


# -- sympy Symbols that are not the model's dims -------------------------------------------
def test_take_with_a_symbol_index_is_refused(marker):
    m, X, y, W, B, n = small()
    evil = sympy.Symbol(payload(marker))
    refused(lambda: m.let("z", F.take(X, 1, evil, 4)), "is not a dim of the model")


def test_take_with_an_integer_symbol_index_is_refused(marker):
    m, X, y, W, B, n = small()
    evil = sympy.Symbol(payload(marker), integer=True)
    refused(lambda: m.let("z", F.take(X @ W, 1, evil, evil + 1)), "is not a dim of the model")


def test_leaky_relu_slope_symbol_is_refused(marker):
    m, X, y, W, B, n = small()
    refused(lambda: sg.leaky_relu(X @ W, sympy.Symbol(payload(marker))), "alpha must be a finite number")


def test_scaling_by_an_integer_symbol_is_refused(marker):
    m, X, y, W, B, n = small()
    evil = sympy.Symbol(payload(marker), integer=True)
    refused(lambda: m.let("z", (X @ W) * evil), "is not a dim of the model")


def test_batchnorm_eps_symbol_is_refused(marker):
    m, X, y, W, B, n = small()
    evil = sympy.Symbol(payload(marker), integer=True)
    refused(lambda: m.batchnorm(X, "bn", eps=evil), "eps must be a finite number")


def test_a_shape_with_a_foreign_symbol_is_refused(marker):
    m, X, y, W, B, n = small()
    evil = sympy.Symbol(payload(marker), integer=True, positive=True)
    refused(lambda: m.let("z", F.eye(evil) @ F.eye(evil)), "is not a dim of the model")


def test_a_dim_of_another_model_is_refused():
    m, X, y, W, B, n = small()
    other = sg.Model("other")
    (k,) = other.dims("k")
    refused(lambda: m.let("z", (X @ W) * k), "symbol 'k' is not a dim of the model")


def test_a_declared_dim_is_accepted():
    m, X, y, W, B, n = small()
    z = m.let("z", (X @ W) * n)
    m.loss(sg.mse(z, y))
    assert "n" in sg.source(m)


def test_undefined_sympy_function_in_a_definition_is_refused(marker):
    x = sympy.Symbol("x")
    refused(lambda: sg.elementwise_function("evil_fn", sympy.Function(payload(marker))(x), x),
            "undefined function")


# -- strings where numbers are expected never reach sympy's parser ----------------------------
@pytest.mark.parametrize("where", ["take_start", "take_stop", "leaky_relu", "hyper", "init_scale",
                                   "batchnorm_eps", "batchnorm_momentum", "constant", "operand", "bool",
                                   "definition"])
def test_strings_are_refused_not_parsed(where, marker):
    m, X, y, W, B, n = small()
    text = payload(marker)
    build = {
        "take_start": lambda: F.take(X, 1, text, 2),
        "take_stop": lambda: F.take(X, 1, 0, text),
        "leaky_relu": lambda: sg.leaky_relu(X, text),
        "hyper": lambda: m.hyper("h", text),
        "init_scale": lambda: m.param("V", (n,), init=sg.Init("normal", text)),
        "batchnorm_eps": lambda: m.batchnorm(X, "bn", eps=text),
        "batchnorm_momentum": lambda: m.batchnorm(X, "bn", momentum=text),
        "constant": lambda: _const(text),
        "operand": lambda: X * text,
        "bool": lambda: X * True,
        "definition": lambda: sg.elementwise_function("from_text", text, sympy.Symbol("x")),
    }[where]
    with pytest.raises(ModelError) as e:
        build()
    assert "\n" not in str(e.value)


def _const(value):
    from symgrad.symbolic.graph import const

    return const(value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e308 * 10, 10**400])
def test_non_finite_constants_are_refused(bad):
    m, X, y, W, B, n = small()
    refused(lambda: m.let("z", (X @ W) * bad), "must be a finite number")


def test_non_finite_symbolic_numbers_are_refused():
    m, X, y, W, B, n = small()
    for bad in (sympy.oo, sympy.nan, sympy.zoo, sympy.I, 2 + sympy.I, sympy.Float("inf")):
        refused(lambda bad=bad: (X @ W) * bad, "must be a finite real number")


@pytest.mark.parametrize("kwargs", [{"stride": "1"}, {"padding": 1.5}, {"stride": 0}, {"padding": True}])
def test_conv_window_arguments_must_be_ints(kwargs):
    m = sg.Model("c")
    (B,) = m.dims("B")
    X, K = m.input("X", (B, 8, 8, 1)), m.param("K", (3, 3, 1, 4))
    with pytest.raises(ShapeError, match="must be an integer"):
        F.conv2d(X, K, **kwargs)


# -- defence in depth: the printers name only what they were given ----------------------------
def test_kernel_printers_refuse_a_foreign_name(marker):
    a = sympy.Symbol("a", real=True)
    evil = sympy.Symbol(payload(marker), real=True)
    with pytest.raises(ModelError, match="not one of its own names"):
        build_kernel(a * evil + 1, ("a",))
    with pytest.raises(ModelError, match="not one of its own names"):
        InlineNumpy({"a"}).doprint(a * evil)
    with pytest.raises(ModelError, match="not one of its own names"):
        NumexprPrinter({"a"}).doprint(a * evil)


def test_literals_are_finite():
    for bad in (sympy.nan, sympy.oo, -sympy.oo, sympy.zoo, sympy.I):
        with pytest.raises(ModelError, match="not a finite"):
            _literal(bad)
    with pytest.raises(SymgradError, match="not a finite"):
        _float(float("nan"))
    assert _literal(sympy.Rational(1, 4)) == "0.25" and _float(2) == "2.0"


def test_lowering_names_only_the_models_dims(marker):
    lowering = Lowering({}, {}, {}, {}, dim_names=frozenset({"B"}))
    assert lowering._dim_text(sympy.Symbol("B", integer=True, positive=True) - 1) == "B-1"
    with pytest.raises(ModelError, match="not one of its own names"):
        lowering._dim_text(sympy.Symbol(payload(marker), integer=True))


def test_a_module_that_would_not_compile_is_an_error():
    with pytest.raises(SymgradError, match="does not compile"):
        _compiled("x = (\n", "broken")


# -- numbers and text that generated source cannot hold ---------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e308 * 1e308, -float("inf")])
def test_non_finite_hyper_defaults_and_init_scales_are_refused(bad):
    m, X, y, W, B, n = small()
    refused(lambda: m.hyper("h", bad), "hyper 'h': the default must be a finite number")
    refused(lambda: m.param("V", (n,), init=sg.Init("normal", bad)), "param 'V': the init scale")
    refused(lambda: m.state("S", (n,), init=sg.Init("constant", bad)), "state 'S': the init scale")
    refused(lambda: m.dropout(X, bad), "must be a finite number")


@pytest.mark.parametrize("text, shown", [("nul\x00byte", r"'\x00'"), ("lone \udc80 surrogate", r"'\udc80'"),
                                         ("bell\x07", r"'\x07'")])
def test_descriptions_that_no_file_can_hold_are_refused(text, shown):
    with pytest.raises(ModelError) as e:
        sg.Model("m", text)
    message = str(e.value)
    assert "description holds the character" in message and shown in message
    assert "\n" not in message and f"{HERE}:" in message


@pytest.mark.parametrize("text", ['ends with a quote"', 'three """ quotes', "a backslash \\ and \\n",
                                  "naïve ünïcode ok"])
def test_descriptions_with_quotes_and_backslashes_make_a_module_that_imports(text):
    m, X, y, W, B, n = small()
    m.description = sg.Model("m", text).description
    m.loss(sg.mse(m.let("z", X @ W), y))
    module = sg.load_module(m, backend="numpy")
    assert module.__doc__.startswith(f"m: {text}")


def test_a_name_slipped_into_the_tables_after_declaration_is_refused_when_generating(marker):
    m, X, y, W, B, n = small()
    m.loss(sg.mse(m.let("z", X @ W), y))
    m.leaves[payload(marker)] = m.leaves.pop("W")
    with pytest.raises(ModelError, match="not a valid Python identifier"):
        sg.source(m)


def test_a_function_the_code_generator_cannot_lower_is_one_error():
    x = sympy.Symbol("x")
    fn = sg.elementwise_function("gamma_act", sympy.gamma(x), x)
    m, X, y, W, B, n = small()
    m.loss(sg.mse(m.let("z", fn(X @ W)), y))
    with pytest.raises(SymgradError, match="no numpy lowering for gamma"):
        sg.source(m, "numpy")


def test_take_bounds_must_not_be_negative():
    m, X, y, W, B, n = small()
    with pytest.raises(ShapeError, match="must not be negative, not -3 and 2"):
        F.take(X, 1, -3, 2)
