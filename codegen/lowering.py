"""The lowering table: how each primitive becomes Python lines in a generated module.

One entry per primitive, like the rule table in `symbolic.rules`: a function from an
instruction to its lines, and the source of any helper function it calls. Views (transpose,
reshape, broadcast) need no entry: they are written inline where they are used.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from symgrad.codegen.program import BATCH_MAJOR, Instr, atom


@dataclass(frozen=True)
class Lowering:
    emit: Callable[[Instr], list[str]]
    helpers: tuple[str, ...] = ()  # module-level helpers (keys of HELPERS) the lines call
    needs_shape: bool = False  # the lines allocate the output themselves (Instr.shape is set)


def _scratch_out(ins: Instr) -> str:
    """The output's array in the call's workspace (see Lowering._plan_workspace)."""
    return f'_scratch(ws, "{ins.out}", {ins.shape}, dt)'


def _ws(ins: Instr) -> str:
    """Trailing arguments that hand a helper the workspace slot of its output."""
    return f', ws, "{ins.out}"' if ins.scratch else ""


def _ew(ins: Instr) -> list[str]:
    if ins.inline is not None:
        return [f"{ins.out} = {ins.inline}"]
    out = ins.buffer or (_scratch_out(ins) if ins.scratch else f"np.empty({ins.shape}, dtype=dt)")
    if ins.rows and not ins.discard:
        return [f"{ins.out} = _by_rows({ins.kernel.name}, {ins.rows}, {out}, {', '.join(ins.args)})"]
    call = f"{ins.kernel.name}({', '.join(ins.args)}, out={out})"
    return [call if ins.discard else f"{ins.out} = {call}"]


def _matmul(ins: Instr) -> list[str]:
    a, b = ins.args
    x, y = ins.node.args
    if x.ndim > 2 and y.ndim == 2 and not ins.buffer:
        # a stack of rows times a matrix: one GEMM over all rows (matmul would loop over the stack)
        rows = f"{atom(a)}.reshape(-1, {atom(a)}.shape[-1])"
        if ins.scratch:
            return [f"{ins.out} = {_scratch_out(ins)}",
                    f"{rows}.dot({b}, out={ins.out}.reshape(-1, {ins.out}.shape[-1]))"]
        return [f"{ins.out} = {rows}.dot({b}).reshape(*{atom(a)}.shape[:-1], {atom(b)}.shape[-1])"]
    if ins.buffer or ins.scratch:
        call = f"np.matmul({a}, {b}, out={ins.buffer or _scratch_out(ins)})"
        return [call if ins.discard else f"{ins.out} = {call}"]
    if x.ndim == 2 and y.ndim == 2:
        # the ndarray method: np.dot first calls a Python dispatcher (__array_function__) and
        # @ goes through the ufunc machinery; a.dot(b) is 0.15-0.2 us less per product
        return [f"{ins.out} = {atom(a)}.dot({b})"]
    return [f"{ins.out} = {atom(a)} @ {atom(b)}"]


def _unrolled(ins: Instr, ufunc: str) -> list[str] | None:
    """A reduction over short axes that are not the last (a pooling window) as binary ufunc
    calls on views of its slices: numpy's reduce along middle axes strides through memory and
    is several times slower. None when the reduction is not of that kind."""
    x = ins.node.args[0]
    axes, keepdims = ins.node.attr("axes"), ins.node.attr("keepdims")
    lengths = [x.shape[a] for a in axes]
    fixed = all(getattr(n, "is_Integer", isinstance(n, int)) for n in lengths)
    if keepdims or x.ndim - 1 in axes or not fixed:
        return None
    picks = list(itertools.product(*(range(int(n)) for n in lengths)))
    if not 2 <= len(picks) <= 16:
        return None
    parts = "_parts"  # read at once, so one name serves every reduction ('_': never a model's name)

    def at(pick: tuple[int, ...]) -> str:
        index = [":"] * (max(axes) + 1)
        for a, k in zip(axes, pick, strict=True):
            index[a] = str(k)
        return f"{parts}[{', '.join(index)}]"

    out = f", out={_scratch_out(ins)}" if ins.scratch else ""
    return ([f"{parts} = {ins.args[0]}", f"{ins.out} = {ufunc}({at(picks[0])}, {at(picks[1])}{out})"]
            + [f"{ufunc}({ins.out}, {at(pick)}, out={ins.out})" for pick in picks[2:]])


def _sum(ins: Instr) -> list[str]:
    (a,) = ins.args
    x = ins.node.args[0]
    axes, keepdims = ins.node.attr("axes"), ins.node.attr("keepdims")
    if len(axes) == x.ndim and not keepdims:
        return [f"{ins.out} = {atom(a)}.sum()"]
    if ins.ones:  # a bias gradient of a matrix: one product with ones the function binds once
        bind = [f"{ins.ones} = _ones({ins.ones_rows}, {atom(a)}.dtype)"] if ins.ones_bind else []
        return [*bind, f"{ins.out} = {ins.ones}.dot({a})"]
    if axes == tuple(range(x.ndim - 1)) and not keepdims:  # a bias gradient: all rows summed
        # the same rows as a loop's own step-major array: sum that, not a copy of the view
        return [f"{ins.out} = _colsum({a.removesuffix(BATCH_MAJOR)})"]
    unrolled = _unrolled(ins, "np.add")
    if unrolled:
        return unrolled
    if axes == (x.ndim - 1,) and not ins.scratch:  # along the last axis: a row of class scores
        return [f"{ins.out} = _rowsum({a}{', keepdims=True' if keepdims else ''})"]
    axis = str(axes[0]) if len(axes) == 1 else str(axes)
    keep = ", keepdims=True" if keepdims else ""
    into = f", out={_scratch_out(ins)}" if ins.scratch else ""
    return [f"{ins.out} = {atom(a)}.sum(axis={axis}{keep}{into})"]


_SOFTMAX = '''def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """exp(z) / sum(exp(z)) along `axis`, shifted by the max so that exp cannot overflow."""
    last = axis in (-1, z.ndim - 1)
    e = z - (_rowmax(z) if last else z.max(axis=axis, keepdims=True))
    np.exp(e, out=e)
    e /= _rowsum(e, keepdims=True) if last else e.sum(axis=axis, keepdims=True)
    return e
'''

_LOG_SOFTMAX = '''def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """z - log(sum(exp(z))) along `axis`: log-sum-exp, shifted by the max."""
    last = axis in (-1, z.ndim - 1)
    s = z - (_rowmax(z) if last else z.max(axis=axis, keepdims=True))
    e = np.exp(s)
    s -= np.log(_rowsum(e, keepdims=True) if last else e.sum(axis=axis, keepdims=True))
    return s
'''

_SOFTMAX_XENT = '''def _softmax_xent(
    z: np.ndarray, y: np.ndarray, scale: float, out: np.ndarray | None = None,
) -> tuple[np.floating, np.ndarray]:
    """sum(y * log_softmax(z)) over all entries, and scale * (sum(y, axis=1) * softmax(z) - y):
    the adjoint that the loss -scale * that sum sends to the (B, k) logits z; in `out` if given.
    log_softmax(z) = s - log(r), with s = z - max(z) and r = sum(exp(s)) along rows, is never
    stored: the sum is y . s - sum(y) . log(r), and softmax(z) = exp(s) / r reuses the exp. A
    column is spread over a matrix by assignment, then combined with it: numpy's ufuncs take
    their slow path for a broadcast operand (0.95 us for 32 rows of 10, against 0.5 for both).
    At batch 32 this costs 2 us less than log_softmax, the sum and the adjoint's kernel (of 8)."""
    ones = _ones(z.shape[1], z.dtype)
    s = np.empty_like(z)
    s[...] = _rowmax(z)
    np.subtract(z, s, s)  # ufuncs' `out` by position: a keyword costs 0.05 us a call
    total = np.vdot(y, s)
    np.exp(s, s)
    r = s.dot(ones)
    ysum = y.dot(ones)
    total -= ysum.dot(np.log(r))
    np.divide(ysum, r, ysum)
    if out is None:
        out = np.empty_like(z)
    out[...] = ysum[:, None]
    np.multiply(out, s, out)
    out -= y
    out *= scale
    return total, out
'''

_GENERATOR = '''def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """The random generator for dropout masks; None means seed 0 (repeatable calls)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
'''

_DROPOUT_MASK = '''def _dropout_mask(
    rng: np.random.Generator, shape: tuple[int, ...], rate: float, dt: np.dtype,
) -> np.ndarray:
    """Inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), not {rate}")
    mask = (rng.random(shape) >= rate).astype(dt)
    mask *= dt.type(1.0 / (1.0 - rate))
    return mask
'''

_IM2COL = '''def _im2col(
    x: np.ndarray, kh: int, kw: int, stride: int, padding: int,
    ws: dict[str, np.ndarray] | None = None, slot: str = "",
) -> np.ndarray:
    """Patches of a (B, H, W, C) image as rows: (B, OH, OW, kh*kw*C), ordered (kh, kw, C);
    in the workspace `ws` (padded copy and result) when one is given. With fewer than 4
    channels the rows are a view of the matrix stored by columns, (kh*kw*C, B, OH, OW): each
    column is then one copy of a shifted image in runs of OW entries (2.3-3x faster than runs
    of C), and BLAS reads the transposed layout at the same speed."""
    b, h, w, c = x.shape
    if padding:
        p = padding
        shape = (b, h + 2 * p, w + 2 * p, c)
        padded = np.zeros(shape, dtype=x.dtype) if ws is None else _scratch(ws, slot + "_pad", shape, x.dtype)
        if ws is not None:  # a reused buffer: zero the border, the inside is overwritten
            padded[:, :p] = padded[:, p + h:] = padded[:, :, :p] = padded[:, :, p + w:] = 0
        padded[:, p:p + h, p:p + w] = x
        x = padded
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (B, OH, OW, C, kh, kw), a view
    oh, ow = windows.shape[1:3]
    if c < 4:
        shape = (kh, kw, c, b, oh, ow)
        cols = np.empty(shape, dtype=x.dtype) if ws is None else _scratch(ws, slot, shape, x.dtype)
        for i in range(kh):
            for j in range(kw):
                shifted = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
                np.copyto(cols[i, j], shifted.transpose(3, 0, 1, 2))
        return cols.reshape(kh * kw * c, b, oh, ow).transpose(1, 2, 3, 0)
    shape = (b, oh, ow, kh * kw * c)
    out = np.empty(shape, dtype=x.dtype) if ws is None else _scratch(ws, slot, shape, x.dtype)
    np.copyto(out.reshape(b, oh, ow, kh, kw, c), windows.transpose(0, 1, 2, 4, 5, 3))
    return out
'''

_COL2IM = '''def _col2im(
    cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int, padding: int,
    ws: dict[str, np.ndarray] | None = None, slot: str = "",
) -> np.ndarray:
    """The transpose of _im2col: each patch entry is added back where it came from (in the
    workspace `ws` when one is given)."""
    b, h, w, c = shape
    oh, ow = cols.shape[1:3]
    patches = cols.reshape(b, oh, ow, kh, kw, c)
    if padding == 0 and stride == kh == kw and (oh * kh, ow * kw) == (h, w):
        # the windows tile the image (pooling): each entry has one place, so one transposed copy
        out = np.empty(shape, dtype=cols.dtype) if ws is None else _scratch(ws, slot, shape, cols.dtype)
        out.reshape(b, oh, kh, ow, kw, c)[...] = patches.transpose(0, 1, 3, 2, 4, 5)
        return out
    full = (b, h + 2 * padding, w + 2 * padding, c)
    if ws is None:
        out = np.zeros(full, dtype=cols.dtype)
    else:
        out = _scratch(ws, slot, full, cols.dtype)
        out.fill(0)
    for i in range(kh):  # one strided slice per kernel offset, not a loop over pixels
        for j in range(kw):
            out[:, i:i + stride * oh:stride, j:j + stride * ow:stride] += patches[:, :, :, i, j]
    return out[:, padding:padding + h, padding:padding + w]
'''

_COL2IM_MATMUL = '''def _col2im_matmul(
    g: np.ndarray, k: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int,
    padding: int, ws: dict[str, np.ndarray] | None = None, slot: str = "",
) -> np.ndarray:
    """_col2im(g @ k) without the patch matrix: one product per kernel offset, each added
    where its patches came from (k's columns are ordered (kh, kw, C), like the patches)."""
    b, h, w, c = shape
    oh, ow = g.shape[1:3]
    rows = g.reshape(-1, g.shape[-1])
    full = (b, h + 2 * padding, w + 2 * padding, c)
    if ws is None:
        out, part = np.zeros(full, dtype=g.dtype), np.empty((rows.shape[0], c), dtype=g.dtype)
    else:
        out = _scratch(ws, slot, full, g.dtype)
        out.fill(0)
        part = _scratch(ws, slot + "_part", (rows.shape[0], c), g.dtype)
    for i in range(kh):
        for j in range(kw):
            first = (i * kw + j) * c
            rows.dot(k[:, first:first + c], out=part)
            out[:, i:i + stride * oh:stride, j:j + stride * ow:stride] += part.reshape(b, oh, ow, c)
    return out[:, padding:padding + h, padding:padding + w]
'''

_WORKSPACE = '''# Large temporaries of a call live in a workspace kept across calls: mapping fresh memory for
# them on every call costs more page faults than their arithmetic. A call takes a workspace
# from its function's pool and gives it back before returning, so concurrent calls (threads)
# each hold their own; an array handed to the caller never lives in one.
_WORKSPACES: dict[str, list[dict[str, np.ndarray]]] = {}


def _take_workspace(function: str) -> dict[str, np.ndarray]:
    try:
        return _WORKSPACES.setdefault(function, []).pop()
    except IndexError:
        return {}


def _give_back(function: str, ws: dict[str, np.ndarray]) -> None:
    _WORKSPACES[function].append(ws)


def _scratch(ws: dict[str, np.ndarray], slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The workspace's array for `slot`, (re)allocated when the shape or dtype changed."""
    a = ws.get(slot)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = ws[slot] = np.empty(shape, dtype=dtype)
    return a
'''

_ONES = '''_ONES: dict[tuple[int, str], np.ndarray] = {}


def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """n ones, cached per length and dtype (read-only): a sum along an axis is one BLAS
    product with them, two to three times faster than numpy's reduction on a step's arrays."""
    ones = _ONES.get((n, dtype.char))
    if ones is None:
        ones = _ONES[n, dtype.char] = np.ones(n, dtype=dtype)
        ones.flags.writeable = False
    return ones
'''

_BY_ROWS = '''def _by_rows(kernel: Callable[..., np.ndarray], width: int, out: np.ndarray,
             *args: np.ndarray | float) -> np.ndarray:
    """kernel(*args, out=out) over an image with a short channel axis and a bias row, run on
    (-1, width) views with the row tiled to `width`: numpy broadcasts a row with one inner loop
    per pixel, this with one per `width` entries (2.3x faster for 16 channels). The same
    arithmetic on the same numbers; arrays that are not contiguous run as they are."""
    full = [a for a in args if isinstance(a, np.ndarray) and a.shape == out.shape]
    if not (out.flags.c_contiguous and all(a.flags.c_contiguous for a in full)):
        return kernel(*args, out=out)
    rows = out.reshape(-1, width)
    wide = [a.reshape(-1, width) if isinstance(a, np.ndarray) and a.shape == out.shape
            else np.tile(a, width // a.shape[0]) if isinstance(a, np.ndarray) and a.ndim == 1 else a
            for a in args]
    kernel(*wide, out=rows)
    return out
'''


_COLSUM = '''def _colsum(x: np.ndarray) -> np.ndarray:
    """Sum over every axis but the last, as one BLAS product with a row of ones."""
    rows = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
    return _ones(rows.shape[0], rows.dtype).dot(rows)
'''

_ROWSUM = '''def _rowsum(x: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """Sum over the last axis, as one BLAS product with a column of ones (numpy's reduction
    along a short last axis, a row of class scores, costs twice as much)."""
    total = x.dot(_ones(x.shape[-1], x.dtype))
    return total[..., None] if keepdims else total
'''

_ROWMAX = '''def _rowmax(x: np.ndarray) -> np.ndarray:
    """The max along the last axis, kept as an axis of length 1. numpy reduces a short last
    axis (a row of class scores) one row at a time; the max over the rows of its transposed
    copy is one pass per column instead: 1.4x faster for 32 rows of 10, 3x for 128 (measured
    on matrices of up to 16 columns and from 16 rows)."""
    if x.ndim == 2 and x.shape[1] <= 16 and x.shape[0] >= 16:
        return np.maximum.reduce(x.T.copy(), axis=0)[:, None]
    return x.max(axis=-1, keepdims=True)
'''

_INV = '''def _inv(x: np.ndarray, where: str) -> np.ndarray:
    """The inverse of each matrix. A singular matrix, or one so ill-conditioned that no digit of
    its inverse is right (1-norm condition number at least 1/eps of its dtype), is an error
    naming `where`; NaN in x comes out as NaN, for the caller to report."""
    try:
        y = np.linalg.inv(x)
    except np.linalg.LinAlgError:
        raise np.linalg.LinAlgError(f"{where}: the matrix is singular") from None
    cond = np.linalg.norm(x, 1, axis=(-2, -1)) * np.linalg.norm(y, 1, axis=(-2, -1))
    if np.any(cond * np.finfo(x.dtype).eps >= 1):
        raise np.linalg.LinAlgError(
            f"{where}: the matrix is singular to {x.dtype} precision (condition number {np.max(cond):.1e})")
    return y
'''

_SOLVE = '''def _solve(a: np.ndarray, b: np.ndarray, where: str) -> np.ndarray:
    """A^{-1} B by an LU solve. A singular A (a zero pivot, or a solution that overflows) is an
    error naming `where`; NaN in A or B comes out as NaN, for the caller to report."""
    try:
        x = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        raise np.linalg.LinAlgError(f"{where}: the matrix is singular") from None
    if not np.isfinite(x).all() and np.isfinite(a).all() and np.isfinite(b).all():
        raise np.linalg.LinAlgError(f"{where}: the matrix is singular to {a.dtype} precision")
    return x
'''

_CHOLESKY = '''def _cholesky(s: np.ndarray, where: str) -> np.ndarray:
    """The lower Cholesky factor of the symmetric part (S + S^T)/2 of each matrix; one that is
    not positive definite is an error naming `where`."""
    try:
        return np.linalg.cholesky((s + s.swapaxes(-1, -2)) / 2)
    except np.linalg.LinAlgError:
        raise np.linalg.LinAlgError(f"{where}: the matrix is not positive definite") from None
'''

_DIAG = '''def _diag(v: np.ndarray) -> np.ndarray:
    """The diagonal matrix of each vector of a stack: (..., n) -> (..., n, n)."""
    n = v.shape[-1]
    out = np.zeros((*v.shape, n), dtype=v.dtype)
    out.reshape(*v.shape[:-1], n * n)[..., :: n + 1] = v
    return out
'''

_ERF = '''_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The error function of each element. numpy has none, so each element goes through the
    standard library's math.erf: accurate to the last digit of a float64, but tens of times
    slower than a ufunc (numexpr has no erf either)."""
    values = _ERF(x)
    if out is None:
        dtype = np.asarray(x).dtype
        return np.asarray(values, dtype=dtype if dtype.kind == "f" else np.float64)
    out[...] = values
    return out
'''

#: helper name -> source; a module includes those its lines call, in this order
_ZEROS = '''_ZEROS: dict[str, np.ndarray] = {}


def _zeros(like: np.ndarray) -> np.ndarray:
    """Zeros shaped like `like`, shared and read-only. np.maximum(x, zeros) runs numpy's SIMD
    loop where np.maximum(x, 0) does not (3x faster in float32), and memory np.zeros has not
    written is the kernel's zero page: reading it costs no RAM."""
    zeros = _ZEROS.get(like.dtype.char)
    if zeros is None or zeros.size < like.size:
        zeros = _ZEROS[like.dtype.char] = np.zeros(like.size, dtype=like.dtype)
        zeros.flags.writeable = False
    return zeros[:like.size].reshape(like.shape)
'''

_LABELS = '''def _labels(values: np.ndarray, name: str) -> np.ndarray:
    """Integer class labels as indices: a fractional or negative label is an error (numpy would
    read -1 as the last class)."""
    labels = np.asarray(values)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not np.all(labels == np.round(labels)):
            raise ValueError(f"{name} holds {labels.dtype} values; it needs integer class labels 0..k-1")
    labels = labels.astype(np.intp, copy=False)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} holds the label {labels.min()}; class labels start at 0")
    return labels
'''

_GATHER = '''def _gather(x: np.ndarray, labels: np.ndarray, axis: int) -> np.ndarray:
    """The entry of x along `axis` that each label names (labels: x's shape without that axis)."""
    if labels.size and labels.max() >= x.shape[axis]:
        raise ValueError(f"class label {labels.max()} is out of range for {x.shape[axis]} classes")
    return np.take_along_axis(x, np.expand_dims(labels, axis), axis).squeeze(axis)
'''

_SCATTER = '''def _scatter(
    values: np.ndarray, labels: np.ndarray, shape: tuple[int, ...], axis: int, dt: np.dtype,
) -> np.ndarray:
    """Zeros of `shape`, each value placed at its label along `axis`: the transpose of _gather."""
    out = np.zeros(shape, dtype=dt)
    values = np.broadcast_to(values, labels.shape)
    np.put_along_axis(out, np.expand_dims(labels, axis), np.expand_dims(values, axis), axis)
    return out
'''

HELPERS = {
    "_workspace": _WORKSPACE, "_ones": _ONES, "_colsum": _COLSUM, "_rowsum": _ROWSUM, "_rowmax": _ROWMAX,
    "_zeros": _ZEROS, "_softmax": _SOFTMAX, "_log_softmax": _LOG_SOFTMAX,
    "_softmax_xent": _SOFTMAX_XENT, "_generator": _GENERATOR,
    "_dropout_mask": _DROPOUT_MASK, "_im2col": _IM2COL, "_col2im": _COL2IM,
    "_col2im_matmul": _COL2IM_MATMUL, "_by_rows": _BY_ROWS,
    "_inv": _INV, "_solve": _SOLVE, "_cholesky": _CHOLESKY, "_diag": _DIAG,
    "_labels": _LABELS, "_gather": _GATHER, "_scatter": _SCATTER, "_erf": _ERF,
}


def _softmax_xent(ins: Instr) -> list[str]:
    z, y, scale = ins.args
    out = f", out={ins.buffer}" if ins.buffer else ""
    return [f"{ins.out}, {ins.also} = _softmax_xent({z}, {y}, {scale}{out})"]


def _window(i: Instr) -> str:
    n = i.node
    return f"{n.attr('kh')}, {n.attr('kw')}, {n.attr('stride')}, {n.attr('padding')}"


def _max(ins: Instr) -> list[str]:
    (a,) = ins.args
    unrolled = _unrolled(ins, "np.maximum")
    if unrolled:
        return unrolled
    axes, keepdims = ins.node.attr("axes"), ins.node.attr("keepdims")
    axis = str(axes[0]) if len(axes) == 1 else str(axes)
    keep = ", keepdims=True" if keepdims else ""
    into = f", out={_scratch_out(ins)}" if ins.scratch else ""
    return [f"{ins.out} = {atom(a)}.max(axis={axis}{keep}{into})"]


def _pad(ins: Instr) -> list[str]:
    n = ins.node
    before, after, stop = ins.pad
    if ins.scratch:  # into the workspace: zero the margins, copy the operand between them
        axis = n.attr("axis")

        def part(span: str) -> str:
            return f"{ins.out}[{', '.join([':'] * axis + [span])}]"

        lines = [f"{ins.out} = {_scratch_out(ins)}"]
        lines += [f"{part(f':{before}')} = 0"] if before != "0" else []
        lines += [f"{part(f'{stop}:')} = 0"] if after != "0" else []
        return lines + [f"{part(f'{before}:{stop}')} = {ins.args[0]}"]
    widths = ["(0, 0)"] * n.ndim
    widths[n.attr("axis")] = f"({before}, {after})"
    return [f"{ins.out} = np.pad({ins.args[0]}, ({', '.join(widths)}{',' if n.ndim == 1 else ''}))"]


def _concat(ins: Instr) -> list[str]:
    call = f"np.concatenate([{', '.join(ins.args)}], axis={ins.node.attr('axis')}"
    if ins.buffer or ins.scratch:  # placed into a loop's sequence (Lowering._place_targets), or the workspace
        call += f", out={ins.buffer or _scratch_out(ins)})"
        return [call if ins.discard else f"{ins.out} = {call}"]
    return [f"{ins.out} = {call})"]


def _outer(ins: Instr) -> list[str]:
    a, b = ins.args
    if ins.node.ndim == 2:
        return [f"{ins.out} = np.outer({a}, {b})"]
    return [f"{ins.out} = {atom(a)}[..., :, None] * {atom(b)}[..., None, :]"]


def _tril(ins: Instr) -> list[str]:
    k = ins.node.attr("k")
    return [f"{ins.out} = np.tril({ins.args[0]}{f', {k}' if k else ''})"]


def _rows(ins: Instr) -> list[str]:
    """A reshape that numpy would copy (Lowering._strided_rows), copied into its own array."""
    out = ins.buffer or (_scratch_out(ins) if ins.scratch else f"np.empty({ins.shape}, dtype=dt)")
    first = [] if out == ins.out else [f"{ins.out} = {out}"]
    return first + [f"np.copyto({ins.out}.reshape{ins.order}, {ins.args[0]})"]


def _loop(ins: Instr) -> list[str]:
    return ins.render()  # codegen.loops lowered the loop body; it is written out now


LOWERINGS: dict[str, Lowering] = {
    "ew": Lowering(_ew, ("_by_rows",)),
    "matmul": Lowering(_matmul),
    "sum": Lowering(_sum, ("_colsum", "_rowsum")),
    "vdot": Lowering(lambda i: [f"{i.out} = np.vdot({i.args[0]}, {i.args[1]})"]),
    "max": Lowering(_max),
    "softmax": Lowering(lambda i: [f"{i.out} = _softmax({i.args[0]}, axis={i.node.attr('axis')})"],
                        ("_softmax",)),
    "log_softmax": Lowering(lambda i: [f"{i.out} = _log_softmax({i.args[0]}, axis={i.node.attr('axis')})"],
                            ("_log_softmax",)),
    "softmax_xent": Lowering(_softmax_xent, ("_softmax_xent",)),
    "gather": Lowering(lambda i: [f"{i.out} = _gather({i.args[0]}, {i.args[1]}, {i.node.attr('axis')})"],
                       ("_gather",)),
    "scatter": Lowering(lambda i: [f"{i.out} = _scatter({i.args[0]}, {i.args[1]}, {i.shape}, "
                                   f"{i.node.attr('axis')}, dt)"], ("_scatter",), needs_shape=True),
    "dropout_mask": Lowering(lambda i: [f"{i.out} = _dropout_mask(rng, {i.shape}, {i.args[0]}, dt)"],
                             ("_generator", "_dropout_mask"), needs_shape=True),
    "pad": Lowering(_pad),
    "rows": Lowering(_rows, needs_shape=True),
    "concat": Lowering(_concat),
    "scan": Lowering(_loop),
    "scan_vjp": Lowering(_loop),
    "im2col": Lowering(lambda i: [f"{i.out} = _im2col({i.args[0]}, {_window(i)}{_ws(i)})"], ("_im2col",)),
    "col2im": Lowering(lambda i: [f"{i.out} = _col2im({i.args[0]}, {i.shape}, {_window(i)}{_ws(i)})"],
                       ("_col2im",), needs_shape=True),
    # linear algebra: numpy.linalg maps over leading (stack) axes; errors name the equation
    "eye": Lowering(lambda i: [f"{i.out} = np.eye({i.order}, dtype=dt)"]),
    "trace": Lowering(lambda i: [f"{i.out} = np.trace({i.args[0]}, axis1=-2, axis2=-1)"]),
    "diag": Lowering(lambda i: [f"{i.out} = _diag({i.args[0]})"], ("_diag",)),
    "diagonal": Lowering(lambda i: [f"{i.out} = np.diagonal({i.args[0]}, axis1=-2, axis2=-1).copy()"]),
    "outer": Lowering(_outer),
    "tril": Lowering(_tril),
    "det": Lowering(lambda i: [f"{i.out} = np.linalg.det({i.args[0]})"]),
    "logdet": Lowering(lambda i: [f"{i.out} = np.linalg.slogdet({i.args[0]}).logabsdet"]),
    "inv": Lowering(lambda i: [f"{i.out} = _inv({i.args[0]}, {i.where})"], ("_inv",)),
    "solve": Lowering(lambda i: [f"{i.out} = _solve({i.args[0]}, {i.args[1]}, {i.where})"], ("_solve",)),
    # the spec passed the rule table's check (letters, commas, '->'), so it is a safe literal
    "einsum": Lowering(lambda i: [f"{i.out} = np.einsum({i.node.attr('spec')!r}, {', '.join(i.args)}, "
                                  "optimize=True)"]),
    "cholesky": Lowering(lambda i: [f"{i.out} = _cholesky({i.args[0]}, {i.where})"], ("_cholesky",)),
    "col2im_matmul": Lowering(
        lambda i: [f"{i.out} = _col2im_matmul({i.args[0]}, {i.args[1]}, {i.shape}, {_window(i)}{_ws(i)})"],
        ("_col2im_matmul",), needs_shape=True),
}
