"""Derivation documents read as a student reads them: every statement true, every tag right."""
from __future__ import annotations

import functools
import pathlib
import re

import pytest
from symgrad.codegen.emit import generate

import symgrad as sg
from symgrad.documents import code, document, render
from symgrad.models import BUILTINS

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "derivations"


@functools.cache
def built(spec: str):
    return document(spec)


def _steps(doc):
    return next(s for s in doc.sections if s.kind == "steps").items


@pytest.mark.parametrize("name", ["lstm_digits", "gru_digits", "rnn_sines"])
def test_a_recurrence_step_starts_from_the_adjoint_of_its_states(name):
    d = sg.derive(BUILTINS[name].build())
    loss_steps = {e.number for e in d.backward if e.step.node is d.loss}
    for step in _steps(built(name)):
        said = " ".join(p.plain for p in step.details)
        if "where the chain rule starts" in said:
            assert step.number in loss_steps, f"step ({step.number}) claims to start from the loss"
        if step.rule.startswith("recurrence"):
            assert "Incoming adjoints:" in said and r"\delta_{H}" in said, said


@pytest.mark.parametrize("name", list(BUILTINS))
def test_a_code_tag_names_the_equation_its_lines_compute(name):
    """Under the tags of a block, the block assigns every tagged equation's own name."""
    d = sg.derive(BUILTINS[name].build())
    source = generate(d)
    body = code.function_body(source, "loss_and_grad")
    text = "\n".join(body)
    lhs = {e.number: e.lhs_text for e in d.equations}
    for block in code.blocks(body):
        for n in block.numbers:
            assigned = set(re.findall(r"^\s*(\w+) = |out=(\w+)\)", block.code, flags=re.M))
            assigned = {a or b for a, b in assigned}  # a plain assignment or an in-place update
            name_ = lhs[n]
            if name_.isidentifier() and re.search(rf"^\s*{name_} = ", text, flags=re.M):
                assert name_ in assigned, (n, block.code)


def test_mlp_softmax_step_is_tagged_where_it_is_computed():
    source = (ROOT / "generated" / "mlp_tanh.py").read_text()
    body = "\n".join(code.function_body(source, "loss_and_grad"))
    block = body[body.index("# (11) "):]
    assert len(re.findall(r"^dL_dz3 = ", block.split("\n# (")[0], flags=re.M)) == 1


def test_a_broadcast_scalar_result_is_called_a_scalar():
    step9 = next(s for s in _steps(built("mlp_tanh")) if s.number == 9)
    note = step9.details[-1].plain
    assert "whose every entry is the scalar" in note and "Result shape" not in note


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.stem)
def test_no_printing_glitches(path):
    text = path.read_text()
    maths = " ".join(re.findall(r"\$\$?([^$]+)\$\$?", text))
    assert not re.search(r"(?<![\w}^{])\d+ \\odot ", maths), "a number times a tensor printed as odot"
    assert " + - " not in maths
    assert "1.0 \\cdot 10" not in maths and "00000000" not in maths
    assert "_{\\sigma_{2}}" not in maths


def test_the_gan_summary_is_read_off_its_equations():
    md = render(built("gan_ring"), "md")
    summary = md.split("**Contents**")[0]
    assert "leaky relu ($\\alpha = 0.2$) in (2) and (3)" in summary
    assert "relu in (1)" in summary and "relu discriminator" not in summary
    assert "$L_{D}$ (4) over $Wd_{1}$" in summary and "no player minimises it" in summary


def test_the_cell_state_and_the_output_bias_have_different_names():
    md = (DOCS / "lstm_digits.md").read_text()
    assert "C_{t}" in md and "C_{prev}" in md
    assert "c_{t}" not in md and "c_{prev}" not in md
