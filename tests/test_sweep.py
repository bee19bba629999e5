"""Sweeps on a Dask cluster: each grid point an ordinary run, bit for bit what `symgrad train`
writes; the leaderboard, the curves, the command line, runs that fail, and grid mistakes.
One local cluster (2 worker processes) serves the whole module."""
from __future__ import annotations

import csv
import json
import logging
import os
import pathlib
import signal
import threading
import time

import pytest
from symgrad.symbolic.errors import SymgradError, SymgradWarning
from symgrad.training import checkpoint
from symgrad.training.run import train
from symgrad.training.sweep import parse_grid, points, run_name, sweep
from threadpoolctl import threadpool_limits

from symgrad.cli import main as symgrad_main

SMALL = {"dims": {"n_h1": 16, "n_h2": 16}, "epochs": 2}  # the digits MLP, small and short


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def same_run(swept: pathlib.Path, alone: pathlib.Path, epochs: int = SMALL["epochs"]) -> None:
    """Every file alike, byte for byte, but for the wall-clock seconds of each epoch."""
    for name in ("config.json", "module.py"):
        assert (swept / name).read_bytes() == (alone / name).read_bytes(), name
    for name in ("checkpoint.npz", "model.npz"):
        a, meta_a = checkpoint.load(swept / name)
        b, meta_b = checkpoint.load(alone / name)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), (name, k)
        for meta in (meta_a, meta_b):
            for record in meta.get("history", []):
                record.pop("seconds")
        assert meta_a == meta_b
    rows = []
    for folder in (swept, alone):
        with open(folder / "metrics.csv") as f:
            rows.append([{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)])
    assert rows[0] == rows[1] and len(rows[0]) == epochs
    for name in ("curves.png", "confusion.png"):
        assert (swept / name).read_bytes() == (alone / name).read_bytes(), name


def test_each_point_is_the_run_train_writes(scheduler, tmp_path):
    board = sweep("mlp_tanh", {"seed": [0, 1], "lr": [0.01]}, scheduler=scheduler, out=tmp_path / "sweep",
                  quiet=True, **SMALL)
    assert [r["run"] for r in board.rows] == sorted(["seed=0_lr=0.01", "seed=1_lr=0.01"],
                                                    key=lambda n: next(r["val_loss"] for r in board.rows
                                                                       if r["run"] == n))
    # a worker runs on one BLAS thread (sweep.py), and OpenBLAS rounds a product of the
    # evaluation's size (1167x64 by 64x16) differently on two: the same run is the same threads
    with threadpool_limits(1):
        alone = train("mlp_tanh", seed=1, lr=0.01, out=tmp_path / "alone", quiet=True, **SMALL)
    same_run(tmp_path / "sweep" / "seed=1_lr=0.01", alone.run_dir)
    row = next(r for r in board.rows if r["seed"] == 1)
    assert row["status"] == "finished" and row["test_accuracy"] == alone.test["accuracy"]
    assert row["val_loss"] == alone.history[-1].val["loss"] and row["epochs"] == 2
    assert row["best_epoch"] == alone.best_epoch and row["seconds"] > 0

    with open(tmp_path / "sweep" / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == [r["run"] for r in board.rows]
    assert float(table[0]["val_loss"]) <= float(table[1]["val_loss"])
    assert set(table[0]) >= {"seed", "lr", "best_epoch", "val_accuracy", "test_accuracy", "seconds"}
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert summary["best"] == board.best["run"] == table[0]["run"]
    assert summary["grid"] == {"seed": [0, 1], "lr": [0.01]}
    assert (tmp_path / "sweep" / "validation.png").read_bytes()[:4] == b"\x89PNG"


def test_the_command_line(scheduler, tmp_path, capsys):
    out = tmp_path / "cli"
    code = symgrad_main(["sweep", "mlp_tanh", "--grid", "lr=0.01,0.02", "--epochs", "1", "--dim", "n_h1=16",
                         "--dim", "n_h2=16", "--scheduler", scheduler, "--out", str(out),
                         "--rank-by", "val_accuracy"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert [line.split(":")[0] for line in lines[:2]] == ["run 1/2 lr=0.01", "run 2/2 lr=0.02"] or \
        [line.split(":")[0] for line in lines[:2]] == ["run 1/2 lr=0.02", "run 2/2 lr=0.01"]
    assert all("val accuracy" in line and "test accuracy" in line for line in lines[:2])
    with open(out / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["val_accuracy"]) >= float(table[1]["val_accuracy"])
    assert lines[-1].startswith(f"best run: {out.resolve() / table[0]['run']} (val_accuracy ")
    config = json.loads((out / table[0]["run"] / "config.json").read_text())
    assert config["epochs"] == 1 and config["dims"]["n_h1"] == 16


def test_a_run_that_diverges_is_a_row_and_the_sweep_goes_on(scheduler, tmp_path):
    with pytest.warns(SymgradWarning, match="far above the usual range of sgd"):
        board = sweep("linear_regression", {"lr": [0.05, 1e6]}, scheduler=scheduler, out=tmp_path / "s",
                      epochs=2, quiet=True)
    assert [r["status"] for r in board.rows] == ["finished", "diverged"]
    assert board.best["lr"] == 0.05 and "the loss is inf" in board.rows[1]["error"]
    assert "test_r2" in board.columns


def test_grid_mistakes_are_one_line():
    assert parse_grid("lr=1e-3,3e-3 seed=0,1 dim.n_h1=32") == {"lr": [1e-3, 3e-3], "seed": [0, 1],
                                                               "dim.n_h1": [32]}
    assert points({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert run_name({"lr": 0.001, "optimizer": "adam", "dim.n_h1": 8}) == "lr=0.001_optimizer=adam_dim.n_h1=8"
    for spec, message in (("momentum=0.9", "cannot sweep 'momentum'"), ("seed=0.5", "takes int values"),
                          ("lr", "expected NAME=V1,V2"), ("lr=1 lr=2", "names lr twice"),
                          ("seed=1,1", "lists a value twice"), ("", "the grid is empty")):
        with pytest.raises(SymgradError, match=message):
            parse_grid(spec)
    with pytest.raises(SymgradError, match="both fixed and in the grid"):
        sweep("mlp_tanh", {"lr": [0.01]}, lr=0.02, workers=1)
    with pytest.raises(SymgradError, match="not both"):
        sweep("mlp_tanh", {"lr": [0.01]}, workers=1, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(SymgradError, match="rank by a validation column"):
        sweep("mlp_tanh", {"lr": [0.01]}, workers=1, rank_by="test_accuracy")
    with pytest.raises(SymgradError, match="GAN training has none"):
        sweep("gan_ring", {"lr": [0.01]}, workers=1)


def test_a_killed_worker_s_run_resumes_from_its_checkpoint(scheduler, tmp_path, capsys):
    """SIGKILL the worker process of a run that has written a checkpoint: Dask starts the task
    again, which resumes the run, and the run ends as if never stopped; the leaderboard is whole."""
    from distributed import Client

    out = tmp_path / "sweep"
    killed = []

    def kill_a_run_in_progress(client):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for worker, keys in client.processing().items():
                names = [str(k).split("symgrad-run-")[1].rsplit("-", 1)[0] for k in keys
                         if "symgrad-run-" in str(k)]
                if any((out / n / "checkpoint.npz").exists() and not (out / n / "model.npz").exists()
                       for n in names):
                    pid = client.run(os.getpid, workers=[worker])[worker]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.002)

    settings = {"dims": {"n_h1": 16, "n_h2": 16}, "epochs": 3, "batch_size": 16}
    with Client(scheduler) as client:
        killer = threading.Thread(target=kill_a_run_in_progress, args=(client,))
        killer.start()
        try:
            board = sweep("mlp_tanh", {"seed": [0, 1]}, scheduler=scheduler, out=out, **settings)
        finally:
            killer.join()
    lines = capsys.readouterr().out.splitlines()
    assert killed and [r["status"] for r in board.rows] == ["finished", "finished"]
    again = [line for line in lines if "resumed from its checkpoint" in line]
    assert len(again) == 1
    name = again[0].split(" ")[2].rstrip(":")
    seed = int(name.removeprefix("seed="))
    # BLAS on one thread, as on a worker: two threads split a product's rows otherwise, and the
    # float32 train-split loss of epoch 3 came out one bit apart
    with threadpool_limits(limits=1):
        alone = train("mlp_tanh", seed=seed, out=tmp_path / "alone", quiet=True, **settings)
    # every file, figures and plots included
    same_run(out / name, alone.run_dir, epochs=3)


def test_a_run_uses_the_calibration_of_the_process_that_swept(scheduler, tmp_path):
    """A worker adopts the sweeping process's numexpr thresholds instead of measuring its own
    (its one numexpr thread keys another measurement), so a run's backend choices, and the
    last bits of its figures, are those of `symgrad train` in this process."""
    from distributed import Client
    from symgrad.codegen import calibration

    ours = json.loads(json.dumps(calibration.current()))
    ours["float64"] = {"light": 123457, "heavy": 654321}  # no measurement gives these
    calibration.adopt(ours)
    try:
        sweep("mlp_tanh", {"seed": [0, 1]}, scheduler=scheduler, out=tmp_path / "sweep", quiet=True, **SMALL)
    finally:
        calibration.adopt(None)
    with Client(scheduler) as client:
        seen = client.run(lambda: calibration.current()["float64"])
    assert {"light": 123457, "heavy": 654321} in seen.values()


def test_a_sweep_where_no_run_finishes_fails_in_one_line(scheduler, tmp_path, capsys):
    code = symgrad_main(["sweep", "linear_regression", "--grid", "lr=1e6,2e6", "--epochs", "1",
                         "--scheduler", scheduler, "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    table = tmp_path.resolve() / "s" / "leaderboard.csv"
    assert err[-1] == f"symgrad sweep: error: no run finished; the reasons are in {table}"
    with open(tmp_path / "s" / "leaderboard.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["diverged", "diverged"]


def test_a_local_cluster_starts_quietly_beside_another_on_port_8787():
    """Another cluster (or any server) on Dask's default HTTP port must not make symgrad's local
    cluster warn: a README example that warns fails its test, and users read it as a fault."""
    import socket
    import warnings

    from symgrad.training.cluster import connect

    holder = socket.socket()
    try:
        holder.bind(("", 8787))
    except OSError:
        pass  # something on this machine holds it already, which is the case under test
    else:
        holder.listen()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with connect(workers=1) as client:
                assert client.submit(sum, [1, 2]).result() == 3
    finally:
        holder.close()
    assert not [w for w in caught if "8787" in str(w.message)], [str(w.message) for w in caught]
