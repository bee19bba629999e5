"""What a person watching a run sees: a tqdm bar on stderr, one line per epoch on stdout.

The bar counts optimizer steps over the whole run (so a resumed run starts part-way), is
labelled with the epoch under way, and shows the running mean of the epoch's mini-batch
losses and the latest validation metric. By default it appears only when stderr is a
terminal, so logs and pipes get the epoch lines without carriage-return noise; `tqdm.auto`
draws it as a widget in a notebook. Epoch lines go through `tqdm.write`, which keeps the bar
intact below them.
"""
from __future__ import annotations

import sys
import time

from symgrad.training.loop import EpochRecord

REFRESH_SECONDS = 0.2


def epoch_line(r: EpochRecord, epochs: int, metric: str) -> str:
    return (f"epoch {r.epoch:3d}/{epochs}  train loss {r.train_loss:.4f}  train {metric} "
            f"{r.train[metric]:.4f}  val loss {r.val['loss']:.4f}  val {metric} {r.val[metric]:.4f}  "
            f"(batch loss {r.batch_loss:.4f}; {r.seconds:.2f} s)")


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel, whose stderr is no terminal but shows widgets."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
    """A progress bar (or nothing, when disabled) plus the per-epoch lines."""

    def __init__(self, total_steps: int, done_steps: int, epochs: int, metric: str,
                 enabled: bool | None = None, quiet: bool = False, done_epochs: int = 0):
        self.epochs, self.metric, self.quiet = epochs, metric, quiet
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty() or _in_notebook()
        if enabled and not quiet:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - the train extra installs it
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total_steps, initial=done_steps, unit="step", file=sys.stderr,
                                dynamic_ncols=True, leave=False, desc=self._label(done_epochs + 1))
        self._loss_sum = self._rows = 0.0
        self._last = 0.0
        self._val = ""

    def _label(self, epoch: int) -> str:
        return f"epoch {min(epoch, self.epochs)}/{self.epochs}"

    def step(self, rows: int, loss: float) -> None:
        if self.bar is None:
            return
        self._loss_sum += loss * rows
        self._rows += rows
        self.bar.update(1)
        now = time.monotonic()
        if now - self._last >= REFRESH_SECONDS:
            self._last = now
            self.bar.set_postfix_str(f"batch loss {self._loss_sum / self._rows:.4f}{self._val}",
                                     refresh=False)

    def epoch(self, record: EpochRecord) -> None:
        self._loss_sum = self._rows = 0.0
        short = "acc" if self.metric == "accuracy" else self.metric
        self._val = f", val {short} {record.val[self.metric]:.4f}"
        if self.bar is not None:  # from here on the bar counts the next epoch's steps
            self.bar.set_description(self._label(record.epoch + 1), refresh=False)
            self.bar.set_postfix_str(f"batch loss {record.batch_loss:.4f}{self._val}")
        self.write(epoch_line(record, self.epochs, self.metric))

    def write(self, line: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
