"""Benchmark: how code generation grows with the model: graph nodes vs seconds to derive and
to generate, for tanh MLPs of L hidden layers and stacked LSTMs of L layers.

Generation should grow linearly in the number of nodes; the `us/node` column shows when it
stops doing so (a pairwise pass over the program's values grows as the square). Each point is
the best of `--repeats` runs (derivation and generation are deterministic, so the best run is
the one the rest of the machine disturbed least).

    python bench/generation.py                      # MLPs of 8..256 layers, LSTMs of 1..8
    python bench/generation.py --mlp 16 64 --lstm 2 # chosen sizes
    python bench/generation.py --json gen.json      # also write the records as a JSON list
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from symgrad.codegen.emit import generate  # noqa: E402
from symgrad.symbolic import ops as F  # noqa: E402
from symgrad.symbolic.derivation import derive  # noqa: E402
from symgrad.symbolic.graph import topological  # noqa: E402
from symgrad.symbolic.model import Model  # noqa: E402
from symgrad.symbolic.scan import zeros  # noqa: E402
from timing import write_json  # noqa: E402

from symgrad.models.rnn import lstm_cell  # noqa: E402


def deep_mlp(layers: int) -> Model:
    """X -> tanh(. W_k + b_k) for k = 1..layers (all n_h wide) -> softmax cross-entropy."""
    m = Model(f"mlp_{layers}", f"tanh MLP with {layers} hidden layers", task="multiclass")
    B, n_in, n_h, n_out = m.dims("B n_in n_h n_out")
    h = m.input("X", (B, n_in))
    Y = m.target("Y", (B, n_out))
    for k in range(1, layers + 1):
        W = m.param(f"W{k}", (n_in if k == 1 else n_h, n_h))
        b = m.param(f"b{k}", (n_h,), "zeros")
        h = m.let(f"h{k}", F.tanh(h @ W + b))
    W, b = m.param("W_out", (n_h, n_out)), m.param("b_out", (n_out,), "zeros")
    z = m.let("z", h @ W + b)
    m.output("P", F.softmax(z))
    m.loss(F.softmax_cross_entropy(z, Y))
    return m


def stacked_lstm(layers: int, steps: int = 8) -> Model:
    """`layers` LSTMs, each reading the previous one's state sequence; a softmax layer on the
    last state of the top one."""
    m = Model(f"lstm_{layers}", f"{layers} stacked LSTM layers", task="multiclass")
    B, n_in, n_h, n_out = m.dims("B n_in n_h n_out")
    H = m.input("X", (B, steps, n_in))
    Y = m.target("Y", (B, n_out))
    for k in range(1, layers + 1):
        width = n_in if k == 1 else n_h
        Wx = F.concat([m.param(f"Wx{k}_{g}", (width, n_h)) for g in "ifgo"], axis=-1)
        Wh = F.concat([m.param(f"Wh{k}_{g}", (n_h, n_h)) for g in "ifgo"], axis=-1)
        b = F.concat([m.param(f"b{k}_{g}", (n_h,), "zeros") for g in "ifgo"], axis=-1)
        H, _ = m.scan(lstm_cell(Wx, Wh, b), [H], [zeros((B, n_h)), zeros((B, n_h))], name=f"lstm{k}")
        H = m.let(f"H{k}", H)
    W, c = m.param("W", (n_h, n_out)), m.param("c", (n_out,), "zeros")
    z = m.let("z", F.last_step(H) @ W + c)
    m.output("P", F.softmax(z))
    m.loss(F.softmax_cross_entropy(z, Y))
    return m


def point(build, size: int, repeats: int) -> dict:
    """Nodes of the derivation's graph and the best seconds to build+derive and to generate:
    CPU seconds of this process (what the work costs, even on a machine others load) and the
    wall-clock seconds of the whole."""
    best = dict.fromkeys(("derive_s", "generate_s", "wall_s"), float("inf"))
    for _ in range(repeats):
        w0, t0 = time.perf_counter(), time.process_time()
        derivation = derive(build(size))
        t1 = time.process_time()
        generate(derivation, "auto")
        t2, w2 = time.process_time(), time.perf_counter()
        for key, value in (("derive_s", t1 - t0), ("generate_s", t2 - t1), ("wall_s", w2 - w0)):
            best[key] = min(best[key], value)
    roots = [derivation.loss, *derivation.gradients.values(), *derivation.outputs(False).values()]
    return {"nodes": len(topological(roots)), **best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256],
                        help="hidden layers of the MLPs (default 8 16 32 64 128 256)")
    parser.add_argument("--lstm", type=int, nargs="*", default=[1, 2, 4, 8],
                        help="layers of the stacked LSTMs (default 1 2 4 8)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per point; the best counts (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the records as a JSON list to FILE")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # sympy's chatter
    rows = []
    print("CPU seconds of this process (best of the repeats), and the wall-clock total")
    print(f"{'model':<16} {'layers':>6} {'nodes':>7} {'derive s':>9} {'generate s':>11} {'total s':>8} "
          f"{'us/node':>8} {'wall s':>7}")
    for family, build, sizes in (("tanh MLP", deep_mlp, args.mlp), ("stacked LSTM", stacked_lstm, args.lstm)):
        for size in sizes:
            p = point(build, size, args.repeats)
            total = p["derive_s"] + p["generate_s"]
            print(f"{family:<16} {size:>6} {p['nodes']:>7} {p['derive_s']:>9.3f} {p['generate_s']:>11.3f} "
                  f"{total:>8.3f} {total / p['nodes'] * 1e6:>8.0f} {p['wall_s']:>7.2f}", flush=True)
            rows.append({"case": f"{family.split()[-1].lower()}_{size}", "layers": size, **p,
                         "total_s": total})
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {len(rows)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
