"""Independent oracles for the generated code.

`Interpreter` evaluates a model's equation graph directly, primitive by primitive, on one of
three array libraries: numpy floats (forward reference), numpy object arrays of sympy
expressions (exact symbolic derivatives at tiny dims), or torch tensors (autograd). It shares
nothing with the code generator: elementwise expressions are walked node by node here, and a
defined function (sigmoid, softplus, ...) is evaluated through its mathematical definition,
not through the stable forms the generator emits.
"""
from __future__ import annotations

import numpy as np
import sympy
from symgrad.symbolic.functions import ElementwiseFunction
from symgrad.symbolic.graph import ARG, Node, topological


def _definition(expr: sympy.Expr) -> sympy.Expr:
    """Defined functions replaced by their definitions, recursively."""
    while True:
        calls = [e for e in sympy.preorder_traversal(expr) if isinstance(e, ElementwiseFunction)]
        if not calls:
            return expr
        expr = expr.replace(lambda e: isinstance(e, ElementwiseFunction), lambda e: e.expanded())


class Lib:
    """The few array operations the interpreter needs, per library."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "torch":
            import torch

            self.torch = torch

    # elementwise functions by sympy class
    def fn(self, cls, x):
        if self.kind == "sympy":
            return np.vectorize(lambda v: cls(v), otypes=[object])(x)
        if self.kind == "torch":
            t = self.torch
            table = {sympy.exp: t.exp, sympy.log: t.log, sympy.tanh: t.tanh, sympy.Abs: t.abs,
                     sympy.sign: t.sign, sympy.sqrt: t.sqrt}
            return table[cls](x)
        table = {sympy.exp: np.exp, sympy.log: np.log, sympy.tanh: np.tanh, sympy.Abs: np.abs,
                 sympy.sign: np.sign}
        return table[cls](x)

    def maximum(self, a, b):
        if self.kind == "sympy":
            return np.vectorize(lambda u, v: sympy.Max(u, v), otypes=[object])(a, b)
        if self.kind == "torch":
            return self.torch.maximum(self.as_t(a), self.as_t(b))
        return np.maximum(a, b)

    def where(self, cond, a, b):
        if self.kind == "torch":
            return self.torch.where(cond, self.as_t(a), self.as_t(b))
        if self.kind == "sympy":
            branch = np.vectorize(lambda c, u, v: sympy.Piecewise((u, c), (v, True)), otypes=[object])
            return branch(cond, a, b)
        return np.where(cond, a, b)

    def as_t(self, v):
        t = self.torch
        return v if isinstance(v, t.Tensor) else t.tensor(float(v), dtype=t.float64)

    def matmul(self, a, b):
        if self.kind == "sympy":
            return np.matmul(a, b)  # object arrays: numpy's own loops, stacks broadcast
        return a @ b  # numpy's or torch's matmul (torch.matmul broadcasts stacks like torch.bmm)

    # linear algebra, each library's own routine; sympy's per matrix of a stack
    def per_matrix(self, fn, *xs):
        """fn applied to each matrix (as sympy.Matrix) of object-array stacks; results stacked."""
        lead = np.broadcast_shapes(*(x.shape[:-2] for x in xs))
        xs = [np.broadcast_to(x, lead + x.shape[-2:]) for x in xs]
        results = [np.array(fn(*(sympy.Matrix(x[i]) for x in xs)), dtype=object) for i in np.ndindex(lead)]
        return np.array(results, dtype=object).reshape(lead + results[0].shape)

    def linalg(self, op: str, args: list, node: Node):
        x = args[0]
        if self.kind == "torch":
            t = self.torch
            sym = (x + x.transpose(-1, -2)) / 2 if op == "cholesky" else None
            table = {
                "trace": lambda: t.trace(x) if x.ndim == 2 else x.diagonal(dim1=-2, dim2=-1).sum(-1),
                "diag": lambda: t.diag_embed(x), "diagonal": lambda: t.diagonal(x, dim1=-2, dim2=-1),
                "outer": lambda: t.outer(x, args[1]) if x.ndim == args[1].ndim == 1
                else x.unsqueeze(-1) * args[1].unsqueeze(-2),
                "tril": lambda: t.tril(x, node.attr("k")), "det": lambda: t.linalg.det(x),
                "logdet": lambda: t.linalg.slogdet(x).logabsdet, "inv": lambda: t.linalg.inv(x),
                "solve": lambda: t.linalg.solve(x, args[1]), "cholesky": lambda: t.linalg.cholesky(sym),
            }
            return table[op]()
        if self.kind == "sympy":
            if op == "det":
                return self.per_matrix(lambda m: m.det(), x)
            if op == "logdet":
                return self.per_matrix(lambda m: sympy.log(sympy.Abs(m.det())), x)
            if op == "inv":
                return self.per_matrix(lambda m: m.inv(), x)
            if op == "solve":
                b = args[1][:, None] if args[1].ndim == 1 else args[1]
                out = self.per_matrix(lambda a, v: a.LUsolve(v), x, b)
                return out[..., 0] if args[1].ndim == 1 else out
            if op == "cholesky":
                return self.per_matrix(lambda m: ((m + m.T) / 2).cholesky(hermitian=False), x)
        sym = (x + np.swapaxes(x, -1, -2)) / 2 if op == "cholesky" else None
        table = {
            "trace": lambda: np.trace(x, axis1=-2, axis2=-1),
            "diag": lambda: x[..., :, None] * np.eye(x.shape[-1]),
            "diagonal": lambda: np.diagonal(x, axis1=-2, axis2=-1),
            "outer": lambda: np.multiply.outer(x, args[1]) if x.ndim == args[1].ndim == 1
            else x[..., :, None] * args[1][..., None, :],
            "tril": lambda: np.tril(x, node.attr("k")), "det": lambda: np.linalg.det(x),
            "logdet": lambda: np.linalg.slogdet(x)[1], "inv": lambda: np.linalg.inv(x),
            "solve": lambda: np.linalg.solve(x, args[1]), "cholesky": lambda: np.linalg.cholesky(sym),
        }
        return table[op]()

    def sum(self, x, axes, keepdims):
        if self.kind == "torch":
            return x.sum(dim=axes, keepdim=keepdims) if axes else x
        return np.sum(x, axis=axes, keepdims=keepdims)

    def transpose(self, x, perm):
        return x.permute(*perm) if self.kind == "torch" else np.transpose(x, perm)

    def reshape(self, x, shape):
        return x.reshape(tuple(shape))

    def broadcast_to(self, x, shape):
        if self.kind == "torch":
            return x.expand(*shape)
        return np.broadcast_to(x, shape)

    def exp(self, x):
        return self.fn(sympy.exp, x)

    def log(self, x):
        return self.fn(sympy.log, x)


LINALG = ("trace", "diag", "diagonal", "outer", "tril", "det", "logdet", "inv", "solve", "cholesky")


class Interpreter:
    """Evaluates equation nodes directly; `training` picks each mode node's branch. A dropout
    mask evaluates to ones: oracles compare models with dropout at rate 0 (the masks
    themselves are tested on their own)."""

    def __init__(self, kind: str = "numpy", training: bool = True):
        self.lib = Lib(kind)
        self.kind = kind
        self.training = training

    def scalar(self, value):
        if self.kind == "sympy":
            return value
        if self.kind == "torch":
            return self.lib.torch.tensor(float(value), dtype=self.lib.torch.float64)
        return float(value)

    def evaluate(self, roots: list[Node], leaves: dict[str, object], dims: dict[str, int],
                 known: dict | None = None) -> list:
        values: dict[Node, object] = dict(known or {})
        dim_subs = {sympy.Symbol(k, integer=True, positive=True): v for k, v in dims.items()}
        for node in topological(roots, stop=set(values)):
            if node not in values:
                values[node] = self.node(node, values, leaves, dim_subs)
        return [values[r] for r in roots]

    def scan(self, node: Node, args: list, leaves: dict, dims: dict) -> list:
        """The recurrence step by step, the cell evaluated by this interpreter (autograd, for
        torch, then differentiates through the whole loop: an independent BPTT)."""
        cell = node.attr("cell")
        ns, nh = len(cell.seq_ph), len(cell.state_ph)
        seqs, states, captured = args[:ns], list(args[ns:ns + nh]), args[ns + nh:]
        known = dict(zip(cell.captured, captured, strict=True))
        history = [[] for _ in range(nh)]
        for t in range(seqs[0].shape[1]):
            step = {p: s[:, t] for p, s in zip(cell.seq_ph, seqs, strict=True)}
            step |= dict(zip(cell.state_ph, states, strict=True))
            states = self.evaluate(list(cell.outs), leaves, dims, known | step)
            for k, s in enumerate(states):
                history[k].append(s)
        stack = self.lib.torch.stack if self.kind == "torch" else np.stack
        return [stack(h, 1) for h in history]

    def node(self, node: Node, values, leaves, dim_subs):
        lib = self.lib
        args = [values[a] for a in node.args]
        shape = tuple(int(sympy.sympify(d).xreplace(dim_subs)) for d in node.shape)
        op = node.op
        if op == "scan":
            return self.scan(node, args, leaves, {str(k): v for k, v in dim_subs.items()})
        if op == "item":
            return args[0][node.attr("index")]
        if op == "slice":
            index = [slice(None)] * node.args[0].ndim
            start, stop = (int(sympy.sympify(node.attr(k)).xreplace(dim_subs)) for k in ("start", "stop"))
            index[node.attr("axis")] = slice(start, stop)
            return args[0][tuple(index)]
        if op == "concat":
            cat = self.lib.torch.cat if self.kind == "torch" else np.concatenate
            return cat(args, node.attr("axis"))
        if op == "mode":
            return args[0] if self.training else args[1]
        if op == "dropout_mask":
            ones = np.ones(shape)
            return self.lib.torch.tensor(ones) if self.kind == "torch" else ones
        if op == "const":
            return self.scalar(node.attr("value").xreplace(dim_subs))
        if node.is_leaf:
            return leaves[node.name]
        if op == "ew":
            expr = _definition(node.attr("expr")).xreplace(dim_subs)
            return self.expr(expr, dict(zip(ARG, args, strict=False)))
        if op == "matmul":
            return lib.matmul(*args)
        if op == "eye":
            n = shape[0]
            return self.lib.torch.eye(n, dtype=self.lib.torch.float64) if self.kind == "torch" else np.eye(n)
        if op in LINALG:
            return lib.linalg(op, args, node)
        if op == "einsum":  # each library's own einsum (numpy's takes sympy object arrays too)
            einsum = self.lib.torch.einsum if self.kind == "torch" else np.einsum
            return einsum(node.attr("spec"), *args)
        if op == "sum":
            return lib.sum(args[0], node.attr("axes"), node.attr("keepdims"))
        if op == "transpose":
            return lib.transpose(args[0], node.attr("perm"))
        if op == "reshape":
            return lib.reshape(args[0], shape)
        if op == "broadcast_to":
            return lib.broadcast_to(args[0], shape)
        if op == "max":
            x, axes, keep = args[0], node.attr("axes"), node.attr("keepdims")
            if self.kind == "torch":
                return x.amax(dim=axes, keepdim=keep)
            return np.max(x, axis=axes, keepdims=keep)
        if op == "im2col":
            return self.im2col(args[0], node)
        if op == "col2im":
            return self.col2im(args[0], node, shape)
        if op == "gather":  # x[..., label, ...] along the axis, entry by entry
            return self.gather(args[0], args[1], node.attr("axis"))
        if op == "scatter":
            return self.scatter(args[0], args[1], node.attr("axis"), shape)
        if op in ("softmax", "log_softmax"):
            axis = node.attr("axis")
            x = args[0]
            e = lib.exp(x)
            s = lib.sum(e, (axis,), True)
            return e / s if op == "softmax" else x - lib.log(s)
        raise NotImplementedError(op)

    # integer labels, written the plain way: one row at a time
    def gather(self, x, labels, axis):
        labels = np.asarray(labels.tolist() if self.kind == "torch" else labels)
        picked = []
        for index in np.ndindex(labels.shape):
            full = index[:axis] + (int(labels[index]),) + index[axis:]
            picked.append(x[full])
        if self.kind == "torch":
            return self.lib.torch.stack(picked).reshape(labels.shape)
        return np.array(picked, dtype=x.dtype).reshape(labels.shape)

    def scatter(self, values, labels, axis, shape):
        """The adjoint of gather (only backward graphs use it; the numpy form suffices)."""
        labels = np.asarray(labels)
        out = np.zeros(shape, dtype=np.asarray(values).dtype)
        values = np.broadcast_to(values, labels.shape)
        for index in np.ndindex(labels.shape):
            out[index[:axis] + (int(labels[index]),) + index[axis:]] = values[index]
        return out

    # images, written the plain way: one patch at a time (nothing shared with the generator)
    def im2col(self, x, node):
        kh, kw, s, p = (node.attr(k) for k in ("kh", "kw", "stride", "padding"))
        if self.kind == "torch":
            x = self.lib.torch.nn.functional.pad(x, (0, 0, p, p, p, p))
            patches = x.unfold(1, kh, s).unfold(2, kw, s)  # (B, OH, OW, C, kh, kw)
            b, oh, ow, c = patches.shape[:4]
            return patches.permute(0, 1, 2, 4, 5, 3).reshape(b, oh, ow, kh * kw * c)
        x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        b, h, w, c = x.shape
        oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
        out = np.zeros((b, oh, ow, kh * kw * c), dtype=x.dtype)
        for i in range(oh):
            for j in range(ow):
                out[:, i, j] = x[:, i * s:i * s + kh, j * s:j * s + kw, :].reshape(b, -1)
        return out

    def col2im(self, cols, node, shape):
        """The adjoint of im2col (only backward graphs use it; the numpy form suffices)."""
        kh, kw, s, p = (node.attr(k) for k in ("kh", "kw", "stride", "padding"))
        b, h, w, c = shape
        oh, ow = cols.shape[1:3]
        out = np.zeros((b, h + 2 * p, w + 2 * p, c), dtype=cols.dtype)
        for i in range(oh):
            for j in range(ow):
                out[:, i * s:i * s + kh, j * s:j * s + kw, :] += cols[:, i, j].reshape(b, kh, kw, c)
        return out[:, p:p + h, p:p + w, :]

    def expr(self, e: sympy.Expr, env: dict):
        """Evaluate a sympy expression over arrays, node by node."""
        lib = self.lib
        if e in env:
            return env[e]
        if e.is_number:  # a constant: 2, 1/2, log(2 pi)
            return self.scalar(e)
        if isinstance(e, sympy.Add):
            out = self.expr(e.args[0], env)
            for a in e.args[1:]:
                out = out + self.expr(a, env)
            return out
        if isinstance(e, sympy.Mul):
            out = self.expr(e.args[0], env)
            for a in e.args[1:]:
                out = out * self.expr(a, env)
            return out
        if isinstance(e, sympy.Pow):
            base, exp = self.expr(e.base, env), e.exp
            if exp.is_Integer and exp > 0:
                out = base
                for _ in range(int(exp) - 1):
                    out = out * base
                return out
            if exp == -1:
                return self.scalar(1) / base
            if exp == sympy.S.Half and self.kind != "sympy":
                return base ** 0.5
            return base ** (self.expr(exp, env) if not exp.is_Number else self.scalar(exp))
        if isinstance(e, sympy.Max):
            a, b = (self.expr(x, env) for x in e.args)
            if self.kind != "sympy" and not hasattr(a, "shape") and not hasattr(b, "shape"):
                return max(a, b)
            return lib.maximum(a, b)
        if isinstance(e, sympy.Piecewise):
            (value, cond), (other, _) = e.args
            lhs, rhs = self.expr(cond.lhs, env), self.expr(cond.rhs, env)
            if self.kind == "sympy":
                c = np.vectorize(lambda u, v: sympy.StrictGreaterThan(u, v), otypes=[object])(lhs, rhs)
            else:
                c = lhs > rhs
            return lib.where(c, self.expr(value, env), self.expr(other, env))
        if isinstance(e, sympy.Function) and len(e.args) == 1:
            return lib.fn(type(e), self.expr(e.args[0], env))
        raise NotImplementedError(f"oracle cannot evaluate {e!r}")


def run_kwargs(module, dims: dict[str, int], dtype=np.float64, **hypers) -> dict:
    """hypers (defaults, dropout off unless given) and a fresh state, for modules that use them."""
    h = {**module.HYPERS, **({"dropout": 0.0} if "dropout" in module.HYPERS else {}), **hypers}
    return {"hypers": h, "state": module.init_state(dims, dtype)}


def leaves_for(module, params: dict, batch: dict, kwargs: dict, lib=None) -> dict:
    """Everything an equation can read: parameters, batch, hypers, state."""
    wrap = lib or (lambda v: v)
    out = {**params, **batch}
    out.update({k: wrap(np.float64(v)) for k, v in kwargs["hypers"].items()})
    out.update({k: wrap(np.array(v, dtype=np.float64)) for k, v in kwargs["state"].items()})
    return out


def random_batch(module, dims: dict[str, int], rng: np.random.Generator, dtype=np.float64) -> dict:
    """Inputs as random normals; classification targets as random probability rows."""
    batch = {}
    for name, shape in module.INPUTS.items():
        concrete = tuple(d if isinstance(d, int) else dims[d] for d in shape)
        if name in getattr(module, "LABELS", ()):  # integer labels; the prediction's last axis counts classes
            classes = module.OUTPUTS[module.PREDICTION][-1]
            batch[name] = rng.integers(0, classes if isinstance(classes, int) else dims[classes], concrete)
        elif name in module.TARGETS and module.TASK == "multiclass":
            a = rng.uniform(0.05, 1.0, concrete)
            batch[name] = (a / a.sum(axis=-1, keepdims=True)).astype(dtype)
        elif name in module.TARGETS and module.TASK == "binary":
            batch[name] = rng.uniform(0, 1, concrete).astype(dtype)
        else:
            batch[name] = rng.standard_normal(concrete).astype(dtype)
    return batch


def jiggle(params: dict, rng: np.random.Generator, scale: float = 0.3) -> dict:
    """Move parameters off their initial values (zero biases hide bugs in bias gradients)."""
    return {k: v + scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}


# A loss computed in float64 is off by about eps |loss| (a sum's rounding is relative to its
# size); measured on test_module_robustness's loud_loss model, a five-point difference's error
# was 0.08 to 0.93 times 1.5 eps |loss| / step. The bound allows 10 times that.
ROUNDING = 10


def finite_differences(loss, params: dict, h: float = 1e-5, limit: int = 200, seed: int = 0,
                       noise: dict | None = None) -> dict:
    """Central differences of a scalar loss(params) in float64, one coordinate at a time.

    The five-point stencil (error O(h^4)) lets h be large enough that rounding noise in the
    loss stays near 1e-11. A relu or max kink within 2h of the point makes it disagree with the
    three-point difference at h; such a coordinate is measured again at h/100, and comes back
    NaN (unchecked) only when the kink is closer still. A tensor with more than `limit` entries
    is checked at `limit` random ones; the rest come back NaN.

    With `noise` (a dict), each difference's rounding bound is stored there, keyed and shaped
    like the result: the stencil's weights (1 + 8 + 8 + 1)/12 times the loss's own rounding,
    ROUNDING * eps * |loss|, over the step it used. A tiny gradient of a loss near 1 is known
    to about 1e-10 only, however right the derivation is.
    """
    rng = np.random.default_rng(seed)
    grads = {}
    for name, p in params.items():
        g = np.full_like(p, np.nan)
        bound = np.zeros(p.shape)
        coords = list(np.ndindex(p.shape))
        if len(coords) > limit:
            coords = [coords[k] for k in rng.choice(len(coords), limit, replace=False)]
        for i in coords:
            g[i], bound[i] = _smooth_difference(loss, params, p, i, h)
        grads[name] = g
        if noise is not None:
            noise[name] = bound
    return grads


def _smooth_difference(loss, params: dict, p: np.ndarray, i: tuple, h: float) -> tuple[float, float]:
    """The five-point difference at step h (or h/100) where the loss is smooth around p[i], and
    its rounding bound (see finite_differences)."""
    old = p[i]
    for step in (h * max(1.0, abs(old)), h / 100 * max(1.0, abs(old))):
        values = []
        for k in (2, 1, -1, -2):
            p[i] = old + k * step
            values.append(loss(params))
        p[i] = old
        five = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
        three = (values[1] - values[2]) / (2 * step)
        rounding = 18 / 12 * ROUNDING * np.finfo(np.float64).eps * max(map(abs, values)) / step
        if abs(five - three) <= 1e-6 * max(1.0, abs(five)):
            return five, rounding
    return np.nan, np.nan


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-8)
    return float(np.abs(a - b).max(initial=0) / scale)


def sympy_gradients(model, params: dict, batch: dict, kw: dict, dims: dict[str, int]) -> dict:
    """d loss / d parameter, by sympy, on object arrays of symbols at tiny dims."""
    symbols, values = {}, {}
    leaves = {}
    for name, p in params.items():
        arr = np.empty(p.shape, dtype=object)
        for i in np.ndindex(p.shape):
            s = sympy.Symbol(f"{name}_{'_'.join(map(str, i))}", real=True)
            arr[i] = s
            symbols[(name, i)] = s
            values[s] = float(p[i])
        leaves[name] = arr
    to_sympy = np.vectorize(lambda v: sympy.Float(float(v)), otypes=[object])
    for name, a in batch.items():
        leaves[name] = a if a.dtype.kind in "iu" else to_sympy(a)  # integer labels index
    leaves.update({k: sympy.Float(v) for k, v in kw["hypers"].items()})
    leaves.update({k: to_sympy(v) for k, v in kw["state"].items()})
    (loss,) = Interpreter("sympy").evaluate([model.losses["L"]], leaves, dims)
    out = {}
    for name, p in params.items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            d = sympy.diff(loss, symbols[(name, i)])
            g[i] = float(d.xreplace(values))
        out[name] = g
    return out
