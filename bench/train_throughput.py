"""Benchmark: training throughput of the digits MLP, symgrad's loop against a hand-written one.

`make bench` runs this after bench/run.py (or run it alone: `python bench/train_throughput.py`).
For each optimizer it trains the tanh MLP 64-128-64-10 on the digits training split (1,168
rows, mini-batches of 32, the last one partial, float32) and reports samples per second of:

* symgrad: `training.loop.Trainer.train_epoch`, i.e. the generated model module's
  `loss_and_grad`, the generated optimizer kernel's `step`, batching, and the NaN/inf guard;
* hand-written numpy: the same epoch as a competent person writes it without a tool: the
  forward and backward pass of bench/handwritten.py and the textbook update written in place
  (`m *= beta1; m += (1 - beta1) * g; ...`), the same batches from the same generator.

Both start from the same parameters and see the same batches, so after the timed epochs the
script checks that they reached the same parameters (to float32 rounding): the comparison is
between two implementations of one computation, not two trainings. Epochs are timed
alternately (the two loops take turns, after a warm-up epoch each); the table gives the median
epoch, as samples per second, and the ratio symgrad / hand-written (above 1: symgrad faster).
Beside it, where a step's time goes: the update of all six tensors (generated kernel vs the
hand-written one) in microseconds, and once for all optimizers the gradient (`loss_and_grad`
of a batch of 32) and the NaN/inf guard that only symgrad's loop runs.

    python bench/train_throughput.py               # every optimizer, 15 epochs each way
    python bench/train_throughput.py --epochs 40 --optimizer adam sgd
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import handwritten  # noqa: E402
import numpy as np  # noqa: E402
from symgrad.training import defaults, optimizers  # noqa: E402
from symgrad.training.data import batches, load, prepare  # noqa: E402
from symgrad.training.loop import TrainConfig, Trainer, nonfinite  # noqa: E402

from symgrad import pipeline  # noqa: E402


def textbook_update(name: str, h: dict):
    """The update rule of each optimizer, written by hand in place (torch.optim's definitions)."""
    lr = h["lr"]

    def sgd(p, g, s, t):
        p -= lr * g

    def momentum(p, g, s, t):
        s["v"] *= h["mu"]
        s["v"] += g
        p -= lr * s["v"]

    def nesterov(p, g, s, t):
        s["v"] *= h["mu"]
        s["v"] += g
        p -= lr * (g + h["mu"] * s["v"])

    def adagrad(p, g, s, t):
        s["s"] += g * g
        p -= lr * g / (np.sqrt(s["s"]) + h["eps"])

    def rmsprop(p, g, s, t):
        s["s"] *= h["alpha"]
        s["s"] += (1 - h["alpha"]) * g * g
        p -= lr * g / (np.sqrt(s["s"]) + h["eps"])

    def adam(p, g, s, t, decay=0.0):
        if decay:
            p *= 1 - lr * decay
        b1, b2 = h["beta1"], h["beta2"]
        s["m"] *= b1
        s["m"] += (1 - b1) * g
        s["v"] *= b2
        s["v"] += (1 - b2) * g * g
        m_hat = s["m"] / (1 - b1**t)
        v_hat = s["v"] / (1 - b2**t)
        p -= lr * m_hat / (np.sqrt(v_hat) + h["eps"])

    def adamw(p, g, s, t):
        adam(p, g, s, t, h["weight_decay"])

    return locals()[name]


class HandWritten:
    """The training epoch written by hand: same data, same batches, same update rule."""

    def __init__(self, trainer: Trainer):
        self.X = trainer.data.train.X.astype(np.float32)
        self.Y = trainer.data.train.Y.astype(np.float32)
        self.params = {k: v.copy() for k, v in trainer.params.items()}
        opt = trainer.optimizer
        self.state = {k: {s: np.zeros_like(v) for s in opt.STATE} for k, v in self.params.items()}
        self.update = textbook_update(opt.NAME, {**opt.HYPERS, **trainer.opt_hypers})
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = trainer.rng.bit_generator.state  # the same batches
        self.batch_size, self.steps = trainer.config.batch_size, 0

    def train_epoch(self) -> None:
        for idx in batches(len(self.X), self.batch_size, self.rng):
            _, grads = handwritten.loss_and_grad(self.params, self.X[idx], self.Y[idx])
            self.steps += 1
            for k, p in self.params.items():
                self.update(p, grads[k], self.state[k], self.steps)


def per_call(f, seconds: float = 0.05) -> float:
    """Median microseconds of a call, over 5 samples of repeated calls."""
    f()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 5:
        f()
        n += 1
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            f()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples) * 1e6


def step_parts(trainer: Trainer, hand: HandWritten) -> dict[str, float]:
    """Microseconds per step of the gradient, the guard and the update, each way, on one batch."""
    X, Y = hand.X[:32], hand.Y[:32]
    batch = {"X": X, "Y": Y}
    _, grads = trainer.module.loss_and_grad(trainer.params, batch)
    params = {k: v.copy() for k, v in trainer.params.items()}
    state = trainer.optimizer.init_state(params)
    hand_params = {k: v.copy() for k, v in params.items()}
    hand_state = {k: {s: np.zeros_like(v) for s in trainer.optimizer.STATE} for k, v in params.items()}

    def hand_update():
        for k, p in hand_params.items():
            hand.update(p, grads[k], hand_state[k], 1)

    return {
        "grad": per_call(lambda: trainer.module.loss_and_grad(trainer.params, batch)),
        "hand grad": per_call(lambda: handwritten.loss_and_grad(trainer.params, X, Y)),
        "guard": per_call(lambda: nonfinite(grads)),
        "update": per_call(lambda: trainer.optimizer.step(params, grads, state, 1, trainer.opt_hypers)),
        "hand update": per_call(hand_update),
    }


def measure(name: str, epochs: int, data) -> tuple[float, float, float, dict[str, float]]:
    """(symgrad samples/s, hand-written samples/s, largest parameter difference, step parts)."""
    module = pipeline.load_module("mlp_tanh")
    lr = defaults.RECOMMENDED_LR[name]
    trainer = Trainer(module, data, TrainConfig(epochs=epochs + 1, batch_size=32, optimizer=name, lr=lr))
    hand = HandWritten(trainer)
    ours_t, hand_t = [], []
    for epoch in range(epochs + 1):  # the first epoch of each warms up
        start = time.perf_counter()
        trainer.train_epoch()
        middle = time.perf_counter()
        hand.train_epoch()
        end = time.perf_counter()
        if epoch:
            ours_t.append(middle - start)
            hand_t.append(end - middle)
    diff = max(float(np.max(np.abs(trainer.params[k] - p)) / (1 + np.max(np.abs(p))))
               for k, p in hand.params.items())
    rows = len(data.train)
    return rows / statistics.median(ours_t), rows / statistics.median(hand_t), diff, step_parts(trainer, hand)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="timed epochs per loop (default 15)")
    parser.add_argument("--optimizer", nargs="+", choices=list(optimizers.OPTIMIZERS),
                        default=list(optimizers.OPTIMIZERS))
    args = parser.parse_args(argv)
    data = prepare(load("digits"), seed=0)
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    print(f"Training throughput: digits MLP 64-128-64-10 (tanh), {len(data.train)} rows an epoch, "
          f"batch 32, float32; median of {args.epochs} epochs; numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, BLAS threads: {threads}")
    header = (f"{'optimizer':<10} {'symgrad':>10} {'hand-written':>13} {'ratio':>6}  {'update us':>9} "
              f"{'hand us':>8}  {'param diff':>10}")
    print(header)
    print(f"{'':<10} {'samples/s':>10} {'samples/s':>13} {'':>6}  {'a step':>9} {'a step':>8}  "
          f"{'(relative)':>10}")
    print("-" * len(header))
    worst, parts = 0.0, []
    for name in args.optimizer:
        ours, hand, diff, part = measure(name, args.epochs, data)
        worst, parts = max(worst, diff), parts + [part]
        print(f"{name:<10} {ours:>10,.0f} {hand:>13,.0f} {ours / hand:>6.2f}  {part['update']:>9.1f} "
              f"{part['hand update']:>8.1f}  {diff:>10.1e}", flush=True)
    med = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print(f"a step's gradient (batch 32): generated {med['grad']:.1f} us, hand-written "
          f"{med['hand grad']:.1f} us; NaN/inf guard {med['guard']:.1f} us (symgrad only)")
    print("ratio: symgrad / hand-written (above 1: symgrad is faster). param diff: the largest "
          "difference of the two loops' parameters after training, relative to their size.")
    if worst > 1e-3:
        print(f"error: the two loops disagree (parameter difference {worst:.1e}); the comparison is void",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
