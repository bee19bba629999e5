"""The Dask cluster that sweeps and data-parallel training run on.

`connect(workers=N)` starts a `LocalCluster` in this process: N worker processes with one
thread each, gone when the block ends (the embedded default; nothing to set up).
`connect(scheduler="tcp://host:8786")` joins a running cluster (`dask scheduler` and
`dask worker` on other machines, dask-jobqueue, dask-kubernetes) and leaves it running.
Its workers need symgrad installed (`pip install 'symgrad[distributed]'`), and a sweep's
folder must be at the same path on every worker (a shared file system), since each run
writes its own run folder where it trains.

Every task of ours runs with one BLAS, OpenMP and numexpr thread (`one_thread`): a worker's
cores are its task slots, and a task that spawned a BLAS pool per core would fight the
tasks beside it for them. It also adopts the calibration of the process that sent it
(`codegen.calibration.adopt`), so a run's numbers do not depend on where it ran.
"""
from __future__ import annotations

import contextlib
import logging

from symgrad.symbolic.errors import SymgradError

_LIMITED = False  # whether this process already runs its libraries on one thread


def require_distributed():
    """The `distributed` package, or one line saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise SymgradError("this needs Dask's distributed scheduler: "
                           "pip install 'symgrad[distributed]'") from None
    return distributed


def check_placement(workers, scheduler) -> None:
    if workers is not None and scheduler is not None:
        raise SymgradError("give either --workers N (a local cluster) or --scheduler ADDRESS, not both")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise SymgradError(f"workers must be a positive integer, not {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise SymgradError(f"scheduler must be an address such as tcp://host:8786, not {scheduler!r}")


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None, timeout: float = 30):
    """A `distributed.Client`: on a fresh local cluster of `workers` processes (default: one
    per core), or on the running cluster at `scheduler`."""
    check_placement(workers, scheduler)
    distributed = require_distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise SymgradError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        try:
            yield client
        finally:
            client.close()
        return
    # ":0", not None: without an address the scheduler's HTTP server still takes port 8787 and
    # warns ("Port 8787 is already in use") when another cluster on this machine holds it
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def worker_addresses(client, wait: float = 30) -> list[str]:
    """The addresses of the cluster's workers, waiting up to `wait` seconds for the first."""
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        raise SymgradError(f"the Dask cluster at {client.scheduler.address} has no workers") from None
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def prepare_worker(calibration: dict) -> None:
    """On a worker, before a task of ours: its libraries on one thread, and the client's
    calibration (numexpr thresholds) instead of one measured here."""
    from symgrad.codegen import calibration as calibrations

    one_thread()
    calibrations.adopt(calibration)


def one_thread() -> None:
    """Run BLAS, OpenMP and numexpr on one thread in this (worker) process, once."""
    global _LIMITED
    if _LIMITED:
        return
    import numexpr
    from threadpoolctl import threadpool_limits

    numexpr.set_num_threads(1)
    threadpool_limits(limits=1)
    _LIMITED = True
