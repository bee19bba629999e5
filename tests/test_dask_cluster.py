"""A cluster as a user with one would run it: `dask scheduler` and two `dask worker` processes
on localhost over TCP, started from the command line; a small sweep and one data-parallel
epoch go to its address."""
from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from symgrad.training.run import train
from symgrad.training.sweep import sweep

DASK = pathlib.Path(sys.executable).parent / "dask"


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": folder}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", file], **quiet)]
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--local-directory", folder], **quiet))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_sweep_and_a_data_parallel_epoch_on_a_tcp_cluster(address, tmp_path):
    board = sweep("softmax_regression", {"lr": [0.05, 0.1]}, scheduler=address, epochs=2, out=tmp_path / "s",
                  quiet=True)
    assert {r["status"] for r in board.rows} == {"finished"} and len(board.rows) == 2
    with open(tmp_path / "s" / "leaderboard.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == [r["run"] for r in board.rows]
    settings = {"epochs": 1, "dtype": "float64", "quiet": True, "batch_size": 16}
    alone = train("softmax_regression", out=tmp_path / "alone", **settings)
    shared = train("softmax_regression", out=tmp_path / "dp", scheduler=address, **settings)
    assert shared.config["shards"] == 2
    assert max(float(np.max(np.abs(alone.params[k] - shared.params[k]))) for k in alone.params) < 1e-10
