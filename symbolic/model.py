"""`Model`: where a user declares dims, inputs, targets, parameters and writes equations.

    m = Model("mlp")
    B, n_in, n_out = m.dims("B n_in n_out")
    X = m.input("X", (B, n_in)); Y = m.target("Y", (B, n_out))
    W = m.param("W", (n_in, n_out)); b = m.param("b", (n_out,), init="zeros")
    z = m.let("z", X @ W + b)
    m.output("P", softmax(z))
    m.loss(softmax_cross_entropy(z, Y))

Shapes are checked as each expression is built; names are checked as they are declared.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import sympy
from symgrad.symbolic import checks
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import ModelError, ShapeError, located, user_location
from symgrad.symbolic.graph import ARG, Node, apply, as_node, select_mode, topological
from symgrad.symbolic.names import check_identifier
from symgrad.symbolic.shapes import Shape, as_dim, fmt_shape, make_dim

LEAF_ROLES = ("input", "target", "param", "state", "hyper")
INITS = ("glorot_uniform", "he_normal", "normal", "constant", "zeros", "ones")
TASKS = ("regression", "binary", "multiclass", "density")  # density: no target; the loss is an NLL


@dataclass(frozen=True)
class Init:
    """How `init_params` fills a parameter: a scheme, and its scale (the std of "normal",
    the value of "constant"; the others ignore it)."""

    scheme: str = "glorot_uniform"
    scale: float = 0.01


@dataclass(frozen=True)
class Equation:
    name: str
    node: Node
    kind: str  # "let", "output", "loss" or "update"
    target: str | None = None  # for an update: the parameter or state it overwrites


#: declarations of a target whose every row sums to 1 (see Model.target)
TARGET_ROWS = ("one-hot", "probabilities")


class Model:
    """A network's equations. See the module docstring for an example."""

    def __init__(self, name: str, description: str = "", task: str | None = None):
        self.name = check_identifier(name, "model name")
        self.description = _description(name, description)
        if task is not None and task not in TASKS:
            raise ModelError(f"model {name!r}: task must be one of {', '.join(TASKS)}, not {task!r}")
        self.task = task
        self.dim_symbols: dict[str, sympy.Symbol] = {}
        self.dim_defaults: dict[str, int] = {}
        self.leaves: dict[str, Node] = {}  # inputs, targets, params and hypers, in order
        self.inits: dict[str, Init] = {}
        self.hyper_defaults: dict[str, float] = {}
        self.equations: list[Equation] = []
        self.names: dict[Node, str] = {}
        self.prediction: str | None = None
        self._masks = 0
        self.objectives: dict[str, tuple[str, ...]] = {}  # objective -> the parameters it trains
        self.target_rows: dict[str, str] = {}  # target -> "one-hot"/"probabilities": rows sum to 1
        # what `symgrad derive` takes to build it again (a built-in's name, a model file's path);
        # None for a model built in Python. Only the generated module's header cites it.
        self.origin: str | None = None
        self._checked: set[Node] = set()  # nodes whose symbols and numbers passed _check_values

    # -- declarations ------------------------------------------------------------------
    def dim(self, name: str, default: int | None = None) -> sympy.Symbol:
        """Declare a dim; `default` is the size training uses unless told otherwise."""
        self._claim(name, "dim")
        symbol = make_dim(name)
        self.dim_symbols[name] = symbol
        if default is not None:
            if not isinstance(default, int) or isinstance(default, bool) or default < 1:
                raise ModelError(f"dim {name!r}: default must be a positive int, not {default!r}")
            self.dim_defaults[name] = default
        return symbol

    def dims(self, names: str | Iterable[str]) -> tuple[sympy.Symbol, ...]:
        """Declare several dims at once: `B, n = m.dims("B n")`."""
        names = names.split() if isinstance(names, str) else list(names)
        return tuple(self.dim(n) for n in names)

    def input(self, name: str, shape: Iterable[object], integer: bool = False) -> Node:
        return self._leaf("input", name, shape, integer)

    def target(self, name: str, shape: Iterable[object], rows: str | None = None,
               integer: bool = False) -> Node:
        """What the output is compared with. `rows="one-hot"` (class labels) or
        `rows="probabilities"` declares that every row (the last axis) sums to 1; documents then
        print a softmax cross-entropy's gradient in its textbook form (P - Y)/B. `integer=True`:
        class labels 0..k-1 (one per row, no one-hot), which only index:
        `sparse_softmax_cross_entropy(z, y)` or `gather(x, y)`."""
        if rows is not None and rows not in TARGET_ROWS:
            raise ModelError(f"target {name!r}: rows must be one of {', '.join(map(repr, TARGET_ROWS))}, "
                             f"not {rows!r}")
        if rows is not None and integer:
            raise ModelError(f"target {name!r}: integer class labels have no rows to sum; give rows= or "
                             "integer=True, not both")
        node = self._leaf("target", name, shape, integer)
        if rows is not None:
            self.target_rows[name] = rows
        return node

    def param(self, name: str, shape: Iterable[object], init: str | Init = "glorot_uniform") -> Node:
        init = self._init("param", name, init)
        node = self._leaf("param", name, shape)
        self.inits[name] = init
        return node

    def state(self, name: str, shape: Iterable[object], init: str | Init = "zeros") -> Node:
        """A tensor the model carries between calls and changes with `update` (optimizer
        moments, running averages): not trained, not part of a batch."""
        init = self._init("state", name, init)
        node = self._leaf("state", name, shape)
        self.inits[name] = init
        return node

    def hyper(self, name: str, default: float) -> Node:
        """A scalar hyper-parameter, passed at run time (`hypers={...}`), with a default."""
        default = checks.finite_number(default, f"hyper {name!r}: the default")
        node = self._leaf("hyper", name, ())
        self.hyper_defaults[name] = float(default)
        return node

    @staticmethod
    def _init(role: str, name: str, init: str | Init) -> Init:
        init = Init(init) if isinstance(init, str) else init
        if not isinstance(init, Init) or init.scheme not in INITS:
            raise ModelError(located(f"{role} {name!r}: init must be one of {', '.join(INITS)}, "
                                     f"not {init!r}", user_location()))
        checks.finite_number(init.scale, f"{role} {name!r}: the init scale")
        return init

    # -- equations ---------------------------------------------------------------------
    def let(self, name: str, expr: Node) -> Node:
        """Name an intermediate result; it becomes a numbered equation."""
        return self._equation(name, expr, "let")

    def output(self, name: str, expr: Node, prediction: bool | None = None) -> Node:
        """A model output, returned by `forward`. The first output is the prediction unless
        another says `prediction=True`."""
        node = self._equation(name, expr, "output")
        if prediction or (prediction is None and self.prediction is None):
            self.prediction = name
        return node

    def update(self, target: Node, expr: Node) -> Node:
        """`target <- expr`: a parameter or state tensor gets a new value, in place.

        Returns the new value: an expression that mentions `target` itself means its old value,
        so a later update that needs the new one uses what this returns (`v_new = m.update(v,
        ...)`). Updates are applied in the order written.
        """
        if not isinstance(target, Node) or target.op not in ("param", "state"):
            raise ModelError(f"update: the target must be a parameter or state tensor, not {target!r}")
        name = f"{target.name}_new"
        expr = self._check_expr(name, expr)
        if expr.shape != target.shape:
            raise ShapeError(located(f"update of {target.name}: new value has shape "
                                     f"{fmt_shape(expr.shape)}, expected {fmt_shape(target.shape)}",
                                     user_location()))
        if any(e.kind == "update" and e.target == target.name for e in self.equations):
            raise ModelError(f"{target.name!r} is updated twice; write one update per tensor")
        return self._equation(name, expr, "update", target=target.name)

    @property
    def updates(self) -> dict[str, Node]:
        """Target name -> new value, in the order written."""
        return {e.target: e.node for e in self.equations if e.kind == "update"}

    def loss(self, expr: Node, name: str = "L") -> Node:
        """The scalar to minimise."""
        expr = self._check_expr(name, expr)
        if expr.shape != ():
            raise ShapeError(located(
                f"loss {name!r} must be a scalar, but its shape is {fmt_shape(expr.shape)}; "
                "reduce it with sum or mean", user_location()))
        if self.losses:
            raise ModelError(f"model {self.name!r} already has a loss {next(iter(self.losses))!r}")
        return self._equation(name, expr, "loss")

    def objective(self, expr: Node, name: str, wrt: Iterable[Node]) -> Node:
        """One player's loss in a model with several (a GAN's discriminator and generator):
        minimised w.r.t. the parameters `wrt` only, with the others held fixed. The generated
        module gets `loss_and_grad_<name>` for it; `model.loss` stays the sum (the common
        contract)."""
        expr = self._check_expr(name, expr)
        if expr.shape != ():
            raise ShapeError(located(f"objective {name!r} must be a scalar, but its shape is "
                                     f"{fmt_shape(expr.shape)}", user_location()))
        group = []
        for p in wrt:
            if not isinstance(p, Node) or p.op != "param" or self.leaves.get(p.name) is not p:
                raise ModelError(located(f"objective {name!r}: {p!r} is not a parameter of model "
                                         f"{self.name!r}", user_location()))
            group.append(p.name)
        if not group:
            raise ModelError(located(f"objective {name!r} trains no parameters", user_location()))
        node = self._equation(name, expr, "objective")
        self.objectives[name] = tuple(group)
        return node

    @property
    def loss_nodes(self) -> dict[str, Node]:
        """Every scalar that can be differentiated: the loss and the players' objectives."""
        return {e.name: e.node for e in self.equations if e.kind in ("loss", "objective")}

    # -- regularisation layers ---------------------------------------------------------
    def dropout(self, x: Node, rate: float | Node) -> Node:
        """Inverted dropout: in training, each element is zeroed with probability `rate` and
        the rest scaled by 1/(1 - rate); in evaluation, x unchanged. `rate` is a number or a
        hyper-parameter. Masks are drawn from the generator the generated code is given."""
        rate = as_node(rate)
        if rate.shape != () or rate.op not in ("const", "hyper"):
            raise ModelError(located("dropout rate must be a number or a hyper-parameter", user_location()))
        if rate.op == "const" and not 0 <= float(rate.attr("value")) < 1:
            raise ModelError(located(f"dropout rate must be in [0, 1), not {rate.attr('value')}",
                                     user_location()))
        self._masks += 1
        mask = apply("dropout_mask", [rate], name=f"mask{self._masks}", shape=x.shape)
        return select_mode(x * mask, x)

    def batchnorm(self, x: Node, name: str, momentum: float = 0.1, eps: float = 1e-5) -> Node:
        """Batch normalisation over every axis but the last (the features).

        Training uses the batch's mean and variance and moves the running averages
        `<name>_mean`, `<name>_var` (state) towards them, as PyTorch does (the running variance
        takes the unbiased batch variance); evaluation uses the running averages. Scale and
        shift are the parameters `<name>_gamma` and `<name>_beta`.
        """
        check_identifier(name, "batchnorm name")
        momentum = checks.finite_number(momentum, f"batchnorm {name!r}: momentum")
        eps = checks.finite_number(eps, f"batchnorm {name!r}: eps")
        if not 0 <= momentum <= 1 or eps <= 0:
            raise ModelError(located(f"batchnorm {name!r}: momentum must be in [0, 1] and eps "
                                     f"positive, not {momentum} and {eps}", user_location()))
        if x.ndim < 2:
            raise ShapeError(located(f"batchnorm {name!r} needs a batch axis and a feature axis, "
                                     f"got shape {fmt_shape(x.shape)}", user_location()))
        features = (x.shape[-1],)
        axes = tuple(range(x.ndim - 1))
        gamma = self.param(f"{name}_gamma", features, init="ones")
        beta = self.param(f"{name}_beta", features, init="zeros")
        running_mean = self.state(f"{name}_mean", features, init="zeros")
        running_var = self.state(f"{name}_var", features, init="ones")
        mean = self.let(f"{name}_mu", x.mean(axes))
        var = self.let(f"{name}_sigma2", F.square(x - mean).mean(axes))
        count = sympy.Mul(*x.shape[:-1])
        train = gamma * (x - mean) / F.sqrt(var + eps) + beta
        evaluate = gamma * (x - running_mean) / F.sqrt(running_var + eps) + beta
        self.update(running_mean, (1 - momentum) * running_mean + momentum * mean)
        # unbiased batch variance, n/(n-1); max() keeps it finite for a batch of one
        unbiased = count / sympy.Max(count - 1, 1)
        self.update(running_var, (1 - momentum) * running_var + momentum * var * unbiased)
        return select_mode(train, evaluate)

    # -- recurrences ---------------------------------------------------------------------
    def scan(self, cell, sequences, init, name: str = "rnn") -> list[Node]:
        """A recurrence over axis 1 (time) of `sequences`: `cell(x_t..., h_prev...)` returns the
        new states; the result is each state's (B, T, ...) sequence. Back-propagation through
        time is derived from the cell (see symbolic.scan)."""
        from symgrad.symbolic.scan import scan

        for node in (*sequences, *init):
            self._check_expr(name, as_node(node))
        return scan(cell, sequences, init, name)

    # -- queries -----------------------------------------------------------------------
    @property
    def losses(self) -> dict[str, Node]:
        return {e.name: e.node for e in self.equations if e.kind == "loss"}

    @property
    def outputs(self) -> dict[str, Node]:
        return {e.name: e.node for e in self.equations if e.kind == "output"}

    def leaves_of(self, role: str) -> dict[str, Node]:
        return {n: v for n, v in self.leaves.items() if v.op == role}

    @property
    def params(self) -> dict[str, Node]:
        return self.leaves_of("param")

    @property
    def data(self) -> dict[str, Node]:
        """Inputs and targets: what a batch holds."""
        return {n: v for n, v in self.leaves.items() if v.op in ("input", "target")}

    def used_dims(self) -> tuple[str, ...]:
        """The declared dims, in declaration order."""
        return tuple(self.dim_symbols)

    def spec_text(self) -> str:
        """A canonical text of the whole model; its hash identifies the spec in generated code."""
        from symgrad.symbolic.printing import Printer

        printer = Printer(self.names)
        lines = [f"model {self.name} task={self.task} prediction={self.prediction}"]
        lines += [f"dim {n} default={self.dim_defaults.get(n)}" for n in self.dim_symbols]
        for name, leaf in self.leaves.items():
            extra = f" init={self.inits[name]}" if name in self.inits else ""
            extra += f" default={self.hyper_defaults[name]!r}" if name in self.hyper_defaults else ""
            lines.append(f"{leaf.op} {name} {fmt_shape(leaf.shape)}{extra}")
        for eq in self.equations:
            lines.append(f"{eq.kind} {eq.name} = {printer.text(eq.node, expand=True)}")
        return "\n".join(lines) + "\n"

    def spec_hash(self) -> str:
        return hashlib.sha256(self.spec_text().encode()).hexdigest()[:16]

    def check(self) -> None:
        """Whole-model checks for a model to differentiate, once all equations are written."""
        if not self.losses:
            raise ModelError(f"model {self.name!r} has no loss; add one with model.loss(...)")
        if not self.params:
            raise ModelError(f"model {self.name!r} has no parameters")
        if self.task is not None and self.prediction is None:
            raise ModelError(f"model {self.name!r} has a task but no output to predict with")

    # -- internals ---------------------------------------------------------------------
    def _claim(self, name: str, what: str) -> str:
        try:
            check_identifier(name, what)
        except ModelError as e:
            raise ModelError(located(str(e), user_location())) from None
        taken = (set(self.dim_symbols) | set(self.leaves) | {e.name for e in self.equations})
        if name in taken:
            raise ModelError(located(f"{what} {name!r}: the name is already used in model {self.name!r}",
                                     user_location()))
        return name

    def _shape(self, name: str, shape: Iterable[object]) -> Shape:
        if isinstance(shape, (str, int)) or not isinstance(shape, Iterable):
            raise ModelError(f"{name!r}: shape must be a tuple of dims, not {shape!r}")
        out = []
        for d in shape:
            if isinstance(d, str):
                if d not in self.dim_symbols:
                    raise ModelError(f"{name!r}: unknown dim {d!r}; declare it with model.dim({d!r})")
                d = self.dim_symbols[d]
            try:
                d = as_dim(d)
            except (TypeError, ValueError) as e:
                raise ModelError(f"{name!r}: {e}") from None
            unknown = {str(s) for s in d.free_symbols} - set(self.dim_symbols)
            if unknown:
                raise ModelError(f"{name!r}: unknown dim {', '.join(sorted(unknown))}; "
                                 f"declare it with model.dim(...)")
            out.append(d)
        return tuple(out)

    def _leaf(self, role: str, name: str, shape: Iterable[object], integer: bool = False) -> Node:
        self._claim(name, role)
        attrs = {"name": name, "integer": True} if integer else {"name": name}
        node = Node.make(role, (), attrs, self._shape(name, shape))
        self.leaves[name] = node
        return node

    def _check_expr(self, name: str, expr: object) -> Node:
        if not isinstance(expr, Node):
            raise ModelError(f"equation {name!r}: expected a tensor expression, got {expr!r}")
        # values other equations named were checked with their equation: stop there, so that
        # checking a deep model's equations costs their new nodes only
        foreign = [n.name for n in topological([expr], stop=self.names.keys())
                   if n.op in LEAF_ROLES and self.leaves.get(n.name) is not n]
        if foreign:
            raise ModelError(f"equation {name!r} uses {', '.join(sorted(set(foreign)))}, "
                             f"which model {self.name!r} does not declare")
        self._check_values(name, expr)
        return expr

    def _check_values(self, name: str, expr: Node) -> None:
        """Every symbol in the equation's expressions, shapes and attributes is a declared dim
        (or an elementwise node's own argument symbol) and every number is finite: nothing
        else may reach generated source. The error cites the line that built the culprit."""
        dims = set(self.dim_symbols.values())
        pending = [expr]
        while pending:
            for node in topological(pending, stop=self._checked):
                if node in self._checked:
                    continue
                allowed = dims | set(ARG) if node.op == "ew" else dims
                values = [*node.shape, *(v for _, a in node.attrs for v in checks.values_in(a))]
                for value in values:
                    problem = checks.bad_atoms(value, allowed)
                    if problem:
                        raise ModelError(located(f"equation {name!r}: {problem}",
                                                 node.origin or user_location()))
                self._checked.add(node)
            pending = [n for node in pending for n in _cell_roots(node) if n not in self._checked]

    def _equation(self, name: str, expr: Node, kind: str, target: str | None = None) -> Node:
        self._claim(name, {"let": "equation", "output": "output", "loss": "loss",
                           "update": "update", "objective": "objective"}[kind])
        expr = self._check_expr(name, expr)
        if (expr.is_leaf or expr in self.names) and kind not in ("output", "loss", "objective"):
            what = self.names.get(expr) or expr.name or "a constant"
            raise ModelError(f"equation {name!r} only renames {what}; use {what} directly")
        self.names.setdefault(expr, name)  # an output may be a value another equation named
        self.equations.append(Equation(name, expr, kind, target))
        return expr


def _description(name: str, text: object) -> str:
    """The description as one line of printable text: it goes into generated docstrings and
    documents, so a NUL byte, another control character or a lone surrogate (which no file
    encoding can write) is refused here, once, instead of failing when a file is written."""
    if not isinstance(text, str):
        raise ModelError(located(f"model {name!r}: the description must be a string, not "
                                 f"{type(text).__name__}", user_location()))
    text = " ".join(text.split())
    for i, ch in enumerate(text):
        if not ch.isprintable():  # a space passes; a lone surrogate is not printable
            raise ModelError(located(f"model {name!r}: the description holds the character "
                                     f"{ch!r} at position {i}; use printable text", user_location()))
    return text


def _cell_roots(root: Node) -> list[Node]:
    """The graphs a recurrence keeps in its `cell` attribute (its step, forward and backward)."""
    out = []
    for node in topological([root]):
        cell = dict(node.attrs).get("cell")
        if cell is not None:
            out += [*cell.outs, *cell.residuals,
                    *(d for d in (*cell.d_seq, *cell.d_state, *cell.d_captured) if d is not None)]
    return out
