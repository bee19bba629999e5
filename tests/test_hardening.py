"""Issue 10, the command line's part: file-system failures, huge values, GAN flags, model files
that exit, temporary files, the overwrite guard, damaged checkpoints, resuming with fewer epochs.
Each runs `symgrad` in this process (its `main`) and asserts one line on stderr and the status."""
from __future__ import annotations

import errno
import json
import os
import pathlib
import tempfile

import numpy as np
import pytest
from symgrad.codegen import atomic
from symgrad.codegen.stamp import check, stamp
from symgrad.training import checkpoint
from symgrad.training import data as D
from symgrad.training.loop import Trainer

import symgrad as sg
from symgrad.cli import main as symgrad_main

MODEL_FILE = """\
import symgrad as sg
m = sg.Model("{name}", "a logistic regression", task="binary")
B, n_in, n_out = m.dims("B n_in n_out")
X, Y = m.input("X", (B, n_in)), m.target("Y", (B, n_out))
z = m.let("z", X @ m.param("W", (n_in, n_out)) + m.param("b", (n_out,), init="zeros"))
m.output("p", sg.sigmoid(z))
m.loss(sg.binary_cross_entropy_with_logits(z, Y))
model = m
"""


def run(capsys, *args) -> tuple[int, str, list[str]]:
    """`symgrad ARGS` in this process: exit status, stdout, stderr lines."""
    try:
        code = symgrad_main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def one_error(code, lines, *needles) -> str:
    assert code not in (0, None), lines
    errors = [line for line in lines if not line.startswith("symgrad: warning:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def no_temporaries(folder: pathlib.Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


# -- 1. the file system refuses ------------------------------------------------------------------------
def test_a_folder_that_takes_no_files_is_refused_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "locked"
    out.mkdir()
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and pathlib.Path(dir) == out:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    epochs = []
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(Trainer, "run_epoch", lambda self, *a: epochs.append(1))
    code, _, lines = run(capsys, "train", "logistic_regression", "--epochs", 1, "--out", out)
    one_error(code, lines, f"cannot write into {out}: Permission denied", "nothing was trained")
    assert not epochs and list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_folder_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, _, lines = run(capsys, "train", "logistic_regression", "--epochs", 1, "--out", out)
    finally:
        out.chmod(0o700)
    one_error(code, lines, "nothing was trained")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.ENAMETOOLONG, errno.EIO])
def test_a_failed_write_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch, err):
    real, calls = os.replace, []

    def full(src, dst):
        if pathlib.Path(dst).name == "checkpoint.npz":
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(err, os.strerror(err))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    out = tmp_path / "run"
    code, _, lines = run(capsys, "train", "logistic_regression", "--epochs", 3, "--out", out, "--quiet")
    one_error(code, lines, f"cannot write {out / 'checkpoint.npz'}: {os.strerror(err)}",
              "the checkpoint of epoch 1 stays in")
    assert checkpoint.load(out / "checkpoint.npz")[1]["epoch"] == 1
    assert no_temporaries(out) and not (out / "model.npz").exists()
    monkeypatch.setattr(atomic.os, "replace", real)  # the disk has room again: the run goes on
    code, _, lines = run(capsys, "train", "logistic_regression", "--resume", out, "--quiet")
    assert code == 0, lines
    assert checkpoint.load(out / "checkpoint.npz")[1]["epoch"] == 3


def test_a_failed_write_at_the_end_says_how_to_finish(tmp_path, capsys, monkeypatch):
    real = os.replace

    def full(src, dst):
        if pathlib.Path(dst).name == "model.npz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    out = tmp_path / "run"
    code, _, lines = run(capsys, "train", "logistic_regression", "--epochs", 1, "--out", out, "--quiet")
    one_error(code, lines, "No space left on device", f"finish the run with --resume {out}")
    assert no_temporaries(out)


def test_a_model_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    name = "m" * 300
    (tmp_path / "long.py").write_text(MODEL_FILE.format(name=name))
    code, _, lines = run(capsys, "derive", tmp_path / "long.py", "--out", tmp_path / "gen")
    one_error(code, lines, "File name too long")
    code, _, lines = run(capsys, "train", tmp_path / "long.py", "--data", "breast_cancer")
    assert "File name too long" in one_error(code, lines)


# -- 2. values too large, metrics that are not finite, divergence ---------------------------------------
def test_a_value_that_overflows_standardisation_is_refused_naming_file_row_and_column(tmp_path, capsys):
    rows = np.random.default_rng(0).standard_normal((40, 3))
    text = "a,b,c,label\n" + "".join(f"{r[0]},{1e308 if i == 7 else r[1]},{r[2]},{int(r[0] > 0)}\n"
                                     for i, r in enumerate(rows))
    (tmp_path / "big.csv").write_text(text)
    code, _, lines = run(capsys, "train", "logistic_regression", "--data", tmp_path / "big.csv",
                         "--out", tmp_path / "run")
    one_error(code, lines, f"{tmp_path / 'big.csv'}:9: column 'b' holds 1e+308")
    assert not (tmp_path / "run").exists()


def test_a_value_beyond_float32_after_standardisation_is_refused(tmp_path, capsys):
    X = np.random.default_rng(1).standard_normal((60, 2))
    X[np.abs(X[:, 0]).argmax(), 0] = 0  # keep the training statistics small ...
    y = (X[:, 1] > 0).astype(int)
    ds = D.Dataset("x.npz", "binary", X, y, ["0", "1"], ["a", "b"], list(range(1, 61)))
    parts = D.split_indices(ds, 0, 0.15, 0.2)
    ds.X[parts["test"][0], 0] = 1e39  # ... and put the huge value where only the test split sees it
    with pytest.raises(sg.SymgradError, match=rf"x.npz: row {parts['test'][0] + 1}: column 'a' holds 1e\+39, "
                       r".* beyond the range of float32"):
        D.prepare(ds, 0)
    D.prepare(ds, 0, dtype="float64")  # float64 holds it


def test_metrics_that_are_not_finite_are_written_as_null(tmp_path, monkeypatch):
    evaluate = Trainer.evaluate

    def overflowing_test(self, split, *args, **kwargs):
        result = evaluate(self, split, *args, **kwargs)
        return {**result, "loss": float("inf")} if split is self.data.test else result

    monkeypatch.setattr(Trainer, "evaluate", overflowing_test)
    with pytest.warns(sg.SymgradWarning, match=r"model.npz: test.loss=inf not finite, written as null"):
        result = sg.train("logistic_regression", epochs=1, out=tmp_path / "run", quiet=True)
    assert result.test["loss"] == float("inf")
    assert sg.load_trained(tmp_path / "run").meta["test"]["loss"] is None


# -- 3. GAN flags, validated as epoch training's -----------------------------------------------------------
@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "-1", "seed must be a non-negative integer, not -1"),
    ("--lr", "0", "learning rate must be a positive number, not 0.0"),
    ("--lr", "inf", "learning rate must be a positive number, not inf"),
    ("--batch-size", "0", "batch size must be a positive integer, not 0"),
])
def test_gan_flags_are_checked_as_epoch_training_checks_them(tmp_path, capsys, flag, value, message):
    code, _, lines = run(capsys, "train", "gan_ring", flag, value, "--out", tmp_path / "gan")
    assert len(lines) == 1, lines  # no learning-rate warning before the refusal
    gan = one_error(code, lines, message)
    code, _, lines = run(capsys, "train", "logistic_regression", flag, value, "--out", tmp_path / "lr")
    assert one_error(code, lines).split("error: ")[1] == gan.split("error: ")[1]
    assert not (tmp_path / "gan").exists() and not (tmp_path / "lr").exists()


def test_a_gan_that_fails_before_its_first_row_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import symgrad.generated.gan_ring as gan

    real = gan.loss_and_grad_L_G
    monkeypatch.setattr(gan, "loss_and_grad_L_G", lambda *a, **k: (float("nan"), real(*a, **k)[1]))
    code, _, lines = run(capsys, "train", "gan_ring", "--steps", 5, "--out", tmp_path / "gan")
    one_error(code, lines, "step 1: a loss is not finite",
              f"the run folder {tmp_path / 'gan'} held no results and was removed")
    assert not (tmp_path / "gan").exists()


def test_gan_steps_zero_is_refused(tmp_path, capsys):
    code, _, lines = run(capsys, "train", "gan_ring", "--steps", 0, "--out", tmp_path / "gan")
    one_error(code, lines, "steps must be a positive integer, not 0")


# -- 4. a model file that exits -----------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit(3)", "sys.exit('bye')", "exit()"])
def test_a_model_file_that_exits_is_refused(tmp_path, capsys, call):
    (tmp_path / "quits.py").write_text(f"import sys\n{call}\n")
    code, out, lines = run(capsys, "derive", tmp_path / "quits.py", "--out", tmp_path / "gen")
    one_error(code, lines, f"{tmp_path / 'quits.py'}:2: the model file called exit(")
    assert code == 1 and not (tmp_path / "gen").exists() and "wrote" not in out


def test_build_model_that_exits_is_refused(tmp_path, capsys):
    (tmp_path / "quits.py").write_text("import sys\ndef build_model():\n    sys.exit(0)\n")
    code, _, lines = run(capsys, "derive", tmp_path / "quits.py", "--out", tmp_path / "gen")
    one_error(code, lines, "build_model() called exit(0)")


def test_an_interrupt_in_a_model_file_stays_an_interrupt(tmp_path, capsys):
    (tmp_path / "stop.py").write_text("raise KeyboardInterrupt\n")
    code, _, lines = run(capsys, "derive", tmp_path / "stop.py", "--out", tmp_path / "gen")
    assert code == 130 and lines == ["symgrad derive: interrupted"]


# -- 5. leftovers and misleading messages -------------------------------------------------------------------
def test_nothing_is_left_in_the_temporary_folder(tmp_path, capsys, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (tmp_path / "model.py").write_text(MODEL_FILE.format(name="tiny"))
    module = sg.load_module(str(tmp_path / "model.py"))
    assert "def loss_and_grad" in module.__spec__.loader.get_source(module.__name__)
    code, _, lines = run(capsys, "train", tmp_path / "model.py", "--data", "breast_cancer", "--epochs", 1,
                         "--out", tmp_path / "run", "--quiet")
    assert code == 0, lines
    assert (tmp_path / "run" / "module.py").read_text().startswith("# symgrad-generated sha256:")
    code, _, lines = run(capsys, "train", "mlp_tanh", "--dropout", "0.1", "--epochs", 1,
                         "--out", tmp_path / "run2", "--quiet")
    assert code == 0, lines
    assert list(scratch.iterdir()) == []


def test_a_temporary_file_left_by_a_kill_is_removed_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "logistic_regression", "--epochs", 1, "--out", out, "--quiet")[0] == 0
    stale = out / ".checkpoint.npz.k3x_9q2a.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = out / ".notes.abcdefgh.tmp"  # not a run file's: not ours to remove
    mine.write_text("keep")
    code, _, lines = run(capsys, "train", "logistic_regression", "--resume", out, "--epochs", 2, "--quiet")
    assert code == 0, lines
    assert not stale.exists() and mine.exists()


def test_the_overwrite_guard_needs_symgrads_stamp_and_an_unchanged_body(tmp_path, capsys):
    gen = tmp_path / "gen"
    gen.mkdir()
    mine = gen / "logistic_regression.py"
    mine.write_text('"""My notes. Generated by symgrad, then rewritten by hand."""\n')
    code, _, lines = run(capsys, "derive", "logistic_regression", "--out", gen)
    one_error(code, lines, "refusing to overwrite", "not a module symgrad generated")
    assert mine.read_text().startswith('"""My notes.')
    mine.unlink()
    assert run(capsys, "derive", "logistic_regression", "--out", gen)[0] == 0
    assert check(mine.read_text()) is None
    assert run(capsys, "derive", "logistic_regression", "--out", gen)[0] == 0  # untouched: rewritten
    mine.write_text(mine.read_text() + "# my edit\n")
    code, _, lines = run(capsys, "derive", "logistic_regression", "--out", gen)
    one_error(code, lines, "it was edited since symgrad generated it")
    assert mine.read_text().endswith("# my edit\n")


def test_stamp_hashes_the_body():
    text = stamp("x = 1\n")
    assert check(text) is None
    assert check(text.replace("x = 1", "x = 2")) is not None
    assert check("# symgrad-generated sha256:" + "0" * 64 + "\nx = 1\n") is not None
    for kind in ("md", "html", "tex"):
        text = stamp("a document\n", kind)
        assert check(text, kind) is None
        assert check(text, "py") is not None and check(text.replace("a doc", "my doc"), kind) is not None


@pytest.mark.parametrize("fmt", ["md", "html", "tex"])
def test_the_document_overwrite_guard_needs_symgrads_stamp_and_an_unchanged_body(tmp_path, capsys, fmt):
    """`symgrad doc` looked for the words "Generated by symgrad" in a file's first 500
    characters: a file of one's own that says them was overwritten."""
    mine = tmp_path / f"linear_regression.{fmt}"
    notes = "<!-- Generated by symgrad 0.1.0. Do not edit. -->\n% Generated by symgrad\nMy own notes.\n"
    mine.write_text(notes)
    code, _, lines = run(capsys, "doc", "linear_regression", "--format", fmt, "--out", tmp_path)
    one_error(code, lines, f"refusing to overwrite {mine}", "not a document symgrad generated")
    assert mine.read_text() == notes
    mine.unlink()
    assert run(capsys, "doc", "linear_regression", "--format", fmt, "--out", tmp_path)[0] == 0
    assert check(mine.read_text(), fmt) is None
    assert run(capsys, "doc", "linear_regression", "--format", fmt, "--out", tmp_path)[0] == 0  # its own
    mine.write_text(mine.read_text() + "my edit\n")
    code, _, lines = run(capsys, "doc", "linear_regression", "--format", fmt, "--out", tmp_path)
    one_error(code, lines, "it was edited since symgrad generated it")
    assert mine.read_text().endswith("my edit\n")


@pytest.mark.parametrize("value, message", [
    ("mu", "expected NAME=NUMBER, got 'mu' (no '=' and value)"),
    ("=0.5", "expected NAME=NUMBER, got '=0.5' (no name)"),
    ("mu=fast", "expected NAME=NUMBER, got 'mu=fast'"),
])
def test_opt_without_a_value_says_so(capsys, value, message):
    code, _, lines = run(capsys, "train", "mlp_tanh", "--optimizer", "momentum", "--opt", value)
    assert code == 2
    one_error(code, lines, message)


@pytest.mark.parametrize("content", [b"garbage, not an archive", b"\x80\x04\x95junk pickle",
                                     b"PK\x03\x04trunc"])
def test_a_damaged_checkpoint_gets_no_pickle_advice(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(content)
    code, _, lines = run(capsys, "train", "logistic_regression", "--resume", out)
    line = one_error(code, lines, f"cannot read {out / 'checkpoint.npz'}")
    assert "allow_pickle" not in line and "pickle" not in line.replace(str(out), "")


def test_an_object_array_gets_no_pickle_advice(tmp_path):
    np.savez(tmp_path / "model.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(sg.SymgradError) as info:
        checkpoint.load(tmp_path / "model.npz")
    assert "pickle" not in str(info.value)


def test_resuming_with_fewer_epochs_than_trained_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "logistic_regression", "--epochs", 3, "--out", out, "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, lines = run(capsys, "train", "logistic_regression", "--resume", out, "--epochs", 2)
    one_error(code, lines, "cannot resume with epochs 2: the run has trained 3 epochs already")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
