"""The second-order section of a document: how the Hessian-vector product is derived, its
result per parameter, the closed-form Hessian where the derivation finds one, and a numeric
check of the generated `hvp` and `hessian` (computed while the document is built).

It reads the same `Part` as the other sections, so it shows the module the document shows.
"""
from __future__ import annotations

import numpy as np

from symgrad.documents import check, mathtext
from symgrad.documents.build import Part
from symgrad.documents.content import CheckRow, Equation, Section, prose
from symgrad.symbolic.printing import Printer, latex_name
from symgrad.symbolic.second_order import closed_form_hessian, hvp

#: a product whose LaTeX is longer than this is named, not printed (an LSTM's fills a page)
LONGEST = 600


def second_order_sections(part: Part, level: int = 2, id_prefix: str = "", textbook=None) -> list[Section]:
    """The section and its subsections. `textbook` = (LaTeX, params, batch -> {name: H}) adds
    a textbook Hessian (the primer's), checked against the generated `hessian`."""
    d = part.derivation
    h = hvp(d)
    names = dict(d.names)
    for p, v in h.vectors.items():
        names[v] = (f"v_{p}", f"v_{{{latex_name(p)}}}")
    printer = Printer(names)
    loss = latex_name(d.loss_name)
    terms = " + ".join(rf"\left\langle \frac{{\partial {loss}}}{{\partial {latex_name(p)}}}, "
                       rf"v_{{{latex_name(p)}}} \right\rangle" for p in h.wrt)
    intro = (
        prose("The gradient is itself a graph of the same primitives, so the scalar "
              f"$\\langle g, v \\rangle$ below, for a direction $v$ shaped like the parameters, is one "
              "more function of them; reverse mode over it, through the same rule table, gives "
              f"$H v = \\nabla_\\theta \\langle g, v \\rangle$, the Hessian of ${loss}$ times $v$, in "
              f"{len(h.steps)} further chain-rule steps, without forming $H$ (reverse over reverse). "
              "The second derivative of a kink (relu, $|x|$, max) is a Dirac delta, taken as 0: "
              "the value almost everywhere, as PyTorch and JAX give."),
        prose("The generated module computes it as `hvp(params, batch, vector)`, which returns the "
              "loss, the gradient and $H v$ in one pass, and `hessian(params, batch, wrt)`, the "
              "Hessian of one parameter as $n$ such products with unit vectors."),
    )
    eqs = [Equation(None, f"{part.prefix}hvp-inner", r"\langle g, v \rangle", terms)]
    for p, hv in h.products.items():
        rhs = printer.latex(hv, expand=True)
        if len(rhs) > LONGEST:
            rhs = r"\text{(too long to print here: computed by hvp in the generated code)}"
        eqs.append(Equation(None, f"{part.prefix}hvp-{p}", rf"\left(H v\right)_{{{latex_name(p)}}}", rhs,
                            shape=mathtext.shape(hv.shape)))
    sections = [Section(f"{id_prefix}second-order", "Second order: Hessian-vector products", level, intro,
                        kind="equations", items=tuple(eqs))]
    forms = [cf for p in h.wrt if (cf := closed_form_hessian(d, p)) is not None]
    if forms:
        items = []
        for cf in forms:
            x, w = printer.latex(cf.X), latex_name(cf.param)
            curvature = printer.latex(cf.d, expand=True)
            lhs = rf"\frac{{\partial^2 {loss}}}{{\partial {w}_{{:,a}} \partial {w}_{{:,b}}}}"
            rhs = (rf"\delta_{{ab}}\, {x}^{{\top}} \operatorname{{diag}}\left(d_{{:,a}}\right) {x}, "
                   rf"\quad d = {curvature}")
            items.append(Equation(None, f"{part.prefix}hessian-{cf.param}", lhs, rhs))
        text = prose("The loss reads these weights only through $z = X W$, and its curvature in $z$ is "
                     "diagonal ($d = \\partial^2 L / \\partial z^2$ elementwise, found by differentiating "
                     "the adjoint of $z$ once more), so the Hessian has a closed form: one block per "
                     "output column $a$, $X^{\\top} \\operatorname{diag}(d_{:,a}) X$.")
        sections.append(Section(f"{id_prefix}closed-form", "Closed-form Hessian", level + 1, (text,),
                                kind="equations", items=tuple(items)))
    sections.append(_check(part, h.wrt, level + 1, id_prefix, textbook))
    return sections


def _check(part: Part, wrt: tuple[str, ...], level: int, id_prefix: str, textbook) -> Section:
    """hvp against five-point differences of loss_and_grad along a random v; hessian of the
    smallest parameter against stacked HVPs and its transpose (and a textbook form)."""
    module, dims = part.module, part.dims
    rng = np.random.default_rng(check.SEED)
    params, batch = check.sample(module, dims, rng)
    vector = {k: rng.standard_normal(params[k].shape) for k in wrt}
    options = check.training_options(module, dims, module.hvp)
    _, _, hv = module.hvp(params, batch, vector, **options)
    moved = {k: p.copy() for k, p in params.items()}

    def grads(t: float) -> dict:
        for k in wrt:
            moved[k][...] = params[k] + t * vector[k]
        options = check.training_options(module, dims, module.loss_and_grad)
        return module.loss_and_grad(moved, batch, **options)[1]

    h = check.STEP
    g = [grads(s * h) for s in (2, 1, -1, -2)]
    rows = []
    printer = part.derivation.printer
    for k in wrt:
        fd = (-g[0][k] + 8 * g[1][k] - 8 * g[2][k] + g[3][k]) / (12 * h)
        r = check.Result(k, params[k].shape, check.relative_error(np.asarray(hv[k]), fd), params[k].size)
        rows.append(check_row(rf"(H v)_{{{printer.latex(part.derivation.model.params[k])}}}", r))
    small = min(wrt, key=lambda k: params[k].size)
    H = module.hessian(params, batch, small, **check.training_options(module, dims, module.hessian))
    n = params[small].size
    columns = []
    for j in range(n):
        e = {k: np.zeros_like(params[k]) for k in wrt}
        e[small].reshape(-1)[j] = 1.0
        columns.append(np.asarray(module.hvp(params, batch, e, **options)[2][small]).reshape(-1))
    stacked = np.stack(columns, axis=1)
    name = latex_name(small)
    rows.append(check_row(rf"H_{{{name}}} - H_{{{name}}}^{{\top}}",
                          check.Result(small, H.shape, check.relative_error(H, H.T), H.size)))
    rows.append(check_row(rf"H_{{{name}}} - [H e_1 \cdots H e_n]",
                          check.Result(small, H.shape, check.relative_error(H, stacked), H.size)))
    intro = [prose(f"Computed when this document was built, at the dims and seed of the numeric check "
                   f"above: `hvp` against five-point differences of the gradient along a random $v$ "
                   f"(step $h = 10^{{{round(np.log10(h))}}}$), and `hessian` of ${name}$ against its "
                   "transpose and against the stacked products with unit vectors. Each row shows the "
                   "measured relative error, defined as in the table above, to one digit (0 where the "
                   "two sides agree to the last bit).")]
    if textbook is not None:
        latex, value = textbook
        want = value(params, batch)
        for k, Hk in want.items():
            got = module.hessian(params, batch, k)
            rows.append(check_row(rf"H_{{{latex_name(k)}}} \text{{ against the textbook form}}",
                                  check.Result(k, got.shape, check.relative_error(got, Hk), got.size)))
        intro.append(prose(f"The textbook Hessian, ${latex}$, is compared with `hessian` too."))
    return Section(f"{id_prefix}second-order-check", "Numeric check of the second order", level, tuple(intro),
                   kind="check", items=tuple(rows))


def check_row(name: str, r: check.Result) -> CheckRow:
    """The measured error to one digit, however small (round-off included), as the first-order table."""
    error = "0" if r.error == 0 else mathtext.power_of_ten(r.error, 0.0)  # 0: equal to the last bit
    return CheckRow(name, mathtext.concrete_shape(r.shape), error, r.passed, "all")
