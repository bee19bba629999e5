"""A model with several objectives (a GAN): one section per player, and how they train.

Each player minimises its own objective over its own parameters with the others held fixed,
so its gradients are those of its objective, not of the model's summed loss: each is derived
again here (`derive(model, objective)`, the derivation `loss_and_grad_<objective>` is generated
from), printed with the repeated parts of the graph named (see `shorten.py`), and shown beside
the code of the function that computes them.
"""
from __future__ import annotations

from symgrad.documents import code, mathtext
from symgrad.documents.content import CodeBlock, Equation, Inline, Section, prose
from symgrad.documents.shorten import shorten
from symgrad.symbolic.derivation import Derivation, derive
from symgrad.symbolic.graph import Node, topological
from symgrad.symbolic.printing import Printer


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def training_section(d: Derivation, prefix: str = "") -> Section:
    """How the players train, as `symgrad train` runs it (training/gan.py)."""
    model, p = d.model, d.printer
    numbers = {e.lhs_text: e.number for e in d.forward}
    names = list(model.objectives)
    objective = {o: f"${p.latex(model.loss_nodes[o])}$ (#{numbers[o]})" for o in names}
    steps = [prose("Draw a batch of real samples and of noise (the inputs "
                   f"{_list([f'${p.latex(v)}$' for v in model.data.values()])}).", prefix)]
    for k, o in enumerate(names):
        fresh = " with fresh noise" if k else ""
        trained = _list([f"${p.latex(model.params[q])}$" for q in model.objectives[o]])
        steps.append(prose(
            f"Compute {objective[o]} and its gradients{fresh} with `loss_and_grad_{o}`, and take one "
            f"optimizer step (Adam, its own state) on {trained} only; every other parameter is held "
            "fixed.", prefix))
    intro = (prose(
        "The players do not minimise one loss together: each takes gradient steps on its own "
        "objective, and the other player's parameters are constants in that objective, even "
        "where the objective reads them (the generator's objective reads the discriminator). "
        "`symgrad train` (`training/gan.py`) repeats, for every step:", prefix),)
    after = (prose(
        "The learning rate holds for the first half of the steps and falls linearly to a tenth "
        "over the second half. The summed loss "
        f"${p.latex(model.loss_nodes[d.loss_name])}$ that the sections above differentiate is what "
        "the module's common `loss_and_grad` returns; training never calls it, and its gradient "
        "with respect to a player's parameters differs from that player's own gradient above "
        "wherever the other objective reads them.", prefix),)
    return Section(f"{prefix}training", "How the players train", 2, intro, bullets=tuple(steps), after=after)


def player_sections(d: Derivation, source: str, prefix: str = "",
                    names: dict[Node, tuple[str, str]] | None = None) -> list[Section]:
    """One section per objective: what it minimises over which parameters, its gradients, its code.
    `names`: those the sections before gave (u_k, delta_k), so that a forward value keeps its
    name in every section and each new name is numbered after the ones before."""
    model = d.model
    shared = set(topological(list(d.train.values())))  # forward values: the same in every player
    earlier = {n: v for n, v in (names or {}).items() if n in shared and n not in d.names}
    taken = {latex for _, latex in (names or d.names).values()}
    sections = []
    for o, params in model.objectives.items():
        player = derive(model, o)
        p = Printer({**earlier, **player.names})
        objective = next(e for e in player.forward if e.lhs_text == o)
        forward = set(topological(list(player.train.values())))
        taken |= {latex for _, latex in player.names.values()}
        defined = {e.node for e in d.forward} | {d.train[e.node] for e in d.forward if e.node in d.train}
        roots = [g for g in player.gradients.values()]
        short, defs = shorten(p, roots, forward, taken, defined | set(earlier))
        taken |= {latex for latex, _ in defs}
        earlier |= {n: short.names[n] for _, n in defs if n in shared}
        trained = _list([f"${p.latex(model.params[q])}$" for q in params])
        blocks: list[Inline | Equation | CodeBlock] = [prose(
            f"Objective: ${objective.lhs_latex} = {player.rhs(objective, 'latex')}$ (#{objective.number}), "
            f"minimised over {trained}.", prefix)]
        if defs:
            blocks.append(prose(
                "Its backward pass, derived by the same reverse mode as the sections above, with each "
                "value the gradients use more than once (or whose formula is long) named once. In this "
                f"section $\\delta_x$ stands for ${mathtext.partial(objective.lhs_latex, 'x')}$, the "
                "adjoint of this player's objective, not of the summed loss:", prefix))
            for latex, node in defs:
                blocks.append(Equation(None, f"{prefix}{o}-def-{len(blocks)}", latex,
                                       short.latex(node, expand=True), shape=mathtext.shape(node.shape)))
        blocks.append(prose(f"Its gradients, which `loss_and_grad_{o}` returns:", prefix))
        loss = objective.lhs_latex
        for q in params:
            g = player.gradients[q]
            blocks.append(Equation(None, f"{prefix}{o}-grad-{q}",
                                   mathtext.partial(loss, p.latex(model.params[q])),
                                   short.latex(g, expand=True), shape=mathtext.shape(g.shape), boxed=True))
        body = "\n".join(code.function_body(source, f"loss_and_grad_{o}"))
        blocks.append(CodeBlock((), prose(f"`loss_and_grad_{o}` in the generated module:"), body))
        sections.append(Section(f"{prefix}player-{o}", f"Player {o}", 2, blocks=tuple(blocks)))
    return sections
