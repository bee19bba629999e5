"""The backward pass explained: each recorded chain-rule step as a reader follows it.

For every numbered backward equation this says through which forward operation the adjoint
flows and into which argument, where the incoming adjoint was computed, which rule applies
(the rule table's own vector-Jacobian product, applied to placeholder operands, so the general
form shown is the one the tool used), and, for an elementwise operation, the scalar derivative
as sympy derived it, down to a user's own function. Nothing here differentiates anything
itself: every formula is printed from the derivation or from the rule table.
"""
from __future__ import annotations

import dataclasses

import sympy

from symgrad.documents import batchnorm, mathtext, naming
from symgrad.documents.content import Equation, Inline, Step, prose
from symgrad.documents.intuition import INTUITION
from symgrad.documents.shorten import trivial
from symgrad.symbolic.autodiff import Accumulation
from symgrad.symbolic.autodiff import Step as RuleStep
from symgrad.symbolic.derivation import Derivation, Numbered
from symgrad.symbolic.functions import ElementwiseFunction, X, derivative_of
from symgrad.symbolic.graph import ARG, Node
from symgrad.symbolic.printing import Printer, latex_name
from symgrad.symbolic.rules import Y, rule_for
from symgrad.symbolic.shapes import broadcast_axes


class BackwardPass:
    """Who computes which adjoint, for a derivation's numbered backward equations."""

    def __init__(self, d: Derivation, anchor_prefix: str = ""):
        self.d = d
        self.prefix = anchor_prefix
        self.summed = {e.step.node for e in d.backward if isinstance(e.step, Accumulation)}
        self.explained: set[str] = set()  # rules whose intuition has been given
        self._batchnorms = batchnorm.find(d.loss)  # shown in their compact form
        self.adjoint_eq: dict[Node, Numbered] = {}  # node -> the equation giving its whole adjoint
        self.partials: dict[Node, list[Numbered]] = {}  # node -> the steps giving parts of it
        for e in d.backward:
            target = self.target(e)
            if self.whole(e):
                self.adjoint_eq[target] = e
            else:
                self.partials.setdefault(target, []).append(e)
        # a node with several outputs (a scan) receives the adjoints of its items
        self.item_adjoints: dict[Node, dict[int, Numbered]] = {}
        for node, e in self.adjoint_eq.items():
            if node.op == "item":
                self.item_adjoints.setdefault(node.args[0], {})[node.attr("index")] = e
        # the document's names (see naming.py): long unnamed forward values get u_k, and a long
        # backward result prints, after its own equation, by that equation's left-hand side
        self.names, self.defined = naming.forward_names(d, self._taken())
        self.printer = Printer(self.names)
        for e in d.backward:
            if e.node in self.names or trivial(e.node):
                continue
            if len(self.printer.latex(e.node, expand=True)) > naming.BACKWARD_LONG:
                self.names[e.node] = (f"eq{e.number}", self.lhs(e))
                self.printer = Printer(self.names)

    # -- facts about one equation ------------------------------------------------------------
    @staticmethod
    def target(e: Numbered) -> Node:
        """The node whose adjoint (or part of it) equation `e` computes."""
        s = e.step
        return s.node if isinstance(s, Accumulation) else s.node.args[s.arg]

    def whole(self, e: Numbered) -> bool:
        return isinstance(e.step, Accumulation) or self.target(e) not in self.summed

    def lhs(self, e: Numbered) -> str:
        """The left-hand side; a part of a sum is [dL/dx]_(N), the whole one its usual name
        (delta_{u_k} for a value the document named)."""
        if self.whole(e):
            target = self.target(e)
            if target in self.d.names:
                return e.lhs_latex
            if target in self.names:
                return naming.adjoint_name(self.names[target][1])
            of = rf"\partial \left({self.printer.latex(target)}\right)"  # as derive writes it
            return rf"\frac{{\partial {latex_name(self.d.loss_name)}}}{{{of}}}"
        total = self.adjoint_eq[self.target(e)]
        return rf"\left[{self.lhs(total)}\right]_{{({e.number})}}"

    def rhs(self, e: Numbered) -> str:
        """The right-hand side, printed with the document's names."""
        return self.printer.latex(e.node, expand=self.d.owners.get(e.node) == e.number)

    def anchor(self, number: int) -> str:
        return f"{self.prefix}eq-{number}"

    # -- the explained steps -----------------------------------------------------------------
    def steps(self) -> list[Step]:
        """Every backward equation explained; a step whose local derivative is 1 is folded into
        the first step that starts from its adjoint, or into the sum it is a term of (it keeps
        its number and anchor there)."""
        shown = {e.number: self._sum(e) if isinstance(e.step, Accumulation) else self._step(e)
                 for e in self.d.backward}
        after: dict[int, list[int]] = {}  # compact step -> the steps that start from its adjoint
        for e in self.d.backward:
            if isinstance(e.step, Accumulation):  # ... or a sum it is a term of
                for part in self.partials.get(e.step.node, []):
                    if shown[part.number].compact:
                        after.setdefault(part.number, []).append(e.number)
                continue
            incoming = self.adjoint_eq.get(e.step.node)
            if incoming is not None and shown[incoming.number].compact:
                after.setdefault(incoming.number, []).append(e.number)

        def ends(number: int) -> list[int]:  # the steps that are not compact, through compact ones
            if not shown[number].compact:
                return [number]
            return [n for a in after.get(number, []) for n in ends(a)]

        # a compact step is shown in the first step (in the document's order) that reads its adjoint
        feeds = {c: min(found) for c in after if (found := ends(c))}
        out = []
        for number, step in shown.items():
            if number in feeds:
                continue
            folded = tuple(shown[c] for c, into in sorted(feeds.items()) if into == number)
            out.append(dataclasses.replace(step, folded=folded) if folded else step)
        return out

    def _equation(self, e: Numbered, rhs: str) -> Equation:
        return Equation(e.number, self.anchor(e.number), self.lhs(e), rhs,
                        shape=mathtext.shape(e.node.shape))

    def _sum(self, e: Numbered) -> Step:
        node = e.step.node
        parts = self.partials.get(node, [])
        cites = ", ".join(f"(#{p.number})" for p in parts)
        lead = prose(f"${self._latex(node)}$ is used {len(parts)} times, so its adjoint is the "
                     f"sum of the contributions {cites} that flow back through its uses.", self.prefix)
        terms = " + ".join(self.lhs(p) for p in parts)
        # where every term is a named result, the sum of those names would only repeat the terms
        named = all(t in self.names for t in e.step.terms)
        rhs, details = (terms if named else f"{terms} = {self.rhs(e)}"), []
        pattern = next((p for p in self._batchnorms if p.z is node), None)
        found = None if pattern is None else \
            batchnorm.textbook(self.d, pattern, self.adjoint_eq.get(pattern.normalised), self._free("s"))
        if found is not None:
            form, said = found
            rhs += f" = {form}"
            details = [prose(t, self.prefix) for t in said]
            if "batch normalisation" not in self.explained:
                self.explained.add("batch normalisation")
                details.insert(1, prose(f"Why (first use of this rule): {INTUITION['batch normalisation']}"))
        return Step(e.number, "sum of contributions", False, lead, tuple(details), self._equation(e, rhs))


    def _step(self, e: Numbered) -> Step:
        s: RuleStep = e.step
        node, arg = s.node, s.node.args[s.arg]
        incoming = self.adjoint_eq.get(node)
        through = self._through(node)
        into = self._latex(arg)
        if incoming is not None and s.contribution is incoming.node:
            lead = prose(f"Through {through}, into ${into}$: the local derivative is 1, so the "
                         f"adjoint from (#{incoming.number}) passes through unchanged.", self.prefix)
            return Step(e.number, s.rule, True, lead, (), self._equation(e, self.lhs(incoming)))
        lead = prose(f"Through {through}, into ${into}$.", self.prefix)
        details = [self._incoming(node, incoming)]
        if s.rule in INTUITION and s.rule not in self.explained:
            self.explained.add(s.rule)
            details.append(prose(f"Why (first use of this rule): {INTUITION[s.rule]}"))
        if node.op == "ew":
            details += self._elementwise(s)
        else:
            details += self._rule(s)
        details.append(prose(self._shape_note(arg, s.contribution)))
        rhs = self.rhs(e)
        if node.op == "max":
            details.append(prose(self._max_routing(s)))
        textbook = self._textbook_softmax(s, incoming) if node.op == "log_softmax" else None
        if textbook is not None:
            form, why = textbook
            rhs += f" = {form}"
            details.append(prose(why, self.prefix))
        return Step(e.number, s.rule, False, lead, tuple(details), self._equation(e, rhs))

    # -- pieces ------------------------------------------------------------------------------
    def _latex(self, node: Node) -> str:
        return self.printer.latex(node)

    def _through(self, node: Node) -> str:
        """`$z_1 = X W_1 + b_1$ (1)` for a named node, `$X W_1$ (in (1))` for a part of one."""
        owner = self.d.owners.get(node)
        if node.op == "scan":  # its cell is shown equation by equation under its own number
            return f"the recurrence over the cell {node.attr('cell').name} in (#{owner})"
        expanded = self.printer.latex(node, expand=True)
        if node in self.names and not node.is_leaf:
            cite = "" if owner is None else f" (#{owner})" if node in self.d.names \
                else f" (in (#{owner}))"  # a part of an equation, named by the document
            return f"${self.names[node][1]} = {expanded}$" + cite
        cite = f" (in (#{owner}))" if owner is not None else ""
        return f"${expanded}$" + cite

    def _incoming(self, node: Node, incoming: Numbered | None) -> Inline:
        items = self.item_adjoints.get(node)
        if items:  # a scan: the adjoints of the state sequences it outputs
            cell = node.attr("cell")
            parts = []
            for k in range(len(cell.state_ph)):
                name = self.d.printer.latex(cell.state_ph[k]).replace("prev", "t")
                e = items.get(k)
                parts.append(f"${self.lhs(e)}$ from (#{e.number}), the adjoint of every ${name}$"
                             if e is not None
                             else f"none for the ${name}$ sequence (it does not reach the loss)")
            return prose("Incoming adjoints: " + "; ".join(parts) + ".", self.prefix)
        if incoming is None:  # the loss itself: the chain starts from dL/dL = 1
            name = self.d.names.get(node, (None, "L"))[1]
            return prose(f"Incoming adjoint: ${mathtext.partial(name, name)} = 1$, where the chain "
                         "rule starts.")
        return prose(f"Incoming adjoint: ${self.lhs(incoming)}$, from (#{incoming.number}).",
                     self.prefix)

    def _rule(self, s: RuleStep) -> list[Inline]:
        """The rule table's VJP for this primitive, applied to placeholder operands."""
        node = s.node
        if node.op == "scan":
            return self._scan(s)
        letters, out = self._placeholders(len(node.args))
        leaves = [Node.make("input", (), {"name": f"symgrad_doc_{c}"}, a.shape)
                  for c, a in zip(letters, node.args, strict=True)]
        placeholder = Node.make(node.op, leaves, dict(node.attrs), node.shape)
        g = Node.make("input", (), {"name": "symgrad_doc_adjoint"}, node.shape)
        names = {leaf: (c, c) for leaf, c in zip(leaves, letters, strict=True)}
        names[placeholder] = (out, out)
        names[g] = (f"dL/d{out}", mathtext.partial("L", out))
        printer = Printer(names)
        contribution = rule_for(node).vjp(g, placeholder)[s.arg]
        general = (f"for ${out} = {printer.latex(placeholder, expand=True)}$: "
                   f"${mathtext.partial('L', letters[s.arg])} = {printer.latex(contribution)}$")
        return [prose(f"Rule ({s.rule}, from the rule table): {general}.")]

    def _scan(self, s: RuleStep) -> list[Inline]:
        """Back-propagation through time: which of the reverse loop's results this equation
        collects. The loop's step itself is shown under the first such equation's number."""
        cell = s.node.attr("cell")
        ns, nh = len(cell.seq_ph), len(cell.state_ph)
        first = next(e.number for e in self.d.backward if getattr(e.step, "node", None) is s.node)
        arg = self._latex(s.node.args[s.arg])
        if s.arg < ns:
            how = (f"for every step $t$ the adjoint of the step's slice of ${arg}$, stacked over "
                   "time (the input's part of each gate's pre-activation adjoint)")
        elif s.arg < ns + nh:
            how = "the adjoint of the initial state, carried back from the first step"
        else:
            how = (f"the adjoint of ${arg}$, summed over all steps, since every step reads the same "
                   "value (the weight gradients written as sums over time below)")
        return [prose(f"Rule (back-propagation through time, from the rule table): one reverse loop "
                      f"$t = T, \\dots, 1$ over the cell {cell.name}'s backward step, derived by "
                      f"reverse mode from the cell's equations and shown as (#{first}.1) onwards in "
                      f"the section on back-propagation through time. This equation collects {how}.",
                      self.prefix)]

    def _max_routing(self, s: RuleStep) -> str:
        """Max pooling's adjoint as a textbook states it: to the arg-max of each window."""
        u = self._latex(s.node.args[0])
        z = self.printer.latex(s.node)
        return (f"In textbook form: each window's adjoint goes to the entry that won, "
                f"$\\mathbb{{1}}\\left[{u} = {z}\\right] \\odot \\delta_{{{z}}}$ with the maximum and "
                "its adjoint repeated over the window; the form below divides by the number of "
                "entries that tie for the maximum, so that a tie shares the adjoint instead of "
                "doubling it (with real-valued inputs a tie almost never happens).")

    def _textbook_softmax(self, s: RuleStep, incoming: Numbered | None) -> tuple[str, str] | None:
        """(P - Y)/B for the mean softmax cross-entropy when the target's rows are declared to
        sum to 1: then sum_n Y = 1 and e^{log softmax(z)} is the output P = softmax(z)."""
        model, p = self.d.model, self.d.printer
        if incoming is None or not isinstance(incoming.step, RuleStep):
            return None
        z = s.node.args[0]
        for name, rows in model.target_rows.items():
            y = p.latex(model.leaves[name])
            batch = sympy.latex(z.shape[0]) if z.shape else None
            if self.d.rhs(incoming, "latex") != rf"- \frac{{{y}}}{{{batch}}}":
                continue
            probs = next((e for e in self.d.forward if e.kind == "output"
                          and self.d.train.get(e.node, e.node).op == "softmax"
                          and self.d.train.get(e.node, e.node).args[0] is z), None)
            if probs is None:
                continue
            why = (f"In textbook form: every row of ${y}$ sums to 1 (it is declared {rows}), so "
                   f"$\\sum_{{{sympy.latex(z.shape[-1])}}} {y} = 1$, and "
                   f"$e^{{\\log\\operatorname{{softmax}}\\left({p.latex(z)}\\right)}}$ is "
                   f"${probs.lhs_latex}$ (#{probs.number}): the gradient of the mean cross-entropy is "
                   "the predicted minus the true probabilities, over the batch size. The code computes "
                   "the general form, which holds for any target.")
            return rf"\frac{{{probs.lhs_latex} - {y}}}{{{batch}}}", why
        return None

    def _number(self, s: RuleStep) -> int:
        return next(e.number for e in self.d.backward if e.step is s)

    def _taken(self) -> set[str]:
        """The LaTeX names the model already uses (leaves, equations, adjoints, dims)."""
        names = getattr(self, "names", self.d.names)
        taken = {latex for _, latex in names.values()}
        return taken | {sympy.latex(d) for d in self.d.model.dim_symbols.values()}

    def _free(self, letters: str, *also: str) -> str:
        """The first of `letters` that names nothing in the model (nor any of `also`)."""
        taken = self._taken() | set(also)
        return next((c for c in letters if c not in taken), letters[0] + "'")

    def _placeholders(self, n: int) -> tuple[list[str], str]:
        """Letters for a rule's operands and output that no name of the model uses."""
        taken = self._taken()
        operands = [c for c in "UVRSAPQ" if c not in taken]
        return operands[:n], self._free("ZFGHCTK")

    def _elementwise(self, s: RuleStep) -> list[Inline]:
        node, arg = s.node, s.node.args[s.arg]
        expr = node.attr("expr")
        operands = dict(zip(ARG[:len(node.args)], node.args, strict=True))
        p = self.printer
        out: list[Inline] = [function_identity(f, p, _parameter_values(expr, f)) for f in functions_in(expr)]
        raw = p.expr(sympy.diff(expr, ARG[s.arg]), operands, "latex")
        local = None if s.local is None else p.expr(s.local, operands | {Y: node}, "latex")
        shown = raw if local is None or local == raw else f"{raw} = {local}"
        y = self.names[node][1] if node in self.names else self._free("yvqo")
        x = self.names[arg][1] if arg in self.names else self._free("xtwk", y)
        named = [f"${sym} = {self._latex(n)}$" for sym, n in ((y, node), (x, arg)) if n not in self.names]
        note = f" (with {' and '.join(named)})" if named else ""
        out.append(prose(f"Local derivative, entry by entry (sympy): "
                         f"$\\frac{{\\partial {y}}}{{\\partial {x}}} = {shown}${note}; the step "
                         "multiplies the incoming adjoint by it elementwise."))
        axes = broadcast_axes(arg.shape, node.shape) if len(arg.shape) <= len(node.shape) else ()
        if axes and tuple(arg.shape) != tuple(node.shape):
            dims = ", ".join(f"${sympy.latex(node.shape[a])}$" for a in axes)
            out.append(prose(f"${x}$ was broadcast along {dims} in the forward pass, so its "
                             "contribution is summed over those axes."))
        return out

    def _shape_note(self, arg: Node, contribution: Node) -> str:
        if not arg.shape:
            return "Result: a scalar, like its argument."
        shape = mathtext.shape(arg.shape)
        if contribution.op == "broadcast_to" and not contribution.args[0].shape:
            value = self.printer.latex(contribution.args[0], expand=True)
            return (f"Result: a ${shape}$ array (the shape of ${self._latex(arg)}$) whose every "
                    f"entry is the scalar ${value}$, written as that scalar.")
        return f"Result shape: ${shape}$, the shape of ${self._latex(arg)}$."


def functions_in(expr: sympy.Expr) -> list[type]:
    """The one-variable functions an elementwise expression applies, in a stable order."""
    found = {type(f) for f in expr.atoms(sympy.Function)
             if isinstance(f, ElementwiseFunction) or len(f.args) == 1}
    return sorted(found, key=lambda f: f.__name__)


def _parameter_values(expr: sympy.Expr, fn: type) -> list[tuple]:
    """The parameter values (a leaky relu's slope) of each call of fn in expr, in a stable order."""
    if not getattr(fn, "parameters", ()):
        return []
    return sorted({f.args[1:] for f in expr.atoms(fn)}, key=str)


def function_identity(fn: type, printer: Printer, values: list[tuple] = ()) -> Inline:
    """f(x) = definition, and f'(x) as sympy derived it (and the form the code uses: at some
    parameter values, such as a negative leaky-relu slope, another one)."""
    x = {X: "x"}
    if issubclass(fn, ElementwiseFunction):
        call = printer.expr(fn(X, *fn.parameters), x, "latex")
        definition = printer.expr(fn.definition, x, "latex")
        raw = printer.expr(sympy.diff(fn.definition, X), x, "latex")
        general = derivative_of(fn)
        chosen = printer.expr(general, x, "latex")
        tail = raw if raw == chosen else f"{raw} = {chosen}"
        text = (f"${call} = {definition}$, so sympy derives ${mathtext.ordinary(call)} = {tail}$"
                + ("" if raw == chosen else " (the cheapest verified form, which the code uses)") + ".")
        for v in values:
            own = derivative_of(fn, v)
            if own != general:
                at = ", ".join(f"{sympy.latex(p)} = {sympy.latex(a)}"
                               for p, a in zip(fn.parameters, v, strict=True))
                text += (f" At ${at}$ that form does not hold, and the code uses "
                         f"${printer.expr(own, x, 'latex')}$ there.")
        return prose(text)
    call = printer.expr(fn(X), x, "latex")
    derivative = printer.expr(sympy.diff(fn(X), X), x, "latex")
    return prose(f"sympy: ${mathtext.ordinary(call)} = {derivative}$.")
