"""Data-parallel training on Dask: each mini-batch's gradient computed in shards on workers.

Each step the global mini-batch (the same rows, in the same order, as a single-process run
draws) is cut into S shards of near-equal size (`np.array_split`), shard k on its worker;
each worker runs the model's generated `loss_and_grad` on its rows, and the caller sums
the losses and gradients weighted by shard size (k's rows / the batch's rows) and takes one
optimizer step, as before. For a loss that is a mean over rows plus penalties on the
parameters this is the single-process gradient up to rounding (a test: float64 parameters
after an epoch agree to 1e-10).

Data stays on the workers: at the start of an epoch, shard k's rows for every step of that
epoch go to its worker once (`Client.scatter`); a step sends the parameters (and running
statistics) and row offsets, and gets back a loss and gradients. The generated module
travels as its source text with the data and is imported once per worker.

What cannot equal one process, defined here:
* Batch normalisation normalises each shard with the shard's own statistics (as PyTorch's
  DistributedDataParallel does without SyncBatchNorm). Its running averages are the
  shard-size-weighted mean of the workers' updated running averages: the running mean moves
  toward the global batch mean exactly; the running variance toward the mean of the shards'
  variances (the spread between shard means is left out).
* Dropout: the run's dropout stream draws one seed per shard each step, and shard k's masks
  come from that seed; a run is repeatable for a given shard count, and the count is in
  config.json (`shards`), but its masks differ from a single-process run's.

A worker lost during a step (its process killed, its machine gone): the epoch's shards are
sent again to the workers that remain, and the step is computed again from the same
parameters, so the result is unchanged. After `RETRIES` failed attempts of one step the
run stops with one line, its last checkpoint kept.
"""
from __future__ import annotations

import hashlib
import time
import types

import numpy as np
from symgrad.codegen import calibration
from symgrad.symbolic.errors import SymgradError
from symgrad.training.cluster import prepare_worker, worker_addresses

RETRIES = 3  # attempts of one step after a lost worker, each after sending the shards again
_MODULES: dict[str, types.ModuleType] = {}  # on a worker: generated modules by source hash


class WorkersLost(SymgradError):
    """The cluster lost workers faster than a step could be redone."""


def shard_step(shard: dict, start: int, stop: int, params: dict, state: dict, hypers: dict, seed: int):
    """On a worker: the loss, gradients and updated running statistics of rows start:stop of
    this worker's shard for the epoch, with the client's calibration."""
    prepare_worker(shard["calibration"])
    module = _MODULES.get(shard["hash"])
    if module is None:
        from symgrad.pipeline import import_source

        module = _MODULES[shard["hash"]] = import_source(shard["source"], shard["name"])
    calibration.install(module)  # the thresholds of this client (another's may have come before)
    batch = {shard["input"]: shard["X"][start:stop]}
    if shard["target"] is not None:
        batch[shard["target"]] = shard["Y"][start:stop]
    loss, grads = module.loss_and_grad(params, batch, hypers, state=state, rng=np.random.default_rng(seed))
    return loss, grads, state


class DataParallel:
    """The gradient source of a `Trainer` whose steps run in `shards` shards on a cluster."""

    def __init__(self, client, module: types.ModuleType, shards: int, input: str, target: str | None):
        from symgrad.training.run import module_source

        self.client, self.shards, self.input, self.target = client, shards, input, target
        self.source = module_source(module)
        self.name = module.__name__.split(".")[-1].removeprefix("symgrad_generated_")
        self.hash = hashlib.sha256(self.source.encode()).hexdigest()[:16]
        self.lost = 0  # steps redone after a lost worker
        self.bytes_per_step = 0  # parameters and running statistics out, gradients back (last step)
        self._rows: list[np.ndarray] = []
        self._data: list = []
        self.say = print  # where a line about a lost worker goes (training.run: the progress bar's)

    def begin_epoch(self, X: np.ndarray, Y: np.ndarray, order: list[np.ndarray]) -> None:
        """Cut every step's batch into shards and send shard k's rows of the whole epoch to its
        worker, in step order; `_offsets[k][j]` is where step j starts in shard k."""
        parts = [np.array_split(idx, self.shards) for idx in order]
        self._sizes = np.array([[len(p) for p in step] for step in parts])  # (steps, shards)
        self._offsets = np.vstack([np.zeros((1, self.shards), int), np.cumsum(self._sizes, axis=0)])
        self._rows = [np.concatenate([step[k] for step in parts]) for k in range(self.shards)]
        self._X, self._Y = X, Y
        self._retrying(self._scatter, "sending the epoch's shards")

    def _scatter(self) -> None:
        workers = worker_addresses(self.client)
        data = []
        for k, rows in enumerate(self._rows):
            payload = {"source": self.source, "name": self.name, "hash": self.hash, "input": self.input,
                       "target": self.target, "calibration": calibration.current(), "X": self._X[rows],
                       "Y": None if self.target is None else self._Y[rows]}
            # a list of one: scatter would send a dict's values one by one
            data.append(self.client.scatter([payload], workers=[workers[k % len(workers)]], hash=False)[0])
        self._data = data

    def _retrying(self, work, what: str):
        """`work()`; after a lost worker, the epoch's shards again to the workers that remain,
        and `work()` again, up to RETRIES times."""
        import distributed
        from distributed.utils import CancelledError

        lost = (CancelledError, distributed.KilledWorker, distributed.comm.CommClosedError, OSError,
                TimeoutError)
        for attempt in range(RETRIES + 1):
            try:
                return work()
            except lost as e:
                if attempt == RETRIES:
                    raise WorkersLost(f"lost Dask workers {RETRIES + 1} times in a row while {what} "
                                      f"({type(e).__name__}: {e})") from None
                self.lost += 1
                self.say(f"lost a Dask worker while {what} ({type(e).__name__}); sending the epoch's "
                         "shards to the workers that remain and trying again")
                time.sleep(0.2 * (attempt + 1))
                try:
                    self._scatter()
                except lost:
                    pass  # the next attempt fails the same way and sends them again

    def loss_and_grad(self, step: int, params: dict, state: dict, hypers: dict,
                      rng: np.random.Generator) -> tuple[float, dict[str, np.ndarray]]:
        """Step `step` of the epoch (0-based): the shard-size-weighted sums of the shards'
        losses and gradients; `state` (running statistics) becomes their weighted mean."""
        sizes = self._sizes[step]
        seeds = rng.integers(2**63, size=self.shards)  # one dropout stream per shard, whatever the model
        live = [k for k in range(self.shards) if sizes[k]]

        def compute():
            futures = [self.client.submit(shard_step, self._data[k], int(self._offsets[step, k]),
                                          int(self._offsets[step + 1, k]), params, state, hypers,
                                          int(seeds[k]), pure=False) for k in live]
            return self.client.gather(futures)

        results = self._retrying(compute, f"computing step {step + 1} of the epoch")
        total = int(sizes.sum())
        loss, grads, new_state = 0.0, {}, {}
        for k, (shard_loss, shard_grads, shard_state) in zip(live, results, strict=True):
            weight = sizes[k] / total
            loss += weight * shard_loss
            for name, g in shard_grads.items():
                if name in grads:
                    grads[name] += weight * g
                else:
                    grads[name] = weight * g
            for name, s in shard_state.items():
                new_state[name] = new_state[name] + weight * s if name in new_state else weight * s
        for name, s in new_state.items():
            np.copyto(state[name], s.astype(state[name].dtype, copy=False))
        out = sum(a.nbytes for a in params.values()) + sum(a.nbytes for a in state.values())
        back = sum(a.nbytes for _, shard_grads, shard_state in results
                   for a in (*shard_grads.values(), *shard_state.values()))
        self.bytes_per_step = len(live) * out + back
        return float(loss), {k: g.astype(params[k].dtype, copy=False) for k, g in grads.items()}
