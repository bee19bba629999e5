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
    assert len(re.findall(r"^(\w+, )?dL_dz3 = ", block.split("\n# (")[0], flags=re.M)) == 1


def test_a_helper_with_a_signature_over_several_lines_is_shown_whole():
    source = (ROOT / "generated" / "mlp_tanh.py").read_text()
    shown = dict(code.helpers(source, "t4, dL_dz3 = _softmax_xent(z3, Y, 1.0/B, out=z3)"))
    assert shown["_softmax_xent"].rstrip().endswith("return total, out")
    assert "_rowmax" in shown and "_ones" in shown  # what it calls comes along


def test_a_broadcast_scalar_result_is_called_a_scalar():
    step9 = next(s for s in _steps(built("mlp_tanh")) if s.number == 9)
    note = step9.details[-1].plain
    assert "whose every entry is the scalar" in note and "Result shape" not in note


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.stem)
def test_no_printing_glitches(path):
    text = path.read_text()
    maths = " ".join(re.findall(r"\$\$?([^$]+)\$\$?", text))
    assert not re.search(r"(?<![\w}^{])\d+ \\odot ", maths), "a number times a tensor printed as odot"
    assert not re.search(r"[{ ]B \\odot ", maths), "a dim times a tensor printed as odot (B n_out: a number)"
    assert " + - " not in maths
    assert "1.0 \\cdot 10" not in maths and "00000000" not in maths
    assert "_{\\sigma_{2}}" not in maths


def test_the_gan_summary_is_read_off_its_equations():
    md = render(built("gan_ring"), "md")
    summary = md.split("**Contents**")[0]
    assert "leaky relu ($\\alpha = 0.2$) in (2) and (3)" in summary
    assert "relu in (1)" in summary and "a relu discriminator" not in summary
    assert "$L_{D}$ (4) over $Wd_{1}$" in summary and "no player minimises it" in summary


def test_the_cell_state_and_the_output_bias_have_different_names():
    md = (DOCS / "lstm_digits.md").read_text()
    assert "C_{t}" in md and "C_{t-1}" in md
    assert "c_{t}" not in md and "c_{t-1}" not in md and "c_{prev}" not in md


# -- recurrences as a textbook writes them ------------------------------------------------------
def _md(spec: str) -> str:
    return render(built(spec), "md")


def test_the_lstm_cell_is_written_with_named_gates_and_states():
    md = _md("lstm_digits")
    for line in (r"i_{t} = \sigma\left(h_{t-1} Wh_{i} + x_{t} Wx_{i} + b_{i}\right) \tag{1.1}",
                 r"C_{t} = f_{t} \odot C_{t-1} + i_{t} \odot g_{t} \tag{1.5}",
                 r"h_{t} = o_{t} \odot \tanh{\left(C_{t} \right)} \tag{1.6}"):
        assert line in md
    # the backward step: each gate's delta, the carries, the weights as sums over time
    for line in (r"\delta_{o_{t}} = \delta_{h_{t}} \odot \tanh{\left(C_{t} \right)}",
                 r"\delta_{C_{t}} = \left[\delta_{C_{t}}\right]_{t+1} + ",
                 r"\delta_{a_{f,t}} = \delta_{f_{t}} \odot f_{t} \odot \left(1 - f_{t}\right)",
                 r"\delta_{C_{t-1}} = \delta_{C_{t}} \odot f_{t}",
                 r"\delta_{h_{t-1}} = ",
                 r"\frac{\partial L}{\partial Wh_{i}} = \sum_{t=1}^{T} h_{t-1}^{\top} \delta_{a_{i,t}}",
                 r"\frac{\partial L}{\partial b_{g}} = \sum_{t=1}^{T} \sum_{B} \delta_{a_{g,t}}"):
        assert line in md, line
    assert "What back-propagation through time stores, and why" in md
    assert r"lstm_{u1 t}" not in md and "lstm_{r" not in md  # no undefined internal names


def test_the_gru_cell_is_written_with_its_own_gate_names():
    md = _md("gru_digits")
    assert r"h_{t} = \left(1 - z_{t}\right) \odot n_{t} + z_{t} \odot h_{t-1}" in md
    assert r"\delta_{a_{z,t}} = \delta_{z_{t}} \odot z_{t} \odot \left(1 - z_{t}\right)" in md
    assert r"\frac{\partial L}{\partial Wx_{r}} = \sum_{t=1}^{T} x_{t}^{\top} \delta_{a_{r,t}}" in md


def test_dotted_equation_numbers_are_linked_in_every_format():
    doc = built("lstm_digits")
    html, tex = render(doc, "html"), render(doc, "tex")
    assert 'id="eq-1.5"' in html and 'href="#eq-1.1"' in html
    assert r"\tag{15.2}\label{eq-15.2}" in tex and r"\hyperref[eq-1.1]{(1.1)}" in tex


# -- a GAN: one section per player ----------------------------------------------------------------
def test_each_player_has_a_section_with_its_gradients_and_code():
    doc = built("gan_ring")
    titles = [s.title for s in doc.sections]
    assert {"Player L_D", "Player L_G", "How the players train"} <= set(titles)
    md = _md("gan_ring")
    player_d = md[md.index("## Player L\\_D"):md.index("## Player L\\_G")]
    assert re.search(r"\\boxed\{\\frac\{\\partial L_\{D\}\}\{\\partial Wd_\{3\}\} = u_\{\d+\}\^\{\\top\} "
                     r"\\delta_\{d_\{fake\}\} \+ ", player_d)  # u_k: the name the steps gave
    assert 'Wd1 = params["Wd1"]' in player_d and '"""' not in player_d  # the function body, no docstring
    player_g = md[md.index("## Player L\\_G"):md.index("## How the players train")]
    assert r"\frac{\partial L_{G}}{\partial Wg_{1}} = Z^{\top}" in player_g
    assert "Wd" not in player_g.split("Its gradients")[1].split("```")[0].replace("Wd_{", "")  # only G's
    # a player's delta is its own objective's adjoint, said where its steps begin
    for player, objective in ((player_d, "D"), (player_g, "G")):
        assert "\\delta_{d_{fake}}" in player
        assert (rf"$\delta_x$ stands for $\frac{{\partial L_{{{objective}}}}}{{\partial x}}$"
                in player.split("\\delta_{d_{fake}}")[0])
    training = md[md.index("## How the players train"):]
    assert "`loss_and_grad_L_D`" in training and "fresh noise" in training


# -- readable expressions, intuition, notebooks --------------------------------------------------
def test_the_softmax_gradient_is_shown_as_p_minus_y_when_the_target_rows_sum_to_one():
    md = _md("mlp_tanh")
    assert r"= \frac{P - Y}{B} \tag{11}" in md and "declared one-hot" in md
    assert r"\frac{P - Y}{B}" not in _md("gan_ring")  # no softmax target there


def test_a_target_declaration_is_checked():
    m = sg.Model("m")
    (B,) = m.dims("B")
    with pytest.raises(sg.ModelError, match="rows must be one of 'one-hot', 'probabilities'"):
        m.target("Y", (B, 3), rows="onehot")


def test_each_rule_gets_one_sentence_of_intuition_the_first_time():
    steps = _steps(built("cnn_digits"))
    said = [p.plain for s in steps for p in s.details if p.plain.startswith("Why (first use")]
    assert len(said) == len(set(said)) and len(said) >= 5
    assert any("max pooling sends the gradient to the entry that won" in s for s in said)


def test_a_derivation_shows_as_its_document_in_a_notebook():
    d = sg.derive(BUILTINS["logistic_regression"].build())
    html = d._repr_html_()
    assert html.startswith('<div class="symgrad-doc"><style>') and "<body" not in html
    assert re.search(r"^body\b|\}\s*body\b", html.split("</style>")[0]) is None  # scoped styles only
    assert 'id="eq-1"' in html and "Numeric check" in html
    latex = d._repr_latex_()
    assert latex.count("$$") == 2 * len(d.equations) and r"\tag{1}" in latex


def test_symbol_table_says_what_each_parameter_is():
    rows = {r.symbol: r.meaning.plain for s in built("lstm_digits").sections if s.kind == "symbols"
            for r in s.items}
    assert rows["Wx_{i}"].startswith("weight matrix of gate i")
    assert rows["b_{o}"].startswith("bias of gate o")
    cnn = {r.symbol: r.meaning.plain for s in built("cnn_digits").sections if s.kind == "symbols"
           for r in s.items}
    assert cnn["K_{1}"].startswith("convolution kernel in (1)")
    gan = {r.symbol: r.meaning.plain for s in built("gan_ring").sections if s.kind == "symbols"
           for r in s.items}
    assert gan["X"] != gan["Z"]
    assert not any("differentiated with respect to it" in m for m in [*rows.values(), *cnn.values()])


# -- notation, figure, numeric check -------------------------------------------------------------
def test_notation_defines_only_the_operators_a_document_uses():
    def notation(spec):
        return " ".join(b.plain for s in built(spec).sections if s.id == "notation" for b in s.bullets)
    cnn, mlp, reg = notation("cnn_digits"), notation("mlp_tanh"), notation("mlp_regularised")
    assert "im2col" in cnn and "col2im" in cnn and "x_{22}" in cnn and "max pooling" in cnn
    assert "im2col" not in mlp and "dropout" not in mlp
    assert "Bernoulli" in reg and "1/(1-" in reg and "\\epsilon" in reg
    assert "primer.html" in render(built("mlp_tanh"), "html")


def test_every_model_document_has_a_figure_of_its_network():
    for name in BUILTINS:
        forward = next(s for s in built(name).sections if s.id == "forward")
        assert forward.figure is not None and forward.figure.svg.startswith("<svg")
    html, tex = render(built("gan_ring"), "html"), render(built("gan_ring"), "tex")
    assert "<svg" in html and "d_fake: product, leaky relu" in html
    assert r"\fbox{" in tex and "from $fake$" in tex


@pytest.mark.parametrize("name", ["mlp_tanh", "mlp_regularised", "gan_ring"])
def test_the_numeric_check_prints_its_numbers(name):
    """First and second order: a measured error per row (one digit, or an exact 0), not a floor."""
    sections = {s.id: s.items for s in built(name).sections if s.kind == "check"}
    assert set(sections) == {"check", "second-order-check"}, set(sections)
    number = r"\d \\times 10\^\{-\d+\}"
    for rows in sections.values():
        assert all(re.fullmatch(number, r.error) or r.error == "0" for r in rows), [r.error for r in rows]
    first, second = sections["check"], sections["second-order-check"]
    assert all(re.fullmatch(number, r.error) for r in first)
    assert all(r.entry and r.analytic and r.difference for r in first)
    assert first[0].analytic == first[0].difference  # to six digits
    hv = [r for r in second if r.name.startswith("(H v)")]  # against differences: never exact
    assert len(hv) == len(BUILTINS[name].build().params) and all(re.fullmatch(number, r.error) for r in hv)


def test_an_operator_name_with_a_digit_is_one_upright_word_in_mathml():
    from symgrad.documents.html import mathml

    out = mathml(r"\operatorname{im2col}_{3\times3}\left(X\right)")
    assert "<mtext>im2col</mtext>" in out and "<mo />" not in out
    html = render(built("cnn_digits"), "html")
    assert "<mi>i</mi><mi>m</mi><mn>2</mn>" not in html and "<mtext>col2im</mtext>" in html


def test_max_pooling_is_said_to_route_the_adjoint_to_the_arg_max():
    steps = [s for s in _steps(built("cnn_digits")) if s.rule == "reduction (max)"]
    assert len(steps) == 2
    for s in steps:
        said = " ".join(p.plain for p in s.details)
        assert "each window's adjoint goes to the entry that won" in said and "tie" in said


def _said(step) -> str:
    return " ".join(p.plain for p in step.details)


def _layer(k: str, t: str) -> str:
    """`t` with ZH, BN and K standing for hidden layer k's normalised value, batch norm and number."""
    return t.replace("ZH", rf"\hat{{z_{{{k}}}}}").replace("BN", rf"\mathrm{{bn{k}}}").replace("K", k)


def test_batch_norm_backward_is_brought_to_its_compact_form():
    from symgrad.symbolic.autodiff import Accumulation

    d = sg.derive(BUILTINS["mlp_regularised"].build())
    sums = {e.number: d.names[e.step.node][0] for e in d.backward
            if isinstance(e.step, Accumulation) and e.step.node in d.names}
    steps = [s for s in _steps(built("mlp_regularised")) if sums.get(s.number) in ("z1", "z2")]
    assert len(steps) == 2
    for s in steps:
        k = sums[s.number][-1]  # 1 or 2
        compact = _layer(k, r"= \frac{B \delta_{ZH} - \sum_{B} \delta_{ZH} - ZH \odot \sum_{B} "
                            r"\left(\delta_{ZH} \odot ZH\right)}"
                            r"{B \sqrt{\left(\sigma^{2}_{BN} + 10^{-5}\right)}}")
        assert s.equation.rhs.endswith(compact), s.equation.rhs
        said = _said(s)
        assert _layer(k, r"\delta_{ZH} = \gamma_{BN} \odot \delta_{n_{K}}") in said
        assert "the variance's path adds nothing to the mean's adjoint" in said
        assert "relative error below 10^{-12}" in said
    intuition = [s for s in steps if "centred (each column sums to 0) and decorrelated" in _said(s)]
    assert len(intuition) == 1  # said the first time only


HAND_NORMALISED = '''
import symgrad as sg

m = sg.Model("handnorm", "a layer normalised by hand over the batch, without a scale", task="regression")
B, n_in, n_out = m.dims("B n_in n_out")
X, Y = m.input("X", (B, n_in)), m.target("Y", (B, n_out))
W = m.param("W", (n_in, n_out))
a = m.let("a", X @ W)
centre = m.let("centre", a.mean(0))
spread = m.let("spread", sg.square(a - centre).mean(0))
m.output("Yhat", sg.tanh((a - centre) / sg.sqrt(spread + 1e-3)))
m.loss(sg.mse(sg.tanh((a - centre) / sg.sqrt(spread + 1e-3)), Y))
'''


def test_batch_norm_is_recognised_by_its_structure_not_its_name(tmp_path):
    path = tmp_path / "handnorm.py"
    path.write_text(HAND_NORMALISED)
    doc = document(str(path))
    found = [s for s in _steps(doc) if "In textbook form (batch normalisation" in _said(s)]
    assert len(found) == 1
    rhs = found[0].equation.rhs
    assert rhs.endswith(r" = \frac{B \delta_{\hat{a}} - \sum_{B} \delta_{\hat{a}} - \hat{a} \odot \sum_{B} "
                        r"\left(\delta_{\hat{a}} \odot \hat{a}\right)}"
                        r"{B \sqrt{\left(spread + 0.001\right)}}"), rhs
    # no scale: the normalised value's adjoint is the one its consumer sent, by its formula
    assert r"\delta_{\hat{a}} = \delta_{\hat{Y}} \odot \left(1 - \hat{Y}^{2}\right)" in _said(found[0])


def test_a_wrong_compact_form_is_caught_and_not_shown(monkeypatch):
    from symgrad.documents import batchnorm

    honest = batchnorm.compact

    def without_the_variance_path(p, incoming):
        from symgrad.symbolic.graph import ARG, elementwise

        right = honest(p, incoming)
        plain = right.dxhat.sum(p.axes)
        value = elementwise((p.count * ARG[0] - ARG[1]) / (p.count * ARG[2]), [right.dxhat, plain, p.root])
        return batchnorm.Compact(right.xhat, right.dxhat, value)

    monkeypatch.setattr(batchnorm, "compact", without_the_variance_path)
    d = sg.derive(BUILTINS["mlp_regularised"].build())
    pattern = batchnorm.find(d.loss)[0]
    dims = {s: n for n, s in d.model.dim_symbols.items()}
    assert batchnorm.verify(pattern, dims, "wrong") > 1e-3
    with pytest.warns(sg.SymgradWarning, match="compact form of batch normalisation"):
        doc = document("mlp_regularised")
    assert not any("In textbook form (batch normalisation" in _said(s) for s in _steps(doc))


def test_a_model_that_names_nothing_still_gets_short_steps():
    """gan_ring names no layer: the steps name the long parts (u_k, defined before the steps) and
    print an earlier step's result by its equation's name, so no step carries the network."""
    backward = next(s for s in built("gan_ring").sections if s.kind == "steps")
    defined = [b.lhs for b in backward.blocks if hasattr(b, "lhs")]
    assert defined and all(re.fullmatch(r"u_\{\d+\}", u) for u in defined)
    equations = [s.equation for s in backward.items] + [f.equation for s in backward.items for f in s.folded]
    longest = max(len(e.lhs) + len(e.rhs) for e in equations)
    assert longest < 300, longest  # 1122 LaTeX characters before the names
    used = {u for e in equations for u in re.findall(r"u_\{\d+\}", e.lhs + e.rhs)}
    assert used <= set(defined) and used
    # the same names in the gradients, whose own new names are numbered after them
    gradients = next(s for s in built("gan_ring").sections if s.kind == "gradients")
    assert not set(defined) & {b.lhs for b in gradients.blocks if hasattr(b, "lhs")}


def test_a_model_that_names_its_layers_keeps_its_formulas():
    backward = next(s for s in built("mlp_tanh").sections if s.kind == "steps")
    assert not backward.blocks
    assert not any(re.search(r"u_\{\d+\}", s.equation.rhs) for s in backward.items)


@pytest.mark.parametrize("name", ["mlp_regularised", "gan_ring", "attention_digits"])
def test_every_step_whose_local_derivative_is_1_is_shown_inside_a_step_that_reads_it(name):
    steps = _steps(built(name))
    assert not [s.number for s in steps if s.compact]  # none stands alone ...
    folded = [f for s in steps for f in s.folded]
    assert folded and all(f.compact for f in folded)  # ... each is inside another, still numbered
    numbers = sorted([s.number for s in steps] + [f.number for f in folded])
    assert numbers == [e.number for e in sg.derive(BUILTINS[name].build()).backward]


def test_a_name_the_document_gives_means_one_thing_in_every_section():
    """u_k and delta_k are defined once in the whole document (the steps, the gradients and each
    player's section go on numbering from the ones before), and every one used is defined."""
    doc = built("gan_ring")
    defined = [b.lhs for s in doc.sections for b in s.blocks if hasattr(b, "lhs")
               and re.fullmatch(r"(u|\\delta)_\{\d+\}", b.lhs)]
    assert len(defined) == len(set(defined)) and len(defined) > 10, defined
    text = render(doc, "md")
    assert set(re.findall(r"(?:u|\\delta)_\{\d+\}", text)) <= set(defined)
