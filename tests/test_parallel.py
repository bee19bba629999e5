"""Data-parallel training on Dask: the same parameters as one process (float64, 1e-10), the
defined treatment of batch normalisation and dropout, and a worker killed mid-run.
One local cluster (2 worker processes) serves the whole module."""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import symgrad.generated.mlp_regularised as regularised
from symgrad.symbolic.errors import SymgradError
from symgrad.training.parallel import DataParallel
from symgrad.training.run import train

from symgrad.cli import main as symgrad_main

SMALL = {"dims": {"n_h1": 16, "n_h2": 16}, "dtype": "float64", "seed": 0, "quiet": True}


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield cluster.scheduler_address, client


def max_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_an_epoch_equals_one_process(cluster, tmp_path):
    """1222 training rows in batches of 50: 25 steps of two shards of 25 rows, the last 11 and 11."""
    batch_size = 50
    address, _ = cluster
    alone = train("mlp_tanh", epochs=1, batch_size=batch_size, out=tmp_path / "alone", **SMALL)
    shared = train("mlp_tanh", epochs=1, batch_size=batch_size, out=tmp_path / "dp", scheduler=address,
                   **SMALL)
    assert max_difference(alone.params, shared.params) < 1e-10
    assert shared.history[0].batch_loss == pytest.approx(alone.history[0].batch_loss, abs=1e-12)
    assert json.loads((tmp_path / "dp" / "config.json").read_text())["shards"] == 2
    assert "shards" not in json.loads((tmp_path / "alone" / "config.json").read_text())


def test_the_command_line(cluster, tmp_path, capsys):
    address, _ = cluster
    out = tmp_path / "cli"
    code = symgrad_main(["train", "softmax_regression", "--epochs", "2", "--scheduler", address,
                         "--dtype", "float64", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[0].startswith("epoch   1/2") and lines[-1].startswith("test accuracy ")
    alone = train("softmax_regression", epochs=2, dtype="float64", quiet=True, out=tmp_path / "alone")
    shared = np.load(out / "model.npz")
    assert max(float(np.max(np.abs(shared[k] - v))) for k, v in alone.params.items()) < 1e-10
    with pytest.raises(SymgradError, match="not both"):
        train("mlp_tanh", workers=2, scheduler=address)
    with pytest.raises(SymgradError, match="GAN training runs in one process"):
        train("gan_ring", workers=2)


def test_batch_normalisation_and_dropout_are_per_shard(cluster):
    """One step of the BN + dropout MLP: each shard's own batch statistics and masks (from the
    seed the run's dropout stream draws for it); gradients and losses summed by shard size,
    running statistics averaged the same way."""
    _, client = cluster
    dims = {"n_in": 6, "n_h1": 5, "n_h2": 4, "n_out": 3}
    params = regularised.init_params(dims, seed=1, dtype=np.float64)
    state = regularised.init_state(dims, np.float64)
    data = np.random.default_rng(2)
    X, Y = data.standard_normal((11, 6)), np.eye(3)[data.integers(0, 3, 11)]
    order = [data.permutation(11)[:9]]
    hypers = {"dropout": 0.3, "l1": 1e-3, "l2": 1e-2}
    dp = DataParallel(client, regularised, 2, "X", "Y")
    dp.begin_epoch(X, Y, order)
    got_state = {k: v.copy() for k, v in state.items()}
    loss, grads = dp.loss_and_grad(0, params, got_state, hypers, np.random.default_rng(7))

    seeds = np.random.default_rng(7).integers(2**63, size=2)
    shards = np.array_split(order[0], 2)  # 5 and 4 rows
    want_loss, want_grads, want_state = 0.0, {k: 0.0 for k in params}, {k: 0.0 for k in state}
    for rows, seed in zip(shards, seeds, strict=True):
        own = {k: v.copy() for k, v in state.items()}
        shard_loss, shard_grads = regularised.loss_and_grad(params, {"X": X[rows], "Y": Y[rows]}, hypers,
                                                            state=own, rng=np.random.default_rng(seed))
        w = len(rows) / 9
        want_loss += w * shard_loss
        want_grads = {k: want_grads[k] + w * shard_grads[k] for k in params}
        want_state = {k: want_state[k] + w * own[k] for k in state}
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert max_difference(grads, want_grads) < 1e-13 and max_difference(got_state, want_state) < 1e-13
    whole = {k: v.copy() for k, v in state.items()}
    _, one_process = regularised.loss_and_grad(params, {"X": X[order[0]], "Y": Y[order[0]]}, hypers,
                                               state=whole, rng=np.random.default_rng(7))
    assert max_difference(grads, one_process) > 1e-6  # per-shard statistics: not the one-process step


def test_a_killed_worker_costs_a_step_not_the_run(cluster, tmp_path, capsys):
    """SIGKILL one worker process while the run trains: the step is redone on the workers that
    remain (the nanny starts a new one) and the parameters are the one-process run's."""
    address, client = cluster
    out = tmp_path / "killed"
    killed = []

    def kill_mid_epoch():  # once the first epoch is done, a worker while it computes a shard
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = (out / "checkpoint.npz").exists() and [
                w for w, tasks in client.processing().items() if any("shard_step" in t for t in tasks)]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.002)

    killer = threading.Thread(target=kill_mid_epoch)
    killer.start()
    try:
        shared = train("softmax_regression", epochs=3, batch_size=4, out=out, scheduler=address,
                       dtype="float64", progress=False)
    finally:
        killer.join()
    printed = capsys.readouterr().out
    assert killed and "lost a Dask worker while" in printed
    alone = train("softmax_regression", epochs=3, batch_size=4, out=tmp_path / "alone", dtype="float64",
                  quiet=True)
    assert max_difference(alone.params, shared.params) < 1e-10
