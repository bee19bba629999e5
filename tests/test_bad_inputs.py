"""The bad-input corpus (tests/bad_inputs/, README there) end to end through the command line.

Every case must give exactly one line on stderr, naming what is wrong and where, a non-zero exit
status, no traceback, and leave nothing behind: no run folder, no generated module, no `*.tmp`.
The command runs in this process (`symgrad.cli.main`), so the whole corpus takes seconds.
"""
from __future__ import annotations

import pathlib

import pytest

from symgrad.cli import main as symgrad_main

CORPUS = pathlib.Path(__file__).resolve().parent / "bad_inputs"
DATA, MODELS = CORPUS / "data", CORPUS / "models"


def refused(capsys, tmp_path, *args) -> str:
    """Run `symgrad ARGS`; assert the refusal's form and that nothing was written; its line."""
    before = set(tmp_path.rglob("*"))
    try:
        code = symgrad_main([str(a).replace("{tmp}", str(tmp_path)) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code not in (0, None), (code, captured)
    assert len(lines) == 1, lines
    assert "Traceback" not in captured.err
    assert lines[0].startswith(f"symgrad {args[0]}: error: "), lines[0]
    assert set(tmp_path.rglob("*")) == before, "a file was left behind"
    return lines[0]


# -- data files -----------------------------------------------------------------------------------------
DATA_CASES = {
    "ragged.csv": "ragged.csv:6: 2 fields, but the file has 3 columns",
    "word.csv": "word.csv:8: column 'b' holds 'two', which is not a number",
    "nan.csv": "nan.csv:4: column 'a' holds nan, not a finite number",
    "inf.csv": "inf.csv:4: column 'b' holds -inf, not a finite number",
    "huge.csv": "huge.csv:10: column 'a' holds 1e+308, too large to standardise",
    "one_class.csv": "holds one class only ('0')",
    "header_only.csv": "header_only.csv:1: column 0 holds 'a', which is not a number",
    "empty.csv": "empty.csv holds no rows",
    "nul.csv": "nul.csv:5: column 'b' holds '\\x002.0', which is not a number",
    "latin1.csv": "cannot read",
    "text.npz": "text.npz: it is not an .npz archive of numeric arrays",
    "pickle.npz": "pickle.npz: it is not an .npz archive of numeric arrays",
    "truncated.npz": "truncated.npz: it is not an .npz archive of numeric arrays",
    "object.npz": "object.npz: it is not an .npz archive of numeric arrays",
    "complex.npz": "array 'X' holds complex128 values, not numbers",
    "rows_mismatch.npz": "array 'X' has 10 rows but 'y' has 9",
    "folder.csv": "folder.csv does not exist",
}


def test_every_corpus_data_file_has_a_case():
    assert {p.name for p in DATA.iterdir()} == set(DATA_CASES)


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_a_bad_data_file_is_one_line(capsys, tmp_path, name):
    line = refused(capsys, tmp_path, "train", "logistic_regression", "--data", DATA / name,
                   "--out", "{tmp}/run")
    assert DATA_CASES[name] in line
    assert "allow_pickle" not in line


# -- model files ----------------------------------------------------------------------------------------
MODEL_CASES = {
    "syntax.py": "syntax.py:1: syntax error: '(' was never closed",
    "raises.py": "raises.py:2: ValueError: the model file failed",
    "exits_zero.py": "exits_zero.py:2: the model file called exit(0) instead of defining `model`",
    "exits_code.py": "exits_code.py:2: the model file called exit(2)",
    "build_raises.py": "build_raises.py:2: ZeroDivisionError: division by zero",
    "build_exits.py": "build_exits.py:3: build_model() called exit(0) instead of returning a model",
    "missing_import.py": "missing_import.py:1: ModuleNotFoundError: No module named",
    "recursion.py": "recursion.py:2: RecursionError",
    "no_model.py": "no_model.py defines no model",
    "wrong_type.py": "wrong_type.py defines no model",
    "bad_name.py": "model name 'not a name' is not a valid Python identifier",
    "shape_error.py": "shape_error.py:6: matrix product of X (B, a), W (b, a): inner dims differ",
}


def test_every_corpus_model_file_has_a_case():
    assert {p.name for p in MODELS.iterdir()} == set(MODEL_CASES)


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_a_bad_model_file_is_one_line_in_derive(capsys, tmp_path, name):
    assert MODEL_CASES[name] in refused(capsys, tmp_path, "derive", MODELS / name, "--out", "{tmp}/gen")


@pytest.mark.parametrize("name", ["exits_zero.py", "raises.py", "syntax.py"])
def test_a_bad_model_file_is_one_line_in_train(capsys, tmp_path, name):
    line = refused(capsys, tmp_path, "train", MODELS / name, "--data", "breast_cancer", "--out", "{tmp}/run")
    assert MODEL_CASES[name] in line


# -- flags and numbers ----------------------------------------------------------------------------------
FLAG_CASES = [
    (["--lr", "nan"], "learning rate must be a positive number, not nan"),
    (["--lr", "1e400"], "learning rate must be a positive number, not inf"),
    (["--lr=-inf"], "learning rate must be a positive number, not -inf"),
    (["--epochs", "-1"], "epochs must be a positive integer, not -1"),
    (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["--batch-size", "0"], "batch size must be a positive integer, not 0"),
    (["--seed", "-1"], "seed must be a non-negative integer, not -1"),
    (["--patience", "-1"], "patience must be a positive integer, not -1"),
    (["--threads", "0"], "threads must be a positive integer, not 0"),
    (["--dim", "n_out=0"], "argument --dim: expected NAME=POSITIVE_INT, got 'n_out=0'"),
    (["--dim", "zz=3"], "model has no dim 'zz'"),
    (["--hyper", "x=nan"], "model hyper-parameter x must be a finite number, not nan"),
    (["--opt", "mu"], "argument --opt: expected NAME=NUMBER, got 'mu' (no '=' and value)"),
    (["--opt", "lr=inf"], "optimizer hyper-parameter lr must be a finite number, not inf"),
    (["--opt", "beta1=0.9"], "optimizer sgd has no hyper-parameter 'beta1'"),
    (["--clip-norm", "0"], "clip norm must be a positive number, not 0.0"),
    (["--clip-norm", "nan"], "clip norm must be a positive number, not nan"),
    (["--val-fraction", "1.5"], "the validation fraction must lie between 0 and 1, not 1.5"),
    (["--val-fraction", "nan"], "the validation fraction must lie between 0 and 1, not nan"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "leave no rows for training"),
    (["--dropout", "1"], "dropout must be in [0, 1), not 1.0"),
    (["--l2", "-1"], "l2 must be a non-negative number, not -1.0"),
    (["--l1", "inf"], "l1 must be a non-negative number, not inf"),
    (["--schedule", "bogus"], "unknown schedule 'bogus'"),
    (["--schedule", "step:every=0"], "schedule step: every must be a positive whole number, not 0"),
    (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["--optimizer", "bfgs"], "argument --optimizer: invalid choice: 'bfgs'"),
    (["--optimizer", "newton", "--batch-size", "16"], "--batch-size does not apply to optimizer newton"),
    (["--optimizer", "newton", "--opt", "damping=0"], "optimizer newton: damping must be a positive number"),
    (["--optimizer", "newton-cg", "--opt", "cg_iters=2.5"],
     "optimizer newton-cg: cg_iters must be a positive whole number, not 2.5"),
    (["--optimizer", "lbfgs", "--workers", "2"], "optimizer lbfgs trains in one process"),
    (["--steps", "5"], "--steps is for GANs; this model trains in --epochs"),
    (["--features", "0"], "--features and --target choose columns of a CSV or NPZ file"),
    (["--data", ""], "unknown data set ''"),
    (["--data", "x" * 300 + ".csv"], "File name too long"),
]


@pytest.mark.parametrize("flags, message", FLAG_CASES, ids=[" ".join(f)[:40] for f, _ in FLAG_CASES])
def test_a_bad_flag_is_one_line(capsys, tmp_path, flags, message):
    assert message in refused(capsys, tmp_path, "train", "logistic_regression", *flags, "--out", "{tmp}/run")


GAN_CASES = [
    (["--steps", "0"], "steps must be a positive integer, not 0"),
    (["--lr", "0"], "learning rate must be a positive number, not 0.0"),
    (["--batch-size", "0"], "batch size must be a positive integer, not 0"),
    (["--seed", "-1"], "seed must be a non-negative integer, not -1"),
    (["--epochs", "0"], "--epochs does not apply to GAN training"),
    (["--dropout", "0.1"], "--dropout does not apply to GAN training"),
    (["--data", "iris"], "GAN training uses the generated ring of 8 Gaussians"),
    (["--threads", "0"], "threads must be a positive integer, not 0"),
]


@pytest.mark.parametrize("flags, message", GAN_CASES, ids=[" ".join(f) for f, _ in GAN_CASES])
def test_a_bad_gan_flag_is_one_line(capsys, tmp_path, flags, message):
    assert message in refused(capsys, tmp_path, "train", "gan_ring", *flags, "--out", "{tmp}/run")


# -- names and places -----------------------------------------------------------------------------------
def test_names_and_places(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        (["train", "x" * 300], "unknown model"),
        (["train", "logistic_regression", "--out", "{tmp}/file"], "{tmp}/file is a file, not a run folder"),
        (["train", "logistic_regression", "--out", "{tmp}/file/sub"], "cannot create run folder"),
        (["train", "logistic_regression", "--out", "{tmp}/" + "o" * 300], "File name too long"),
        (["train", "gan_ring", "--out", "{tmp}/file"], "{tmp}/file is a file, not a run folder"),
        (["train", "logistic_regression", "--resume", "{tmp}/file"], "is not a folder"),
        (["train", "logistic_regression", "--resume", "{tmp}"], "holds no checkpoint.npz"),
        (["train", "logistic_regression", "--resume", "{tmp}/a", "--out", "{tmp}/b"], "not both"),
        (["derive", "mlp_tanh", "--out", "{tmp}/file"], "cannot create output folder"),
        (["derive", "no_such_model"], "unknown model 'no_such_model'"),
        (["derive", "{tmp}/missing.py"], "does not exist"),
        (["export", "{tmp}"], "model.npz does not exist"),
        (["sample", "{tmp}"], "model.npz does not exist"),
        (["predict", "{tmp}", "--data", DATA / "ragged.csv"], "model.npz does not exist"),
    ]
    for args, message in cases:
        line = refused(capsys, tmp_path, *args)
        assert message.replace("{tmp}", str(tmp_path)) in line, (args, line)


def test_damaged_run_files(capsys, tmp_path):
    """A run folder whose checkpoint or model is garbage: one line, no pickle advice."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.npz", "model.npz"):
        (run / name).write_bytes((DATA / "pickle.npz").read_bytes())
    for args in (["train", "logistic_regression", "--resume", run], ["export", run], ["sample", run],
                 ["predict", run, "--data", DATA / "ragged.csv"]):
        line = refused(capsys, tmp_path, *args)
        assert "it is not an .npz archive of numeric arrays" in line and "allow_pickle" not in line, line
