"""`symgrad train`: arguments, defaults per built-in model, and the run itself."""
from __future__ import annotations

import argparse

from symbolic.errors import SymgradError


def _dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=POSITIVE_INT, got {text!r}")
    return name, int(value)


def _hyper(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name, float(value) if sep else float("nan")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.optimizers import OPTIMIZERS

    p.add_argument("model", metavar="MODEL", help="a built-in model name or a model file")
    p.add_argument("--data", help="bundled data set (digits, iris, wine, breast_cancer, diabetes); "
                   "default: the model's own")
    p.add_argument("--epochs", type=int, help="passes over the training split")
    p.add_argument("--lr", type=float, help="learning rate (default: per model and optimizer)")
    p.add_argument("--batch-size", type=int, help="rows per mini-batch")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, splits and shuffling")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None, help="default: sgd")
    p.add_argument("--opt", type=_hyper, action="append", default=[], metavar="NAME=VALUE",
                   help="an optimizer hyper-parameter, e.g. --opt mu=0.95")
    p.add_argument("--dim", type=_dim, action="append", default=[], metavar="NAME=N",
                   help="size of a model dim, e.g. --dim n_h1=256")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")


def run(args: argparse.Namespace) -> int:
    from symgrad import pipeline
    from symgrad.models import BUILTINS
    from training.data import load_bundled, prepare
    from training.loop import TrainConfig, Trainer

    module = pipeline.load_module(args.model)  # an unknown model or a broken file fails first
    builtin = BUILTINS.get(args.model)
    defaults = dict(builtin.train) if builtin else {"lr": 0.05, "epochs": 20, "batch_size": 32}
    data_name = args.data or (builtin.data if builtin else None)
    if data_name is None:
        raise SymgradError("--data is required for a model file")
    optimizer = args.optimizer or defaults.get("optimizer", "sgd")
    lr = args.lr if args.lr is not None else (defaults.get("lr") if optimizer == defaults.get(
        "optimizer", "sgd") else None)
    config = TrainConfig(
        epochs=args.epochs if args.epochs is not None else defaults["epochs"],
        batch_size=args.batch_size if args.batch_size is not None else defaults["batch_size"],
        seed=args.seed, optimizer=optimizer, lr=lr, optimizer_hypers=dict(args.opt),
        dims=dict(args.dim), dtype=args.dtype,
    )
    config.check()
    dataset = load_bundled(data_name)
    trainer = Trainer(module, prepare(dataset, args.seed), config)
    metric = "r2" if dataset.task == "regression" else "accuracy"

    def show(r):
        print(f"epoch {r.epoch:3d}/{config.epochs}  train loss {r.train_loss:.4f}  "
              f"val loss {r.val['loss']:.4f}  val {metric} {r.val[metric]:.4f}  ({r.seconds:.2f} s)",
              flush=True)

    trainer.fit(show)
    test = trainer.evaluate(trainer.data.test)
    print(f"test {metric} {test[metric]:.4f}  (test loss {test['loss']:.4f}, {module.__name__.split('.')[-1]}, "
          f"{data_name}, {optimizer}, seed {args.seed})")
    return 0
