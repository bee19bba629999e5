"""Derivation documents: fresh, deterministic, faithful to the derivation and to the code."""
from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from symgrad.codegen import stamp
from symgrad.codegen.emit import generate
from symgrad.symbolic.autodiff import Accumulation
from symgrad.symbolic.errors import SymgradError, SymgradWarning
from symgrad.symbolic.functions import REGISTRY, X, derivative_of, sigmoid
from symgrad.symbolic.printing import Printer

import symgrad as sg
from symgrad.cli import main
from symgrad.documents import FORMATS, PRIMER, check, code, document, render
from symgrad.documents.html import mathml
from symgrad.models import BUILTINS

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "derivations"
SPECS = [*BUILTINS, PRIMER]


@functools.cache
def built(spec: str):
    return document(spec)


@functools.cache
def rendered(spec: str, fmt: str) -> str:
    return render(built(spec), fmt)


# -- committed documents -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("spec", SPECS)
def test_committed_document_is_fresh(spec, fmt):
    """Byte for byte, except the measured numbers of the numeric check's rows (round-off, which
    can differ in its last digit with the BLAS library): those rows must still pass, and the
    stamp, which hashes them, must still match the committed file's own body."""
    text = (DOCS / f"{spec}.{fmt}").read_text()
    assert stamp.check(text, fmt) is None, f"docs/derivations/{spec}.{fmt}: {stamp.check(text, fmt)}"
    committed, fresh = text.splitlines()[1:], rendered(spec, fmt).splitlines()[1:]
    assert len(committed) == len(fresh), f"docs/derivations/{spec}.{fmt} is stale: run `make docs`"
    for old, new in zip(committed, fresh, strict=True):
        if old != new:
            assert _check_row(old) and _check_row(new), \
                f"docs/derivations/{spec}.{fmt} is stale: run `make docs`\n{old[:200]}\n{new[:200]}"


def _check_row(line: str) -> bool:
    """A row of a numeric-check table that reports a pass, in any of the three formats."""
    return ("✓ passed" in line and line.startswith("|")) or 'class="passed"' in line \
        or line.rstrip().endswith("& passed \\\\")


def test_no_stray_documents():
    assert {p.name for p in DOCS.iterdir()} == {f"{s}.{f}" for s in SPECS for f in FORMATS}


def test_documents_are_byte_identical_across_processes():
    """A fresh interpreter (new hash seed, new sympy caches, new numeric check) writes the same."""
    script = ("import sys\nfrom symgrad.documents import document, render\n"
              "d = document('mlp_relu')\nsys.stdout.write(render(d, 'md') + render(d, 'html'))")
    outs = []
    for seed in ("1", "777"):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] == rendered("mlp_relu", "md") + rendered("mlp_relu", "html")


# -- the content follows the derivation ----------------------------------------------------------
def _sections(doc, kind):
    return [s for s in doc.sections if s.kind == kind]


@pytest.mark.parametrize("name", list(BUILTINS))
def test_sections_come_in_the_promised_order(name):
    second = ("second-order", "closed-form", "second-order-check")  # between the check and the code
    sections = built(name).sections
    kinds = [s.kind for s in sections if (s.kind != "text" or s.id == "notation") and s.id not in second]
    order = ["text", "symbols", "dims", "equations", "steps", "gradients", "check", "code"]
    assert [k for k in order if k in kinds] == order
    assert sorted(kinds, key=order.index) == kinds
    ids = [s.id for s in sections]
    assert ids.index("check") < ids.index("second-order") < ids.index("second-order-check")
    assert ids.index("second-order-check") < ids.index("code")


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_backward_step_is_accounted_for(name):
    d = sg.derive(BUILTINS[name].build())
    (steps,) = _sections(built(name), "steps")
    # a step with a local derivative of 1 is shown inside the step that starts from it
    every = sorted([*steps.items, *(f for s in steps.items for f in s.folded)], key=lambda s: s.number)
    assert [s.number for s in every] == [e.number for e in d.backward]
    for s in steps.items:
        assert all(f.compact and f.number < s.number for f in s.folded)
    for shown, eq in zip(every, d.backward, strict=True):
        want = "sum of contributions" if isinstance(eq.step, Accumulation) else eq.step.rule
        assert shown.rule == want
        assert shown.equation.anchor == f"eq-{eq.number}"
        if not shown.compact and not isinstance(eq.step, Accumulation):
            assert shown.details, f"step ({eq.number}) explains nothing"


@pytest.mark.parametrize("name", list(BUILTINS))
def test_symbol_table_lists_every_leaf_and_equation(name):
    model = BUILTINS[name].build()
    d = sg.derive(model)
    (symbols,) = _sections(built(name), "symbols")
    shown = [r.symbol for r in symbols.items]
    assert shown == [d.printer.latex(v) for v in model.leaves.values()] + [e.lhs_latex for e in d.forward]
    roles = {r.symbol: r.role for r in symbols.items}
    for leaf in model.params.values():
        assert roles[d.printer.latex(leaf)] == "parameter"


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_parameter_gradient_is_highlighted(name):
    model = BUILTINS[name].build()
    (grads,) = _sections(built(name), "gradients")
    assert len(grads.items) == len(model.params)
    md = rendered(name, "md")
    for g in grads.items:
        assert g.computed_in is not None
        assert rf"\boxed{{{g.equation.lhs} = {g.equation.rhs}}}" in md


@pytest.mark.parametrize("name", list(BUILTINS))
def test_equation_numbers_are_those_of_the_generated_code(name):
    """Every `# (N) text` comment of the generated module is equation (N) of the document."""
    d = sg.derive(BUILTINS[name].build())
    source = generate(d)
    cited = code.cited_equations(source)
    assert cited, "the generated module cites no equation"
    texts = {e.number: d.text(e) for e in d.equations}
    for number, text in cited.items():
        assert " ".join(texts[number].split()) == " ".join(text.split()), number
    doc = built(name)
    in_blocks = {n for s in _sections(doc, "code") for b in s.items for n in b.numbers}
    assert in_blocks == set(cited)
    for s in _sections(doc, "code"):
        for b in s.items:
            for n in b.numbers:
                assert f"# ({n}) " in b.code
    html, md, tex = (rendered(name, f) for f in ("html", "md", "tex"))
    for e in d.equations:
        assert f'id="eq-{e.number}"' in html
        assert rf"\tag{{{e.number}}}" in md
        assert rf"\tag{{{e.number}}}\label{{eq-{e.number}}}" in tex


def test_committed_module_cites_what_the_document_shows():
    committed = (ROOT / "generated" / "mlp_tanh.py").read_text()
    doc_numbers = {n for s in _sections(built("mlp_tanh"), "code") for b in s.items for n in b.numbers}
    assert set(code.cited_equations(committed)) == doc_numbers


def test_elementwise_steps_show_sympys_scalar_derivative():
    md = rendered("mlp_sigmoid", "md")
    assert Printer().expr(derivative_of(sigmoid), {X: "x"}, "latex") in md  # sigma' = sigma (1 - sigma)
    assert r"\sigma\left(x\right) = \frac{1}{1 + e^{- x}}" in md
    assert r"1 - \tanh^{2}{\left(x \right)}" in rendered("mlp_tanh", "md")
    assert r"\mathbb{1}\left[" in rendered("mlp_relu", "md")


def test_a_users_own_function_is_derived_in_the_document(tmp_path):
    path = tmp_path / "swishnet.py"
    path.write_text(SWISH_MODEL)
    doc = document(str(path))
    md = render(doc, "md")
    derived = Printer().expr(derivative_of(REGISTRY["swish"]), {X: "x"}, "latex")
    assert derived in md
    assert r"\operatorname{swish}\left(x\right) = \frac{x}{1 + e^{- x}}" in md
    checks = [s.items for s in doc.sections if s.kind == "check"]  # first and second order
    assert len(checks) == 2 and all(r.passed for rows in checks for r in rows)


SWISH_MODEL = '''
import sympy
import symgrad as sg

m = sg.Model("swishnet", "a one-layer network with a swish activation", task="regression")
B, n_in, n_out = m.dims("B n_in n_out")
X, Y = m.input("X", (B, n_in)), m.target("Y", (B, n_out))
W, b = m.param("W", (n_in, n_out)), m.param("b", (n_out,), init="zeros")
x = sympy.Symbol("x")
swish = sg.elementwise_function("swish", x / (1 + sympy.exp(-x)), x)
z = m.let("z", X @ W + b)
m.output("Yhat", swish(z))
m.loss(sg.mse(swish(z), Y) + 1e-3 * sg.l2(W))
'''


# -- the numeric check ---------------------------------------------------------------------------
def test_numeric_check_passes_for_every_model_and_states_its_settings():
    for spec in SPECS:
        rows = [r for s in _sections(built(spec), "check") for r in s.items]
        assert rows and all(r.passed for r in rows), spec
    md = rendered("mlp_tanh", "md")
    assert "float64" in md and "$B = 3$" in md and "seed 0" in md


def test_numeric_check_catches_a_wrong_gradient():
    model = BUILTINS["logistic_regression"].build()
    module = check.load(generate(sg.derive(model)), "wrong_logreg")
    honest = module.loss_and_grad

    def off_by_one_percent(params, batch, *args, **kwargs):
        loss, grads = honest(params, batch, *args, **kwargs)
        return loss, {**grads, "W": grads["W"] * 1.01}

    module.loss_and_grad = off_by_one_percent
    _, results = check.run(module)
    by_name = {r.name: r for r in results}
    assert not by_name["W"].passed and 1e-3 < by_name["W"].error < 1e-1
    assert by_name["b"].passed


def test_errors_print_as_one_digit_or_a_floor():
    from symgrad.documents.mathtext import power_of_ten

    assert power_of_ten(3.4e-8, 1e-9) == r"3 \times 10^{-8}"
    assert power_of_ten(2e-13, 1e-9) == r"< 10^{-9}"
    assert power_of_ten(float("nan"), 1e-9) == r"\text{not finite}"


# -- the primer ----------------------------------------------------------------------------------
def test_primer_derives_and_checks_the_results():
    doc = built(PRIMER)
    titles = [s.title for s in doc.sections if s.level == 2]
    assert titles[1:] == ["The Jacobian of a vector function", "The gradient of a quadratic form",
                          "The gradient of a squared residual", "The gradients of a tanh layer's read-out",
                          "The gradient of a trace", "The gradient of a log-determinant",
                          "The gradient through a matrix inverse"]
    rows = {r.name: r for s in _sections(doc, "check") for r in s.items}
    assert rows["J"].passed and rows["J"].shape == r"4 \times 3"
    md = rendered(PRIMER, "md")
    assert md.count("In textbook form") == 7
    assert md.count(r"relative difference of $< 10^{-6}$") == 7
    # matrix calculus in textbook form: the derived gradients themselves, not only the note
    for derived in (r"= A^{\top} B^{\top}}", r"= X^{-\top}}", r"= - X^{-\top} C X^{-\top}}"):
        assert r"\boxed{\frac{\partial L}{\partial X} " + derived in md
    # x appears twice in x^T A x: its gradient is a sum of two contributions, shown as such
    assert r"\frac{\partial L}{\partial x} = \left[\frac{\partial L}{\partial x}\right]_{(2)} + " in md


# -- formats -------------------------------------------------------------------------------------
def test_html_is_self_contained_and_its_maths_converted():
    for spec in ("mlp_tanh", PRIMER):
        html = rendered(spec, "html")
        outside = set(re.findall(r"(?:https?:)?//[\w.-]+", html)) - {"http://www.w3.org"}
        assert not outside, outside
        assert "<script" not in html and "<link" not in html and "@import" not in html
        maths = re.findall(r"<math\b.*?</math>", html, flags=re.S)
        assert len(maths) > 50
        for m in maths:
            assert "\\" not in m and "<merror" not in m, m[:200]
    assert 'class="code"' in rendered("mlp_tanh", "html")  # Pygments


def test_mathml_handles_every_construct_the_printer_emits():
    for latex in [r"\delta_{z} \odot \left(1 - h^{2}\right)", r"\frac{\sum_{B,n_{out}} Y}{B}",
                  r"\operatorname{leaky\_relu}\left(x\right)", r"\mathbb{1}\left[h > 0\right]",
                  r"W^{\top}", r"\operatorname{broadcast}_{\left(B, n\right)}\left(u\right)",
                  r"\begin{cases} 1 & \text{for}\: x > 0 \\\alpha & \text{otherwise} \end{cases}",
                  r"\left[\frac{\partial L}{\partial x}\right]_{(8)}", r"\lVert x \rVert"]:
        out = mathml(latex)
        assert out.startswith("<math") and "\\" not in out, latex
    with pytest.raises(SymgradError, match="cannot convert"):
        mathml(r"\left(x")


def test_markdown_uses_github_maths():
    md = rendered("mlp_tanh", "md")
    assert md.count("$$") % 2 == 0 and "\\tag{24}" in md
    header = None
    for line in md.splitlines():  # a bar inside maths would split a table cell
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = line.count("|")
        else:
            assert line.count("|") == header, line


def _pdflatex_or_skip() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("SYMGRAD_REQUIRE_PDFLATEX"):
            pytest.fail("pdflatex is required here (SYMGRAD_REQUIRE_PDFLATEX is set) but not installed")
        pytest.skip("pdflatex is not installed: apt-get install texlive-latex-base to compile the LaTeX")
    return exe


@pytest.mark.parametrize("spec", ["mlp_tanh", PRIMER])
def test_latex_compiles_with_pdflatex(spec, tmp_path):
    exe = _pdflatex_or_skip()
    (tmp_path / f"{spec}.tex").write_text(rendered(spec, "tex"))
    r = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", f"{spec}.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (tmp_path / f"{spec}.pdf").stat().st_size > 10_000


# -- the command line ----------------------------------------------------------------------------
def _run(argv, capsys):
    code_ = main(argv)
    out, err = capsys.readouterr()
    return code_, out, err


def test_doc_command_writes_every_format_and_prints_paths(tmp_path, capsys):
    code_, out, err = _run(["doc", "softmax_regression", "--format", "all", "--out", str(tmp_path)], capsys)
    assert code_ == 0, err
    for fmt in FORMATS:
        path = tmp_path / f"softmax_regression.{fmt}"
        assert f"wrote {path}" in out
        assert stamp.check(path.read_text(), fmt) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"softmax_regression.{f}" for f in sorted(FORMATS)]


def test_doc_command_takes_a_users_model_file(tmp_path, capsys):
    path = tmp_path / "swishnet.py"
    path.write_text(SWISH_MODEL)
    code_, out, err = _run(["doc", str(path), "--format", "html", "--out", str(tmp_path / "out")], capsys)
    assert code_ == 0, err
    assert "swish" in (tmp_path / "out" / "swishnet.html").read_text()


@pytest.mark.parametrize("argv, status, message", [
    (["doc", "no_such_model", "--format", "md"], 1, "unknown model 'no_such_model'"),
    (["doc", "mlp_tanh", "--format", "pdf"], 2, "invalid choice: 'pdf'"),
    (["doc", "--format", "md"], 1, "name a model"),
])
def test_doc_command_bad_input_is_one_line(argv, status, message, tmp_path, capsys):
    with pytest.raises(SystemExit) if status == 2 else _nothing() as exit_info:
        code_ = main([*argv, "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert (exit_info.value.code if status == 2 else code_) == status
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_doc_command_unwritable_output_is_one_line_and_leaves_nothing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        code_, _, err = _run(["doc", "linear_regression", "--out", str(out)], capsys)
        assert code_ == 1 and err.count("\n") == 1 and "folder" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_doc_command_refuses_to_overwrite_a_file_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "linear_regression.md"
    mine.write_text("my notes\n")
    code_, _, err = _run(["doc", "linear_regression", "--out", str(tmp_path)], capsys)
    assert code_ == 1 and "refusing to overwrite" in err
    assert mine.read_text() == "my notes\n"


def test_a_failure_while_building_writes_nothing(tmp_path, capsys, monkeypatch):
    import symgrad.documents.cli as doc_cli

    calls = []

    def failing_render(doc, fmt, command=None):
        calls.append(fmt)
        if fmt == "tex":
            raise SymgradError("rendering failed")
        return "Generated by symgrad\n"

    monkeypatch.setattr(doc_cli, "render", failing_render)
    argv = ["doc", "linear_regression", "--format", "all", "--out", str(tmp_path / "o")]
    code_, _, err = _run(argv, capsys)
    assert code_ == 1 and "rendering failed" in err and calls == ["md", "html", "tex"]
    assert not (tmp_path / "o").exists()


def test_a_failing_numeric_check_is_a_warning_and_marked(monkeypatch):
    real = check.gradients

    def pessimist(*args):
        return [check.Result(r.name, r.shape, 0.5) for r in real(*args)]

    monkeypatch.setattr(check, "gradients", pessimist)
    with pytest.warns(SymgradWarning, match="differs from finite differences"):
        doc = document("linear_regression")
    assert "✗ FAILED" in render(doc, "md") and "SOME GRADIENTS DISAGREE" in render(doc, "md")


def test_check_differences_are_exact_for_a_cubic():
    x = np.array([0.3, -1.2])
    fd = check.differences(lambda: np.sum(x ** 3), x)
    assert np.allclose(fd, 3 * x ** 2, rtol=1e-12)
