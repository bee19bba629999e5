"""The training loop: a generated model module, a generated optimizer module, prepared data.

`Trainer` owns everything that changes while training (parameters, the model's state such
as batch-normalisation running averages, optimizer state, step count, the shuffling and
dropout generators, the history and the best epoch so far) and can hand all of it out and
take it back (`snapshot` / `restore`), which is what makes resuming exact.

The model module runs in training mode inside `loss_and_grad` (dropout masks drawn, running
averages updated in place) and in evaluation mode in `loss` and `forward`, which is what
every reported loss and metric uses.
Files, progress and plots are `training.run`'s business, not this module's.
"""
from __future__ import annotations

import math
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from symgrad.symbolic.errors import SymgradError
from symgrad.training import optimizers, schedules, validate
from symgrad.training.data import Prepared, Split, batches, streams
from symgrad.training.evaluation import Evaluator


class Diverged(SymgradError):
    """A loss or a gradient that is NaN or infinite: training cannot go on from here."""


REGULARISERS = ("l1", "l2", "dropout")  # model hyper-parameters with flags of their own


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
    patience: int | None = None  # stop after this many epochs without a lower validation loss
    schedule: str | None = None  # learning-rate schedule (training.schedules); None: constant
    clip_norm: float | None = None  # rescale each gradient whose global L2 norm exceeds this

    def check(self) -> None:
        validate.positive_int("epochs", self.epochs)
        validate.positive_int("batch size", self.batch_size)
        if self.patience is not None:
            validate.positive_int("patience", self.patience)
        validate.seed(self.seed)
        if self.lr is not None:
            validate.positive_number("learning rate", self.lr)
        for kind, table in (("optimizer", self.optimizer_hypers), ("model", self.model_hypers)):
            for name, value in table.items():
                if not math.isfinite(value):
                    raise SymgradError(f"{kind} hyper-parameter {name} must be a finite number, "
                                       f"not {value!r}")
        if self.dtype not in ("float32", "float64"):
            raise SymgradError(f"dtype must be float32 or float64, not {self.dtype!r}")
        if self.clip_norm is not None:
            validate.positive_number("clip norm", self.clip_norm)
        schedules.parse(self.schedule)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochRecord:
    """One epoch's figures. `train` and `val` are measured alike, in evaluation mode with the
    parameters at the epoch's end, so they compare; `batch_loss` is the mean of the epoch's
    mini-batch losses as training saw them (training mode: dropout on, parameters moving)."""

    epoch: int
    steps: int
    batch_loss: float  # mean of the epoch's mini-batch losses, in training mode
    train: dict[str, float]  # loss and metric on the training split, parameters at the epoch's end
    val: dict[str, float]  # loss and metric on the validation split, parameters at the epoch's end
    seconds: float
    lr: float  # the learning rate of the epoch's last step

    @property
    def train_loss(self) -> float:
        return self.train["loss"]

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "steps": self.steps, "batch_loss": self.batch_loss,
                "train": dict(self.train), "val": dict(self.val), "seconds": self.seconds, "lr": self.lr}


def _io_names(module: types.ModuleType) -> tuple[str, str | None]:
    """The model's input and target; a density model has an input only."""
    inputs = [k for k in module.INPUTS if k not in module.TARGETS]
    if module.TASK == "density" and len(inputs) == 1 and not module.TARGETS:
        return inputs[0], None
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
        if module.PREDICTION is None:
            raise SymgradError("the model has no output to predict with, so training has no metric; "
                               "declare one with model.output(...)")
        # a density model's metric: the mean negative log-likelihood of a row, from its log-density output
        self.metric = {"regression": "r2", "density": "nll"}.get(data.task, "accuracy")
        unknown = set(config.model_hypers) - set(module.HYPERS)
        if unknown:
            known = ", ".join(module.HYPERS) or "none"
            first = sorted(unknown)[0]
            hint = f" (--{first} trains a built-in MLP's variant with it)" if first in REGULARISERS else ""
            raise SymgradError(f"the model has no hyper-parameter {first!r}; it has {known}{hint}")
        self.dims, self.input_shape, self.target_shape = self._dims()
        self.dtype = np.dtype(config.dtype)
        self.evaluator = Evaluator(module, self.input, self.target, self.input_shape, self.target_shape,
                                   self.dtype, config.model_hypers, data.task, data.classes)
        self.optimizer = optimizers.load(config.optimizer)
        # a second-order method takes one step an epoch on the whole split, from the module's hvp
        self.full_batch = getattr(self.optimizer, "FULL_BATCH", False)
        if self.full_batch and not hasattr(module, "hvp"):
            raise SymgradError(f"optimizer {config.optimizer} needs the model's hvp, which this generated "
                               "module lacks; generate it again with this symgrad")
        # `t`, the step count, is the loop's to give, not a setting
        unknown = set(config.optimizer_hypers) - (set(self.optimizer.HYPERS) - {"t"})
        if unknown:
            known = ", ".join(h for h in self.optimizer.HYPERS if h != "t")
            raise SymgradError(f"optimizer {config.optimizer} has no hyper-parameter {sorted(unknown)[0]!r}; "
                               f"it has {known}")
        self.opt_hypers = dict(config.optimizer_hypers)
        if config.lr is not None:
            self.opt_hypers["lr"] = float(config.lr)
        self.base_lr = float(self.opt_hypers.get("lr", self.optimizer.HYPERS["lr"]))
        self.schedule = schedules.parse(config.schedule)
        self.params = module.init_params(self.dims, seed=config.seed, dtype=self.dtype)
        self.model_state = module.init_state(self.dims, self.dtype)  # running averages, if any
        self.state = (self.optimizer.init_state(self.params, self.opt_hypers) if self.full_batch
                      else self.optimizer.init_state(self.params))
        self.steps = 0
        self.epoch = 0
        _, shuffle, model_rng = streams(config.seed)
        self.rng = np.random.default_rng(shuffle)
        self.model_rng = np.random.default_rng(model_rng)
        self.history: list[EpochRecord] = []
        self.best_epoch = 0  # the epoch with the lowest validation loss so far (0: none yet)
        self.best_val_loss = math.inf
        self.best_params = {k: v.copy() for k, v in self.params.items()}
        self.best_model_state = {k: v.copy() for k, v in self.model_state.items()}
        self.bad_epochs = 0  # epochs since the best one
        self._train: tuple[np.ndarray, np.ndarray] | None = None
        # where each mini-batch's gradient comes from: None, this process; else a
        # `training.parallel.DataParallel`, shards of the batch on Dask workers
        self.parallel = None

    @property
    def lr(self) -> float:
        """The base learning rate (a schedule scales it step by step)."""
        return self.base_lr

    # -- shapes ------------------------------------------------------------------------------
    def _dims(self) -> tuple[dict[str, int], tuple[int, ...], tuple[int, ...]]:
        m, train = self.module, self.data.train
        unknown = set(self.config.dims) - set(m.DIMS)
        if unknown:
            raise SymgradError(f"model has no dim {sorted(unknown)[0]!r}; its dims are {', '.join(m.DIMS)}")
        dims = {**m.DEFAULT_DIMS, **self.config.dims}
        x_shape, y_shape = m.INPUTS[self.input], m.INPUTS[self.target] if self.target else ()

        def fit(dim: str | int, n: int, what: str) -> None:
            wanted = dim if isinstance(dim, int) else dims.get(dim)
            if wanted is not None and wanted != n:
                name = "" if isinstance(dim, int) else f" (dim {dim})"
                raise SymgradError(f"the data has {n} {what}, but the model expects {wanted}{name}")
            if isinstance(dim, str):
                dims[dim] = n

        features, rest = train.X.shape[1], x_shape[1:]
        if len(rest) == 1:
            fit(rest[0], features, f"feature columns for input {self.input}")
        elif all(isinstance(d, int) for d in rest):
            if int(np.prod(rest)) != features:
                raise SymgradError(f"the data has {features} feature columns, but model input "
                                   f"{self.input} expects {rest} = {int(np.prod(rest))} per row")
        else:
            raise SymgradError(f"model input {self.input} has shape {x_shape}; training feeds it rows "
                               "of a table, so it needs one axis after the batch")
        columns, y_rest = (train.Y.shape[1] if train.Y.ndim > 1 else 0), y_shape[1:]  # density: no target
        if self.target in getattr(m, "LABELS", ()):  # integer class labels: the prediction counts classes
            if y_rest or train.Y.ndim != 1:
                raise SymgradError(f"model target {self.target} holds integer class labels, so it needs "
                                   f"one axis (the batch), not {y_shape}")
            fit(m.OUTPUTS[m.PREDICTION][-1], len(self.data.classes), f"classes for {m.PREDICTION}")
        elif self.target is not None and len(y_rest) == 1:
            fit(y_rest[0], columns, f"target columns for {self.target}")
        elif self.target is not None and (not all(isinstance(d, int) for d in y_rest)
                                          or int(np.prod(y_rest)) != columns):
            raise SymgradError(f"the data has {columns} target columns, but model target {self.target} "
                               f"expects {y_shape[1:]} per row")
        dims.pop(x_shape[0], None)
        dims[x_shape[0]] = self.config.batch_size
        missing = [d for d in m.DIMS if d not in dims]
        if missing:
            raise SymgradError(f"dim {missing[0]} has no default; give it with --dim {missing[0]}=N")
        shape = tuple(d if isinstance(d, int) else dims[d] for d in rest)
        return dims, shape, tuple(d if isinstance(d, int) else dims[d] for d in y_rest)

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self, on_step: Callable[[int, float], None] | None = None) -> float:
        """One pass over the training split; the mean mini-batch loss. Raises `Diverged` at
        the first NaN or infinity in a loss, a gradient or a parameter."""
        X, Y = self._train_arrays()
        total = 0.0
        hypers = self.config.model_hypers
        epoch = self.epoch + 1
        n_batches = -(-len(X) // self.config.batch_size)

        def where(step: int, b: int) -> str:
            return f"epoch {epoch}, step {step} (batch {b} of {n_batches})"

        order = list(batches(len(X), self.config.batch_size, self.rng))
        if self.parallel is not None:
            self.parallel.begin_epoch(X, Y, order)
        for b, idx in enumerate(order, start=1):
            step = self.steps + 1
            try:
                if self.parallel is not None:
                    loss, grads = self.parallel.loss_and_grad(b - 1, self.params, self.model_state, hypers,
                                                              self.model_rng)
                else:
                    batch = {self.input: X[idx]} if self.target is None else {self.input: X[idx],
                                                                              self.target: Y[idx]}
                    loss, grads = self.module.loss_and_grad(self.params, batch, hypers,
                                                            state=self.model_state, rng=self.model_rng)
            except np.linalg.LinAlgError as e:  # a singular matrix: the generated code names the equation
                raise Diverged(f"{e} at {where(step, b)}") from None
            if not math.isfinite(loss):
                blame = self._blame_params("the step before") or self._largest_param()
                raise Diverged(f"the loss is {loss} at {where(step, b)}{blame}")
            name = nonfinite(grads)
            if name is not None:
                raise Diverged(f"the gradient of parameter {name} holds {_first_bad(grads[name])} at "
                               f"{where(step, b)} (loss {loss:.4g}); lower the learning rate")
            if self.config.clip_norm is not None:
                clip_global_norm(grads, self.config.clip_norm)
            self.opt_hypers["lr"] = self.base_lr * self.schedule.factor(step, n_batches, self.config.epochs)
            if self.full_batch:  # second order: the curvature of the whole split, in float64
                try:
                    self.optimizer.step(self.params, grads, self.state, step, self.opt_hypers,
                                        curvature=self._curvature(batch))
                except np.linalg.LinAlgError as e:
                    raise Diverged(f"{e} at {where(step, b)}") from None
            else:
                self.optimizer.step(self.params, grads, self.state, step, self.opt_hypers)
            self.steps = step
            total += loss * len(idx)
            if on_step is not None:
                on_step(len(idx), loss)
        bad = self._blame_params(f"step {self.steps}")
        if bad:
            raise Diverged(f"the parameters are not finite at the end of epoch {epoch}" + bad)
        self.epoch = epoch
        return total / len(X)

    def _curvature(self, batch: dict[str, np.ndarray]):
        """The loss, gradient and H v of the batch in float64 for a second-order step: the
        same dropout masks at every point the step tries (one seed drawn per step), the
        running averages read from a copy (a line search must not move them)."""
        from symgrad.training.second_order import Curvature

        b64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in batch.items()}
        hypers, module = self.config.model_hypers, self.module
        seed = int(self.model_rng.integers(2**31))

        def state() -> dict[str, np.ndarray]:
            return {k: v.astype(np.float64) for k, v in self.model_state.items()}

        return Curvature(
            lambda p: module.loss_and_grad(p, b64, hypers, state=state(), rng=seed),
            lambda p, v: module.hvp(p, b64, v, hypers, state=state(), rng=seed)[2])

    def _train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The training split in the training dtype and input shape, cast once, not per batch."""
        if self._train is None:
            train = self.data.train
            Y = train.Y if self.target is None else np.ascontiguousarray(
                train.Y.reshape((-1, *self.target_shape)), dtype=self.evaluator.target_dtype)
            X = np.ascontiguousarray(train.X.reshape((-1, *self.input_shape)), dtype=self.dtype)
            self._train = (X, Y)
        return self._train

    def _blame_params(self, when: str) -> str:
        for name, p in self.params.items():
            if not np.isfinite(p).all():
                return (f": parameter {name} became {_first_bad(p)} in {when}; "
                        "lower the learning rate")
        return ""

    def _largest_param(self) -> str:
        """The parameter with the largest entry: the likeliest cause of a loss that overflowed
        while every parameter is still finite."""
        if not self.params:
            return ""
        name = max(self.params, key=lambda k: float(np.abs(self.params[k]).max(initial=0.0)))
        p = self.params[name]
        i = int(np.abs(p).argmax()) if p.size else 0
        index = tuple(int(j) for j in np.unravel_index(i, p.shape)) if p.ndim else ()
        return (f": the largest parameter entry is {name}{list(index)} = {float(p.reshape(-1)[i]):.4g} "
                "(the parameters are finite, the loss overflowed); lower the learning rate")

    def evaluate(self, split: Split, params: dict[str, np.ndarray] | None = None,
                 state: dict[str, np.ndarray] | None = None, detail: bool = True) -> dict[str, float]:
        """Loss (the model's own) and metrics on a split, in evaluation mode, of `params` and
        the model `state` (default: the current ones); `detail`: per-class figures too."""
        params = self.params if params is None else params
        state = self.model_state if state is None else state
        return self.evaluator.evaluate(params, state, split.X, split.Y, split.labels, detail)

    def predict(self, split: Split, params: dict[str, np.ndarray] | None = None,
                state: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The model's prediction output for every row of a split, in evaluation mode."""
        params = self.params if params is None else params
        state = self.model_state if state is None else state
        return self.evaluator.predict(params, state, split.X)

    # -- the whole run -------------------------------------------------------------------------
    @property
    def stopped_early(self) -> bool:
        return self.config.patience is not None and self.bad_epochs >= self.config.patience

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs or self.stopped_early

    def run_epoch(self, on_step: Callable[[int, float], None] | None = None) -> EpochRecord:
        """Train one epoch, evaluate, and keep the best epoch's parameters."""
        start = time.perf_counter()
        # Overflow on the way to a NaN is reported once, as `Diverged`, not as numpy warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            batch_loss = self.train_epoch(on_step)
            try:
                train = self.evaluate(self.data.train, detail=False)
                val = self.evaluate(self.data.val)
            except np.linalg.LinAlgError as e:
                raise Diverged(f"{e} in the evaluation after epoch {self.epoch}") from None
        if not math.isfinite(val["loss"]):
            raise Diverged(f"the validation loss is {val['loss']} after epoch {self.epoch}, "
                           f"step {self.steps}")
        record = EpochRecord(self.epoch, self.steps, batch_loss, train, val, time.perf_counter() - start,
                             float(self.opt_hypers["lr"]))
        self.history.append(record)
        self.schedule.end_epoch(val["loss"])
        if val["loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val["loss"], self.epoch, 0
            for best, now in ((self.best_params, self.params), (self.best_model_state, self.model_state)):
                for k, a in now.items():
                    np.copyto(best[k], a)
        else:
            self.bad_epochs += 1
        return record

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None,
            on_step: Callable[[int, float], None] | None = None) -> list[EpochRecord]:
        """Train until the last epoch or until early stopping; `on_epoch` sees each record."""
        while not self.finished:
            record = self.run_epoch(on_step)
            if on_epoch:
                on_epoch(record)
        return self.history

    @property
    def keeps_best(self) -> bool:
        return self.config.patience is not None and self.best_epoch > 0

    @property
    def final_params(self) -> dict[str, np.ndarray]:
        """With early stopping, the parameters of the best epoch; else the last ones."""
        return self.best_params if self.keeps_best else self.params

    @property
    def final_model_state(self) -> dict[str, np.ndarray]:
        """The model state (running averages) that goes with `final_params`."""
        return self.best_model_state if self.keeps_best else self.model_state

    # -- exact resumption ------------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything that changes while training: arrays, and the rest as JSON-ready data."""
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        arrays.update({f"best/{k}": v for k, v in self.best_params.items()})
        arrays.update({f"model_state/{k}": v for k, v in self.model_state.items()})
        arrays.update({f"best_model_state/{k}": v for k, v in self.best_model_state.items()})
        arrays.update({f"state/{k}/{s}": a for k, st in self.state.items() for s, a in st.items()})
        meta = {"epoch": self.epoch, "steps": self.steps, "rng": self.rng.bit_generator.state,
                "model_rng": self.model_rng.bit_generator.state,
                "history": [r.to_dict() for r in self.history], "best_epoch": self.best_epoch,
                "best_val_loss": self.best_val_loss if self.best_epoch else None,
                "bad_epochs": self.bad_epochs, "schedule": self.schedule.state()}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Take back a snapshot: afterwards training goes on exactly as it would have."""
        tables = ((self.params, "param/"), (self.best_params, "best/"), (self.model_state, "model_state/"),
                  (self.best_model_state, "best_model_state/"))
        for table, prefix in tables:
            for k, p in table.items():
                saved = arrays.get(prefix + k)
                if saved is None or saved.shape != p.shape or saved.dtype != p.dtype:
                    raise SymgradError(f"the checkpoint's parameter {k} does not fit this model "
                                       f"({None if saved is None else saved.shape} vs {p.shape})")
                np.copyto(p, saved)
        for k, st in self.state.items():
            for s, a in st.items():
                np.copyto(a, arrays[f"state/{k}/{s}"])
        self.epoch, self.steps = int(meta["epoch"]), int(meta["steps"])
        self.rng.bit_generator.state = meta["rng"]
        self.model_rng.bit_generator.state = meta["model_rng"]
        self.history = [EpochRecord(**r) for r in meta["history"]]
        self.best_epoch = int(meta["best_epoch"])
        self.best_val_loss = math.inf if meta["best_val_loss"] is None else float(meta["best_val_loss"])
        self.bad_epochs = int(meta["bad_epochs"])
        self.schedule.restore(meta["schedule"])


def clip_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place by max_norm / norm when their joint L2 norm exceeds
    max_norm (PyTorch's `clip_grad_norm_`, with its 1e-6 guard); return the norm before."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in grads.values():
            g *= scale
    return norm


def nonfinite(arrays: dict[str, np.ndarray]) -> str | None:
    """The name of the first array holding a NaN or an infinity, if any. One reduction per
    array (a NaN or inf makes the sum so); only a sum that overflowed needs the full check."""
    for name, a in arrays.items():
        if not math.isfinite(a.sum()) and not np.isfinite(a).all():
            return name
    return None


def _first_bad(a: np.ndarray) -> str:
    flat = a.reshape(-1)
    i = int(np.flatnonzero(~np.isfinite(flat))[0])
    index = np.unravel_index(i, a.shape) if a.ndim else ()
    return f"{flat[i]} at index {tuple(int(j) for j in index)}"
