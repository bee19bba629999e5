"""Second order: Hessian-vector products, Hessians and Jacobians, derived by differentiating
the backward graph again through the same rule table (reverse over reverse).

The gradient g(theta) of a loss is a graph of primitives, so the scalar <g, v> = sum_p
<g_p, v_p> is one more scalar function of the parameters, and reverse mode over it gives
d<g, v>/dtheta = H v. No rule is added for this: every VJP in the table is written with
differentiable primitives. Two things only are second-order specific:

* the derivative of a kink's step (relu' = Heaviside, abs' = sign) is a DiracDelta, taken as 0
  (almost everywhere; what PyTorch and JAX give): see `symbolic.rules.local_derivative`;
* a scan's back-propagation through time is first rewritten as a scan of its own over the
  reversed sequences (`symbolic.scan.differentiable_vjp`), so that the second pass
  differentiates it with scan's own rule.

A Hessian is H v for the unit vectors of one parameter (the generated `hessian` stacks them),
and a Jacobian of an output is its VJP for the unit cotangents.
"""
from __future__ import annotations

from dataclasses import dataclass

from symgrad.symbolic.autodiff import Accumulation, Step, pullback, reverse_mode
from symgrad.symbolic.derivation import Derivation, derive
from symgrad.symbolic.errors import ModelError
from symgrad.symbolic.graph import Node, broadcast_to, const, placeholder
from symgrad.symbolic.model import Model


def vector_name(param: str) -> str:
    """The generated code's name of the direction v_p (a leading `_` no model name takes)."""
    return f"_v_{param}"


@dataclass
class HVP:
    """H v for a loss: the gradients it differentiates, the direction, the products."""

    derivation: Derivation  # the first-order derivation (equations, names, documents)
    loss_name: str
    wrt: tuple[str, ...]
    gradients: dict[str, Node]  # g_p, the graph differentiated a second time
    vectors: dict[str, Node]  # v_p, keyed and shaped like the parameters
    inner: Node  # <g, v>, the scalar reverse mode differentiates
    products: dict[str, Node]  # (H v)_p
    steps: list[Step | Accumulation]  # the second reverse pass, for documents

    @property
    def model(self) -> Model:
        return self.derivation.model


def hvp(model: Model | Derivation, loss: str | None = None, wrt: list[str] | None = None) -> HVP:
    """The Hessian-vector product of a loss (the model's, or one player's objective) w.r.t.
    its parameters, as graphs over the parameters, the batch and one vector per parameter."""
    first = model if isinstance(model, Derivation) else derive(model, loss, wrt)
    if isinstance(model, Derivation) and (loss not in (None, first.loss_name) or wrt is not None):
        first = derive(model.model, loss, wrt)
    params = first.model.params
    names = list(first.wrt)
    grads = _differentiable_gradients(first)
    vectors = {p: placeholder(vector_name(p), params[p].shape) for p in names}
    inner = None
    for p in names:
        term = (grads[p] * vectors[p]).sum()
        inner = term if inner is None else inner + term
    second = reverse_mode(inner, [params[p] for p in names])
    products = {}
    for p in names:
        hv = second.adjoints.get(params[p])
        products[p] = hv if hv is not None else broadcast_to(const(0), params[p].shape)
    return HVP(first, first.loss_name, tuple(names), grads, vectors, inner, products, second.steps)


def _differentiable_gradients(first: Derivation) -> dict[str, Node]:
    """The gradients, with any back-propagation through time written as a scan (which
    differentiates again); the first-order derivation's own gradients otherwise."""
    from symgrad.symbolic.graph import topological

    if not any(n.op == "scan_vjp" for n in topological(first.gradients.values())):
        return dict(first.gradients)
    params = first.model.params
    grads = pullback({first.loss: const(1)}, [params[p] for p in first.wrt], second_order=True)
    return {p: grads.adjoints.get(params[p], broadcast_to(const(0), params[p].shape)) for p in first.wrt}


@dataclass
class Hessian:
    """The Hessian of a loss w.r.t. one parameter: H v with v running over its unit vectors."""

    hvp: HVP
    wrt: str

    @property
    def derivation(self) -> Derivation:
        return self.hvp.derivation


def hessian(model: Model | Derivation, wrt: str, loss: str | None = None) -> Hessian:
    first = model if isinstance(model, Derivation) else derive(model, loss)
    if wrt not in first.wrt:
        raise ModelError(f"model {first.model.name!r}: no parameter {wrt!r} to take the Hessian by; "
                         f"it has {', '.join(first.wrt)}")
    return Hessian(hvp(first), wrt)


@dataclass
class Jacobian:
    """d(output)/d(wrt): the VJP of the output for a cotangent u, as a graph (row i of the
    Jacobian is that VJP for the i-th unit cotangent)."""

    derivation: Derivation
    of: str
    wrt: str
    cotangent: Node
    vjp: Node


def jacobian(model: Model | Derivation, of: str, wrt: str) -> Jacobian:
    first = model if isinstance(model, Derivation) else derive(model)
    m = first.model
    outputs = first.outputs(False)
    if of not in outputs:
        raise ModelError(f"model {m.name!r} has no output {of!r}; it has {', '.join(outputs)}")
    leaves = {**m.params, **{k: v for k, v in m.data.items() if v.op == "input"}}
    if wrt not in leaves:
        raise ModelError(f"model {m.name!r}: {wrt!r} is neither a parameter nor an input; "
                         f"choose one of {', '.join(leaves)}")
    out = outputs[of]
    u = placeholder(f"_u_{of}", out.shape)
    adj = pullback({out: u}, [leaves[wrt]]).adjoints.get(leaves[wrt])
    if adj is None:
        adj = broadcast_to(const(0), leaves[wrt].shape)
    return Jacobian(first, of, wrt, u, adj)


def simplified(roots: dict[str, Node]) -> dict[str, Node]:
    """`roots` with two rewrites that reverse mode over a backward pass calls for:

    * each matrix product that is only ever read transposed, (A B)^T, computed as B^T A^T
      (the adjoint of the B^T in G B^T is (A^T G)^T ...): computed as written, the result is a
      transposed view that every kernel reading it walks across memory; the same product the
      other way round is laid out as it is read;
    * a sum of zeros (the adjoint of a comparison: max pooling's mask) is zeros, not a
      reduction over a broadcast zero;
    * an elementwise value read only reversed in time (an HVP's loops run over reversed
      sequences), flip(f(a, b)), computed as f(flip(a), flip(b)): the reversed view is then
      an operand like any other, and f fuses into the kernel that reads it (the LSTM's
      tangent of its gate inputs, V_b + X V_Wx, was a pass of its own over (B, T, 4 n_h))."""
    from symgrad.symbolic.graph import matmul, topological
    from symgrad.symbolic.scan import substitute

    roots = _flips_pushed(roots)

    order = topological(roots.values())
    readers: dict[Node, list[Node]] = {}
    for n in order:
        for a in set(n.args):
            readers.setdefault(a, []).append(n)
    kept = set(roots.values())
    mapping = {}
    for n in order:
        m = n.args[0] if n.op == "transpose" else None
        if (m is not None and m.op == "matmul" and n.ndim == 2 and m.args[0].ndim == 2
                and m.args[1].ndim == 2 and m not in kept
                and all(r.op == "transpose" for r in readers[m])):
            mapping[n] = matmul(m.args[1].T, m.args[0].T)
        elif (n.op == "sum" and n.shape and n.args[0].op == "broadcast_to" and n.args[0].args[0].op == "const"
              and n.args[0].args[0].attr("value") == 0):
            mapping[n] = broadcast_to(const(0), n.shape)
    if not mapping:
        return roots
    new = substitute(list(roots.values()), mapping)
    return {k: new[v] for k, v in roots.items()}


def _flips_pushed(roots: dict[str, Node]) -> dict[str, Node]:
    """flip(f(a, b)) as f(flip(a), flip(b)) where f's value is read nowhere else (see
    `simplified`); an operand of length 1 along the axis (a bias row) is left as it is."""
    from symgrad.symbolic.graph import apply, rebuild, topological

    order = topological(roots.values())
    readers: dict[Node, list[Node]] = {}
    for n in order:
        for a in set(n.args):
            readers.setdefault(a, []).append(n)
    kept = set(roots.values())
    out: dict[Node, Node] = {}
    for n in order:
        e = n.args[0] if n.op == "flip" else None
        if e is not None and e.op == "ew" and e not in kept and readers[e] == [n]:
            axis = n.attr("axis") % n.ndim
            args = []
            for a in e.args:
                at = axis - (e.ndim - a.ndim)  # the operand's axis, its shape aligned to the right
                args.append(out[a] if _constant_along(a, at) else apply("flip", [out[a]], axis=at))
            out[n] = Node.make("ew", args, {"expr": e.attr("expr")}, e.shape)
        else:
            out[n] = rebuild(n, [out[a] for a in n.args])
    return {k: out[v] for k, v in roots.items()}


def _constant_along(a: Node, axis: int) -> bool:
    """a is the same at every index of `axis` (an axis it lacks, one of length 1, or one a
    broadcast added): reversing it changes nothing."""
    while True:
        if axis < 0 or a.shape[axis] == 1:
            return True
        if a.op != "broadcast_to":
            return False
        axis -= a.ndim - a.args[0].ndim
        a = a.args[0]


__all__ = ["HVP", "Hessian", "Jacobian", "hvp", "hessian", "jacobian", "simplified", "vector_name"]


@dataclass
class ClosedForm:
    """H = X^T diag(d) X for a weight W that the loss reads only through z = X W, X an input,
    when the loss's curvature in z is diagonal (d_ra = d^2 L / dz_ra^2): one block per output
    column a, d^2 L / dW_{:,a} dW_{:,b} = delta_ab X^T diag(d_{:,a}) X. Logistic regression's
    d = p (1 - p) / B, least squares' a constant 2 / (B n)."""

    param: str
    X: Node
    z: Node
    d: Node  # the curvature, shaped like z (or a scalar constant)


def closed_form_hessian(first: Derivation, param: str) -> ClosedForm | None:
    """The closed form above for one parameter, found from the derivation; None where the
    parameter is not read that way or the curvature in z is not diagonal (softmax, hidden
    layers)."""
    import sympy
    from symgrad.symbolic.graph import ARG, elementwise, topological

    W = first.model.params.get(param)
    loss = first.loss
    order = topological([loss])
    users = [n for n in order if W in n.args]
    if W is None or len(users) != 1 or users[0].op != "matmul":
        return None
    z = users[0]
    X = z.args[0]
    if z.args[1] is not W or X.op != "input" or X.ndim != 2 or W.ndim != 2:
        return None
    g = reverse_mode(loss, [W]).adjoints.get(z)
    if g is None:
        return None
    u = placeholder("_u_z", z.shape)
    hz = reverse_mode((g * u).sum(), [z]).adjoints.get(z)
    if hz is None or hz.op != "ew" or u not in hz.args:
        return None
    e, i = hz.attr("expr"), hz.args.index(u)
    c = sympy.diff(e, ARG[i])
    if ARG[i] in c.free_symbols or sympy.expand(e - ARG[i] * c) != 0:
        return None
    return ClosedForm(param, X, z, elementwise(c, hz.args))
