"""The training loop: a generated model module, a generated optimizer module, prepared data."""
from __future__ import annotations

import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from symbolic.errors import SymgradError
from training import metrics, optimizers
from training.data import Prepared, Split, batches


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    optimizer: str = "sgd"
    lr: float | None = None  # None: the optimizer's own default
    optimizer_hypers: dict[str, float] = field(default_factory=dict)
    model_hypers: dict[str, float] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    dtype: str = "float32"

    def check(self) -> None:
        for name, value, low in (("epochs", self.epochs, 1), ("batch size", self.batch_size, 1)):
            if not isinstance(value, int) or value < low:
                raise SymgradError(f"{name} must be a positive integer, not {value!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise SymgradError(f"learning rate must be a positive number, not {self.lr!r}")
        if self.dtype not in ("float32", "float64"):
            raise SymgradError(f"dtype must be float32 or float64, not {self.dtype!r}")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val: dict[str, float]
    seconds: float


def _io_names(module: types.ModuleType) -> tuple[str, str]:
    inputs = [k for k in module.INPUTS if k not in module.TARGETS]
    if len(inputs) != 1 or len(module.TARGETS) != 1:
        raise SymgradError("`symgrad train` needs a model with exactly one input and one target; "
                           f"this one has inputs {inputs} and targets {list(module.TARGETS)}")
    return inputs[0], module.TARGETS[0]


class Trainer:
    """Mini-batch training of one generated module on prepared data."""

    def __init__(self, module: types.ModuleType, data: Prepared, config: TrainConfig):
        config.check()
        self.module, self.data, self.config = module, data, config
        self.input, self.target = _io_names(module)
        if module.TASK is not None and module.TASK != data.task:
            raise SymgradError(f"model task {module.TASK!r} does not fit data task {data.task!r}")
        self.dims, self.input_shape = self._dims()
        self.dtype = np.dtype(config.dtype)
        self.params = module.init_params(self.dims, seed=config.seed, dtype=self.dtype)
        self.optimizer = optimizers.load(config.optimizer)
        unknown = set(config.optimizer_hypers) - set(self.optimizer.HYPERS)
        if unknown:
            raise SymgradError(f"optimizer {config.optimizer} has no hyper-parameter {sorted(unknown)[0]!r}; "
                               f"it has {', '.join(self.optimizer.HYPERS)}")
        self.opt_hypers = dict(config.optimizer_hypers)
        if config.lr is not None:
            self.opt_hypers["lr"] = config.lr
        self.state = self.optimizer.init_state(self.params)
        self.steps = 0
        self.epoch = 0
        self.rng = np.random.default_rng(config.seed)

    # -- shapes ------------------------------------------------------------------------------
    def _dims(self) -> tuple[dict[str, int], tuple[int, ...]]:
        m, train = self.module, self.data.train
        dims = {**m.DEFAULT_DIMS, **self.config.dims}
        unknown = set(self.config.dims) - set(m.DIMS)
        if unknown:
            raise SymgradError(f"model has no dim {sorted(unknown)[0]!r}; its dims are {', '.join(m.DIMS)}")
        x_shape, y_shape = m.INPUTS[self.input], m.INPUTS[self.target]
        features = train.X.shape[1]
        rest = x_shape[1:]
        if len(rest) == 1 and isinstance(rest[0], str):
            dims[rest[0]] = features
        elif all(isinstance(d, int) for d in rest) and int(np.prod(rest)) == features:
            pass
        else:
            raise SymgradError(f"the data has {features} features, but model input {self.input} "
                               f"expects {x_shape[1:]} per row")
        width = train.Y.shape[1]
        last = y_shape[-1]
        if isinstance(last, str):
            dims[last] = width
        elif last != width:
            raise SymgradError(f"the data has {width} target columns, but model target "
                               f"{self.target} expects {last}")
        dims.setdefault(x_shape[0], self.config.batch_size)
        missing = [d for d in m.DIMS if d not in dims]
        if missing:
            raise SymgradError(f"dim {missing[0]} has no default; give it with --dim {missing[0]}=N")
        shape = tuple(d if isinstance(d, int) else dims[d] for d in rest)
        return dims, shape

    def batch(self, split: Split, idx: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        X = split.X[idx].astype(self.dtype).reshape((-1, *self.input_shape))
        return {self.input: X, self.target: split.Y[idx].astype(self.dtype)}

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self) -> float:
        train = self.data.train
        total = 0.0
        hypers = self.config.model_hypers
        for idx in batches(len(train), self.config.batch_size, self.rng):
            loss, grads = self.module.loss_and_grad(self.params, self.batch(train, idx), hypers)
            self.steps += 1
            self.optimizer.step(self.params, grads, self.state, self.steps, self.opt_hypers)
            total += loss * len(idx)
        self.epoch += 1
        return total / len(train)

    def evaluate(self, split: Split) -> dict[str, float]:
        batch = self.batch(split)
        out = {"loss": self.module.loss(self.params, batch, self.config.model_hypers)}
        prediction = self.module.forward(self.params, batch, self.config.model_hypers)[self.module.PREDICTION]
        if self.data.task == "regression":
            out["r2"] = metrics.r2(prediction, split.Y)
        else:
            out["accuracy"] = metrics.accuracy(prediction, split.labels, self.data.task)
        return out

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
        history = []
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            train_loss = self.train_epoch()
            record = EpochRecord(self.epoch, train_loss, self.evaluate(self.data.val),
                                 time.perf_counter() - start)
            history.append(record)
            if on_epoch:
                on_epoch(record)
        return history
