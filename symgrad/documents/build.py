"""A model's derivation document as plain data (see `content.py`), in the order a reader needs.

The derivation, the generated module and the numeric check all come from one `derive` call:
the module is generated from the same `Derivation` the equations are printed from, and the
check runs that module. So the document, the code and the numbers cannot disagree.
"""
from __future__ import annotations

import math
import types
import warnings
from dataclasses import dataclass

import sympy

from symgrad.codegen.emit import generate
from symgrad.documents import check, code, figure, mathtext, players, recurrence, symbols
from symgrad.documents import notation as notation_of
from symgrad.documents import summary as summary_of
from symgrad.documents.content import (
    CheckRow,
    CodeBlock,
    Document,
    Equation,
    Gradient,
    Inline,
    Section,
    prose,
)
from symgrad.documents.shorten import shorten
from symgrad.documents.steps import BackwardPass
from symgrad.symbolic import __version__
from symgrad.symbolic.derivation import Derivation, derive
from symgrad.symbolic.errors import SymgradWarning
from symgrad.symbolic.graph import Node, topological
from symgrad.symbolic.model import Model
from symgrad.symbolic.printing import Printer


@dataclass(frozen=True)
class Part:
    """Everything one derivation contributes to a document, before it is cut into sections."""

    derivation: Derivation
    source: str  # the generated module's text
    module: types.ModuleType  # ... imported: the numeric check runs it
    dims: dict[str, int]  # the numeric check's dims
    results: list[check.Result]
    batch: sympy.Symbol | None  # the batch dim, if the model has one
    prefix: str  # anchor prefix, so that several parts can share one HTML page


_AUTO = object()


def prepare(model: Model, prefix: str = "", batch: object = _AUTO) -> Part:
    """Derive, generate and check one model. `batch` overrides the batch dim read off the model."""
    d = derive(model)
    source = generate(d)
    module = check.load(source, model.name)
    dims, results = check.run(module)
    for r in results:
        if not r.passed:
            warnings.warn(SymgradWarning(
                f"model {model.name!r}: the derived gradient of {r.name} differs from finite "
                f"differences (relative error {r.error:.1e})"), stacklevel=2)
    batch = symbols.batch_dim(model) if batch is _AUTO else batch
    return Part(d, source, module, dims, results, batch, prefix)


# -- sections shared by model documents and the primer ------------------------------------------
def notation(batch: sympy.Symbol | None, first_input: str | None, extra: tuple[Inline, ...] = (),
             operators: tuple[Inline, ...] | None = None) -> Section:
    """Layout, batch axis and deltas, then `operators`: one bullet per operator the document
    prints (see `notation.py`); the primer's general list where none are given."""
    paragraphs = [prose(
        "**Layout.** Gradients are written in denominator layout: $\\frac{\\partial L}{\\partial W}$ has "
        "the shape of $W$, and its entry $(i, j)$ is $\\frac{\\partial L}{\\partial W_{ij}}$, so a "
        "gradient can be subtracted from its parameter as it is.")]
    if batch is not None:
        b = sympy.latex(batch)
        paragraphs.append(prose(
            f"**Batch axis.** The batch is the leading axis: ${first_input}$ holds ${b}$ examples, one per "
            "row, and so does every activation computed from it. A dense layer is written "
            "$X W + b$ with $W$ of shape $n_{in} \\times n_{out}$, and its bias $b$ is added to every "
            "row (broadcast). Textbooks that use column vectors write the same layer for one example "
            "$x$ as $W^{\\top} x + b$."))
    else:
        paragraphs.append(prose(
            "**Batch axis.** There is none here: every tensor has exactly the shape it is declared with."))
    paragraphs.append(prose(
        "**Deltas.** The adjoint (or delta) $\\delta_{v} = \\frac{\\partial L}{\\partial v}$ of an "
        "intermediate value $v$ is the gradient of the loss with respect to $v$; it has the shape of "
        "$v$. The backward pass computes adjoints from the loss back to the parameters: each step "
        "takes the adjoint of one operation's result and sends a contribution to one of its "
        "arguments (a vector-Jacobian product, by that operation's rule). A value used several times "
        "receives several contributions; the one from step (N) is written "
        "$\\left[\\frac{\\partial L}{\\partial v}\\right]_{(N)}$, and the value's adjoint is their sum. "
        "A parameter's adjoint is its gradient, $\\frac{\\partial L}{\\partial W}$."))
    paragraphs += list(extra)
    if operators is not None:
        return Section("notation", "Notation and conventions", 2, tuple(paragraphs), operators)
    bullets = (
        prose("$U V$ is a matrix product, $U^{\\top}$ a transpose, and $U \\odot V$ the elementwise "
              "(Hadamard) product."),
        prose("$\\sum_{B} U$ sums $U$ over its axis of length $B$; "
              "$\\operatorname{broadcast}_{\\left(B, n\\right)}\\left(u\\right)$ repeats $u$ along the "
              "axes it lacks until it has shape $B \\times n$."),
        prose("An elementwise function applies to every entry; its local derivative is the scalar "
              "derivative sympy computed, applied entry by entry. $\\mathbb{1}\\left[t > 0\\right]$ is "
              "1 where $t > 0$ and 0 elsewhere (a kink gets derivative 0)."),
        prose("$\\operatorname{softmax}$ and $\\log\\operatorname{softmax}$ act along the class "
              "(last) axis."),
    )
    return Section("notation", "Notation and conventions", 2, tuple(paragraphs), bullets)


def symbol_sections(part: Part, level: int = 2, id_prefix: str = "") -> list[Section]:
    d = part.derivation
    return [
        Section(f"{id_prefix}symbols", "Symbols", level,
                (prose("Every name in the derivation: its role, its shape and what it is."),),
                kind="symbols", items=tuple(symbols.symbol_rows(d, part.batch, part.prefix))),
        Section(f"{id_prefix}dims", "Dims", level + 1,
                (prose("The sizes shapes are made of; the numeric check below uses the sizes given."),),
                kind="dims", items=tuple(symbols.dim_rows(d.model, part.dims, part.batch))),
    ]


def forward_section(part: Part, level: int = 2, id_prefix: str = "", with_figure: bool = False) -> Section:
    d = part.derivation
    eqs = []
    for e in d.forward:
        relation = r"\leftarrow" if e.kind == "update" else "="
        eqs.append(Equation(e.number, f"{part.prefix}eq-{e.number}", e.lhs_latex, d.rhs(e, "latex"),
                            relation, mathtext.shape(e.node.shape)))
    loss = next((e for e in d.forward if e.kind == "loss" and e.lhs_text == d.loss_name), None)
    intro = "The model's equations as written, numbered in order."
    if loss is not None:
        intro += f" Equation (#{loss.number}) is the loss ${loss.lhs_latex}$, a scalar."
    return Section(f"{id_prefix}forward", "Forward pass and loss", level, (prose(intro, part.prefix),),
                   kind="equations", items=tuple(eqs), figure=figure.figure(d) if with_figure else None)


def backward_section(part: Part, level: int = 2, id_prefix: str = "") -> Section:
    d = part.derivation
    bp = BackwardPass(d, part.prefix)
    steps = bp.steps()
    first, last = d.backward[0].number, d.backward[-1].number
    intro = prose(
        f"Reverse mode walks the forward equations from the loss back to the parameters, applying "
        f"the chain rule once per step, (#{first}) to (#{last}). Each step names the rule the rule "
        "table applied, the adjoint it starts from, the local derivative, and the result with its "
        "shape. A step whose local derivative is 1 passes the adjoint on unchanged; it keeps its "
        "number and is shown on one line inside the first step that reads its result (or the sum "
        "it is a term of)." + (
            f" These steps derive the gradient of the summed loss ${d.printer.latex(d.loss)}$, which "
            "`loss_and_grad` returns; the players train on the gradients of their own objectives, "
            "derived in their own sections below." if d.model.objectives else ""), part.prefix)
    blocks: tuple = ()
    if bp.defined:
        blocks = (prose("The model names no value for these parts of its forward pass, which the steps "
                        "go through and whose formulas are long; the steps call them by these names, "
                        "and a step's result that a later step uses is called there by the name on "
                        "the left of its equation:"),
                  *(Equation(None, f"{part.prefix}part-{k}", latex, bp.printer.latex(node, expand=True),
                             shape=mathtext.shape(node.shape))
                    for k, (latex, node) in enumerate(bp.defined, 1)))
    return Section(f"{id_prefix}backward", "Backward pass, step by step", level, (intro,),
                   kind="steps", items=tuple(steps), blocks=blocks)


def gradient_names(part: Part) -> tuple[Printer, list[tuple[str, Node]]]:
    """The gradients' printer and the names it adds: values the gradients repeat (or whose
    formulas are long) that neither the model nor the backward steps named get names, numbered
    after the steps' own. A later section (a GAN's players) goes on from these."""
    d = part.derivation
    forward = topological(list(d.train.values()))
    if any(n.op == "scan" for n in forward):  # the recurrence's section writes these as sums over time
        return d.printer, []
    # the steps' names of forward values (a gradient is written out, not as a sum of step results)
    steps = BackwardPass(d, part.prefix).names
    names = {n: v for n, v in steps.items() if n in d.names or n in set(forward)}
    taken = {latex for _, latex in steps.values()} | {sympy.latex(s) for s in d.model.dim_symbols.values()}
    return shorten(Printer(names), list(d.gradients.values()), set(forward), taken, set(names))


def gradient_section(part: Part, level: int = 2, id_prefix: str = "") -> Section:
    d = part.derivation
    loss = next((e.lhs_latex for e in d.forward if e.lhs_text == d.loss_name), d.loss_name)
    by_number = {e.number: e for e in d.backward}
    short, defs = gradient_names(part)
    items = []
    for name, g in d.gradients.items():
        param = d.printer.latex(d.model.params[name])
        number = d.owners.get(g)
        eq = by_number.get(number)
        own = eq is None or d.owners.get(eq.node) == eq.number
        rhs = short.latex(eq.node if eq is not None else g, expand=own)
        items.append(Gradient(param, Equation(None, f"{part.prefix}grad-{name}",
                                              mathtext.partial(loss, param), rhs,
                                              shape=mathtext.shape(g.shape)),
                              number if eq is not None else None,
                              f"{part.prefix}eq-{number}" if eq is not None else ""))
    intro = prose("The gradient of the loss with respect to every parameter, each with the "
                  "shape of its parameter, and the step that computes it.")
    blocks: tuple = ()
    if defs:
        blocks = (prose("The model names no value for these parts of its gradients, which are used more "
                        "than once or are long; here they get a name each (the backward steps above "
                        "compute the same values):"),
                  *(Equation(None, f"{part.prefix}where-{k}", latex, short.latex(node, expand=True),
                             shape=mathtext.shape(node.shape)) for k, (latex, node) in enumerate(defs, 1)))
    return Section(f"{id_prefix}gradients", "Gradients", level, (intro,), kind="gradients",
                   items=tuple(items), blocks=blocks)


def check_section(part: Part, level: int = 2, id_prefix: str = "") -> Section:
    d = part.derivation
    dims = ", ".join(f"${sympy.latex(d.model.dim_symbols[n])} = {v}$" for n, v in part.dims.items())
    h = round(math.log10(check.STEP))
    intro = (
        prose("Computed when this document was built, by running the generated module: the "
              "gradient from `loss_and_grad` against five-point central differences "
              "$\\frac{-L(\\theta + 2h) + 8 L(\\theta + h) - 8 L(\\theta - h) + L(\\theta - 2h)}{12 h}$ "
              f"of `loss` with $h = 10^{{{h}}}$, one entry at a time (in training mode, with fixed "
              "random masks, where the model has modes). A parameter with more than "
              f"{check.ALL_UP_TO} entries is checked at {check.SAMPLE} of them, chosen at random."),
        prose(f"Data type float64; dims {dims}; seed {check.SEED} for the parameters (their "
              "initialisation plus noise of standard deviation 0.1), the batch and the sample. The "
              "relative error is $\\frac{\\lVert g - \\hat{g} \\rVert}{\\max(\\lVert g \\rVert, "
              f"\\lVert \\hat{{g}} \\rVert, 10^{{{round(math.log10(check.SCALE))}}})}}$ over the "
              "checked entries, shown to one digit; a check passes below "
              f"$10^{{{round(math.log10(check.TOLERANCE))}}}$. Beside it, the checked entry with the "
              "largest difference quotient: the derived gradient $g$ there and the difference "
              "$\\hat{g}$, to six digits."),
        prose("Errors near $10^{-11}$ are the round-off of the differences, not of the derivation; "
              "their digit can change with the BLAS library numpy uses, so the test that keeps this "
              "document fresh lets the measured numbers of this table differ and checks the rest "
              "of the document to the byte."),
    )
    rows = tuple(check_row(d.printer.latex(d.model.params[r.name]), r, check.SHOWN) for r in part.results)
    return Section(f"{id_prefix}check", "Numeric check", level, intro, kind="check", items=rows)


def check_row(name: str, r: check.Result, floor: float = check.FLOOR) -> CheckRow:
    size = math.prod(r.shape)
    entries = "all" if r.checked >= size else f"{r.checked} of {size}"
    entry = analytic = difference = ""
    if r.entry:
        entry = f"{name}[{', '.join(str(i) for i in r.entry)}]"  # numpy's index, from 0
        analytic, difference = mathtext.significant(r.derived), mathtext.significant(r.difference)
    return CheckRow(name, mathtext.concrete_shape(r.shape), mathtext.power_of_ten(r.error, floor),
                    r.passed, entries, entry, analytic, difference)


def code_sections(part: Part, module_note: Inline, level: int = 2) -> list[Section]:
    """The generated module's functions, cut into blocks tagged with equation numbers."""
    d = part.derivation
    source = part.source
    main = code.blocks(code.function_body(source, "loss_and_grad"))
    cited = {n for b in main for n in b.numbers}
    extra = [b for b in code.blocks(code.function_body(source, "forward"))
             if b.numbers and not set(b.numbers) <= cited]
    cited |= {n for b in extra for n in b.numbers}
    silent = [e.number for e in d.equations if e.number not in cited]
    after = ()
    if silent:
        refs = ", ".join(f"(#{n})" for n in silent)
        after = (prose(f"Equations with no line of their own: {refs}. They are computed inside a fused "
                       "kernel or as a view in another block, or only `forward` needs them.",
                       part.prefix),)
    intro = (module_note, prose(
        "Every block carries the comment `# (N) ...` that the module carries: the number of the "
        "equation above that the block implements.", part.prefix))
    shown = "\n".join(b.code for b in main + extra)
    kernels = tuple(CodeBlock((), prose(f"`{name}`"), text) for name, text in code.helpers(source, shown))
    sections = [
        Section("code", "Generated code", level, intro, after=after),
        Section("code-loss-and-grad", "loss_and_grad: the loss and every gradient", level + 1,
                kind="code", items=tuple(_code_block(b, part.prefix) for b in main)),
    ]
    if extra:
        sections.append(Section("code-forward", "forward: the outputs", level + 1,
                                (prose("`forward` computes what `loss_and_grad` computes up to the "
                                       "outputs, and then:"),),
                                kind="code", items=tuple(_code_block(b, part.prefix) for b in extra)))
    if kernels:
        sections.append(Section("code-kernels", "Kernels and helpers", level + 1,
                                (prose("The fused elementwise kernels and helpers the blocks above call. "
                                       "Each kernel runs through numpy or numexpr, whichever is faster "
                                       "for the array's size and dtype."),),
                                kind="code", items=kernels))
    return sections


def _code_block(b: code.Block, prefix: str) -> CodeBlock:
    text = "\n".join(list(b.comments) + ([b.code] if b.code else []))
    if b.numbers:
        refs = ", ".join(f"(#{n})" for n in b.numbers)
        return CodeBlock(b.numbers, prose(f"Implements {refs}.", prefix), text)
    first = b.code.lstrip().split("\n", 1)[0]
    what = "Returns the results." if first.startswith("return") else "Reads the arguments and dims."
    return CodeBlock((), prose(what), text)


def recurrences(part: Part) -> list[tuple[Section, Section]]:
    """For every scan: its cell's equations (after the forward pass) and its backward step
    (after the backward pass), as a textbook writes them (see `recurrence.py`)."""
    d = part.derivation
    scans = [n for n in topological(list(d.train.values())) if n.op == "scan" and n in d.owners]
    if not scans:
        return []
    bp = BackwardPass(d, part.prefix)
    out = []
    for scan in scans:
        incoming = {k: bp.lhs(e) for k, e in bp.item_adjoints.get(scan, {}).items()}
        out.append(recurrence.cell_sections(d, scan, incoming, part.prefix))
    return out


# -- a model's document --------------------------------------------------------------------------
def _stack_note(d: Derivation) -> tuple[Inline, ...]:
    """For a model that multiplies stacks of matrices (attention's Q K^T): how to read them."""
    stacked = any(n.op == "matmul" and n.args[1].ndim > 2 for n in topological(list(d.gradients.values())))
    if not stacked:
        return ()
    return (prose("**Stacks of matrices.** A tensor with more than two axes is also read as a stack "
                  "of matrices, its last two axes: $U V$ then multiplies matching matrices of the two "
                  "stacks and $U^{\\top}$ transposes each matrix, as numpy's `@` and `.mT` do."),)


def model_document(model: Model, module_note: Inline | None = None) -> Document:
    """The derivation document of one model, sections in the order of the issue's brief."""
    part = prepare(model)
    d = part.derivation
    first_input = next((d.printer.latex(v) for v in model.data.values()), None)
    loss = next(e for e in d.forward if e.kind == "loss" and e.lhs_text == d.loss_name)
    if module_note is None:
        module_note = prose(f"The module `symgrad derive` writes for `{model.name}`, "
                            "generated from the same derivation as this document.")
    sections = [notation(part.batch, first_input, (*_stack_note(d), notation_of.primer_note()),
                         notation_of.operator_bullets(d))]
    sections += symbol_sections(part)
    cells = recurrences(part)
    sections += [forward_section(part, with_figure=True), *(c for c, _ in cells), backward_section(part),
                 *(b for _, b in cells), gradient_section(part)]
    if model.objectives:
        sections += [*players.player_sections(d, part.source, part.prefix, gradient_names(part)[0].names),
                     players.training_section(d, part.prefix)]
    sections += [check_section(part)]
    from symgrad.documents.second_order import second_order_sections  # it builds on this module

    sections += second_order_sections(part)
    sections += code_sections(part, module_note)
    passed = all(r.passed for r in part.results)
    summary = [summary_of.structure(d), summary_of.training(d, loss.number)]
    if model.description:  # the author's own words, as text: after what the equations say
        described = model.description[:1].upper() + model.description[1:].rstrip(".")
        summary.insert(0, Inline((("text", f"{described}."),)))
    summary.append(prose(
        f"Every formula below was derived by symgrad from the model's {len(d.forward)} equations: "
        f"{len(d.backward)} backward steps by the chain rule, each one shown, then checked "
        f"numerically ({'all gradients agree' if passed else 'SOME GRADIENTS DISAGREE'} with "
        "finite differences) and compiled to the numpy code at the end.", ""))
    return Document(model.name, f"Derivation of {model.name}", tuple(summary), tuple(sections),
                    f"symgrad {__version__}")
