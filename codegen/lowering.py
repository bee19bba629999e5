"""The lowering table: how each primitive becomes Python lines in a generated module.

One entry per primitive, like the rule table in `symbolic.rules`: a function from an
instruction to its lines, and the source of any helper function it calls. Views (transpose,
reshape, broadcast) need no entry: they are written inline where they are used.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from codegen.program import Instr, atom


@dataclass(frozen=True)
class Lowering:
    emit: Callable[[Instr], list[str]]
    helper: str = ""  # source of a module-level helper the lines call, if any
    needs_shape: bool = False  # the lines allocate the output themselves (Instr.shape is set)


def _ew(ins: Instr) -> list[str]:
    if ins.inline is not None:
        return [f"{ins.out} = {ins.inline}"]
    out = ins.buffer or f"np.empty({ins.shape}, dtype=dt)"
    call = f"{ins.kernel.name}({', '.join(ins.args)}, out={out})"
    return [call if ins.discard else f"{ins.out} = {call}"]


def _matmul(ins: Instr) -> list[str]:
    a, b = ins.args
    if ins.buffer:
        return [f"{ins.out} = np.matmul({a}, {b}, out={ins.buffer})"]
    return [f"{ins.out} = {atom(a)} @ {atom(b)}"]


def _sum(ins: Instr) -> list[str]:
    (a,) = ins.args
    axes, keepdims = ins.node.attr("axes"), ins.node.attr("keepdims")
    if len(axes) == ins.node.args[0].ndim and not keepdims:
        return [f"{ins.out} = {atom(a)}.sum()"]
    axis = str(axes[0]) if len(axes) == 1 else str(axes)
    keep = ", keepdims=True" if keepdims else ""
    return [f"{ins.out} = {atom(a)}.sum(axis={axis}{keep})"]


_SOFTMAX = '''
def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """exp(z) / sum(exp(z)) along `axis`, shifted by the max so that exp cannot overflow."""
    e = z - z.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e
'''

_LOG_SOFTMAX = '''
def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """z - log(sum(exp(z))) along `axis`: log-sum-exp, shifted by the max."""
    s = z - z.max(axis=axis, keepdims=True)
    s -= np.log(np.exp(s).sum(axis=axis, keepdims=True))
    return s
'''

_DROPOUT_MASK = '''
def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """The random generator for dropout masks; None means seed 0 (repeatable calls)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)


def _dropout_mask(
    rng: np.random.Generator, shape: tuple[int, ...], rate: float, dt: np.dtype,
) -> np.ndarray:
    """Inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), not {rate}")
    mask = (rng.random(shape) >= rate).astype(dt)
    mask *= dt.type(1.0 / (1.0 - rate))
    return mask
'''

LOWERINGS: dict[str, Lowering] = {
    "ew": Lowering(_ew),
    "matmul": Lowering(_matmul),
    "sum": Lowering(_sum),
    "softmax": Lowering(lambda i: [f"{i.out} = _softmax({i.args[0]}, axis={i.node.attr('axis')})"],
                        _SOFTMAX),
    "log_softmax": Lowering(lambda i: [f"{i.out} = _log_softmax({i.args[0]}, axis={i.node.attr('axis')})"],
                            _LOG_SOFTMAX),
    "dropout_mask": Lowering(lambda i: [f"{i.out} = _dropout_mask(rng, {i.shape}, {i.args[0]}, dt)"],
                             _DROPOUT_MASK, needs_shape=True),
}
