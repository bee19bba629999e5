"""Learning-rate schedules: the rate of every step as a multiple of the base rate (`--lr`).

    --schedule step:every=30,gamma=0.1       x0.1 every 30 epochs (PyTorch's StepLR)
    --schedule cosine:warmup=5               linear warm-up over 5 epochs, then a cosine from
                                             the base rate towards min (default 0), step by step
                                             (PyTorch's CosineAnnealingLR over the remaining steps)
    --schedule plateau:patience=10,factor=0.1  x0.1 when the validation loss has not improved
                                             for more than 10 epochs (ReduceLROnPlateau)

From Python the same text, or an object: `train(..., schedule=Cosine(warmup=5))`. A schedule
is a setting of the run (config.json); what it has learnt on the way (a plateau's best loss,
its count of bad epochs, its current factor) is saved in every checkpoint, so a resumed run
continues with exactly the rates it would have had. The factor is recomputed before every
optimizer step (cosine moves every step; step and plateau change between epochs).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from symgrad.symbolic.errors import SymgradError


@dataclass
class Schedule:
    """The constant rate: the base class, and the schedule when none is given."""

    name = "constant"

    def factor(self, step: int, steps_per_epoch: int, epochs: int) -> float:
        """The multiple of the base rate for `step` (counted from 1 over the whole run)."""
        return 1.0

    def end_epoch(self, val_loss: float) -> None:
        """Told the validation loss after every epoch (only a plateau listens)."""

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass

    @property
    def spec(self) -> str:
        """The text that `parse` turns back into this schedule."""
        args = ",".join(f"{k}={v:g}" for k, v in asdict(self).items())
        return f"{self.name}:{args}" if args else self.name

    def check(self) -> None:
        pass


@dataclass
class Step(Schedule):
    every: int = 30  # epochs
    gamma: float = 0.1
    name = "step"

    def factor(self, step: int, steps_per_epoch: int, epochs: int) -> float:
        return self.gamma ** (((step - 1) // steps_per_epoch) // self.every)

    def check(self) -> None:
        _positive_int(self, "every")
        _within(self, "gamma", 0, 1, low_in=False, high_in=True)


@dataclass
class Cosine(Schedule):
    warmup: int = 0  # epochs of linear warm-up
    min: float = 0.0  # the factor reached at the last step
    name = "cosine"

    def factor(self, step: int, steps_per_epoch: int, epochs: int) -> float:
        warm, total = self.warmup * steps_per_epoch, epochs * steps_per_epoch
        if step <= warm:
            return step / warm
        progress = min(1.0, (step - 1 - warm) / max(1, total - warm))  # 0 at the first step after warm-up
        return self.min + (1 - self.min) * 0.5 * (1 + math.cos(math.pi * progress))

    def check(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise SymgradError(f"schedule cosine: warmup must be a whole number >= 0, not {self.warmup!r}")
        _within(self, "min", 0, 1, low_in=True, high_in=False)


@dataclass
class Plateau(Schedule):
    patience: int = 10  # epochs without improvement tolerated
    factor_: float = 0.1  # written `factor` in a spec
    threshold: float = 1e-4  # a relative improvement below this does not count
    name = "plateau"

    def __post_init__(self):
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def factor(self, step: int, steps_per_epoch: int, epochs: int) -> float:
        return self.scale

    def end_epoch(self, val_loss: float) -> None:
        if val_loss < self.best * (1 - self.threshold):
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale *= self.factor_
                self.bad = 0

    def state(self) -> dict:
        return {"scale": self.scale, "best": None if math.isinf(self.best) else self.best, "bad": self.bad}

    def restore(self, state: dict) -> None:
        self.scale, self.bad = float(state["scale"]), int(state["bad"])
        self.best = math.inf if state["best"] is None else float(state["best"])

    @property
    def spec(self) -> str:
        return f"plateau:patience={self.patience},factor={self.factor_:g},threshold={self.threshold:g}"

    def check(self) -> None:
        if not isinstance(self.patience, int) or self.patience < 0:
            raise SymgradError(f"schedule plateau: patience must be a whole number >= 0, "
                               f"not {self.patience!r}")
        _within(self, "factor_", 0, 1, low_in=False, high_in=False)
        _within(self, "threshold", 0, 1, low_in=True, high_in=False)


SCHEDULES = {s.name: s for s in (Schedule, Step, Cosine, Plateau)}
SYNTAX = "constant, step:every=N,gamma=G, cosine:warmup=N,min=F, plateau:patience=N,factor=F"


def _positive_int(s: Schedule, name: str) -> None:
    value = getattr(s, name)
    if not isinstance(value, int) or value < 1:
        raise SymgradError(f"schedule {s.name}: {name} must be a positive whole number, not {value!r}")


def _within(s: Schedule, name: str, low: float, high: float, low_in: bool, high_in: bool) -> None:
    value = getattr(s, name)
    ok = isinstance(value, (int, float)) and (low <= value if low_in else low < value) and (
        value <= high if high_in else value < high)
    if not ok:
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise SymgradError(f"schedule {s.name}: {name.rstrip('_')} must lie in {interval}, not {value!r}")


def parse(spec: str | Schedule | None) -> Schedule:
    """A schedule from its text (`cosine:warmup=5`), or the object itself; None: constant."""
    if spec is None:
        return Schedule()
    if isinstance(spec, Schedule):
        spec.check()
        return spec
    if not isinstance(spec, str):
        raise SymgradError(f"schedule must be text such as 'cosine:warmup=5' or a Schedule, not {spec!r}")
    name, _, rest = spec.strip().partition(":")
    if name not in SCHEDULES:
        raise SymgradError(f"unknown schedule {name!r}; choose {SYNTAX}")
    cls = SCHEDULES[name]
    known = {f.name.rstrip("_"): f for f in fields(cls)}
    kwargs = {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            allowed = ", ".join(known) or "none"
            raise SymgradError(f"schedule {name}: {item!r} is not ARG=VALUE with ARG one of {allowed}")
        try:
            number = float(value)
        except ValueError:
            raise SymgradError(f"schedule {name}: {key}={value!r} is not a number") from None
        whole = known[key].type == "int"
        if whole and number != int(number):
            raise SymgradError(f"schedule {name}: {key} must be a whole number, not {value}")
        kwargs[known[key].name] = int(number) if whole else number
    schedule = cls(**kwargs)
    schedule.check()
    return schedule
