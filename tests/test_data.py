"""Data for training: bundled sets, the user's CSV and NPZ files, splits, standardisation,
targets and batches; every mistake in a file is one clear error naming file, line and column."""
from __future__ import annotations

import numpy as np
import pytest
from symgrad.symbolic.errors import SymgradError
from symgrad.training import data as D
from symgrad.training import files


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


IRIS_CSV = """sepal_length,sepal_width,petal_length,petal_width,species
5.1,3.5,1.4,0.2,setosa
4.9,3.0,1.4,0.2,setosa
7.0,3.2,4.7,1.4,versicolor
6.4,3.2,4.5,1.5,versicolor
6.3,3.3,6.0,2.5,virginica
5.8,2.7,5.1,1.9,virginica
"""


# -- bundled data sets ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, task, shape, classes", [
    ("digits", "multiclass", (1797, 64), 10), ("iris", "multiclass", (150, 4), 3),
    ("wine", "multiclass", (178, 13), 3), ("breast_cancer", "binary", (569, 30), 2),
    ("diabetes", "regression", (442, 10), None),
])
def test_bundled_data_sets_load_without_network(name, task, shape, classes):
    ds = D.load(name)
    assert (ds.task, ds.X.shape, ds.n_classes) == (task, shape, classes)
    assert ds.X.dtype == np.float64 and len(ds.feature_names) == shape[1]
    if classes:
        assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(classes))
    else:
        assert ds.y.shape == (shape[0], 1)


def test_unknown_data_set_and_columns_of_a_bundled_set_are_errors():
    with pytest.raises(SymgradError, match="unknown data set 'mnist'; bundled ones are digits"):
        D.load("mnist")
    with pytest.raises(SymgradError, match="choose columns of a CSV or NPZ file; 'iris' is a bundled"):
        D.load("iris", features="0,1")


# -- CSV ------------------------------------------------------------------------------------------
def test_csv_with_header_word_labels_and_default_columns(tmp_path):
    ds = D.load(write(tmp_path, "iris.csv", IRIS_CSV), "multiclass")
    assert ds.X.shape == (6, 4) and ds.feature_names[0] == "sepal_length"
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    assert ds.y.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(ds.X[2], [7.0, 3.2, 4.7, 1.4])


def test_csv_columns_by_name_index_and_range(tmp_path):
    path = write(tmp_path, "iris.csv", IRIS_CSV)
    by_name = files.read(path, "petal_length,sepal_length", "species")
    assert by_name.feature_names == ["petal_length", "sepal_length"]
    np.testing.assert_array_equal(by_name.X[0], [1.4, 5.1])
    by_range = files.read(path, "0:3", "-1")
    assert by_range.feature_names == ["sepal_length", "sepal_width", "petal_length"]
    assert files.read(path, "1,3", "4").feature_names == ["sepal_width", "petal_width"]


def test_csv_without_header_semicolons_and_a_numeric_regression_target(tmp_path):
    path = write(tmp_path, "r.csv", "1;2;3.5\n4;5;6.5\n7;8;9.5\n")
    ds = D.load(path, "regression", target="0")
    assert ds.feature_names == ["1", "2"]
    np.testing.assert_array_equal(ds.y[:, 0], [1, 4, 7])
    np.testing.assert_array_equal(ds.X, [[2, 3.5], [5, 6.5], [8, 9.5]])


def test_csv_numeric_binary_labels_and_several_regression_targets(tmp_path):
    path = write(tmp_path, "b.csv", "a,b,y\n1,2,-1\n3,4,1\n5,6,-1\n")
    ds = D.load(path, "binary")
    assert ds.classes == ["-1", "1"] and ds.y.tolist() == [0, 1, 0]
    reg = D.load(path, "regression", features="a", target="b,y")
    assert reg.y.shape == (3, 2)


@pytest.mark.parametrize("text, flags, message", [
    ("a,b,y\n1,2,0\n3,x,1\n", {}, r"bad.csv:3: column 'b' holds 'x', which is not a number"),
    ("a,b,y\n1,2,0\n3,,1\n", {}, r"bad.csv:3: column 'b' is empty"),
    ("a,b,y\n1,2,0\n3,4\n", {}, r"bad.csv:3: 2 fields, but the file has 3 columns"),
    ("a,b,y\n1,2,0\n3,inf,1\n", {}, r"bad.csv:3: column 'b' holds inf, not a finite number"),
    ("a,b,y\n1,2,0\n3,4,1\n", {"target": "z"}, r"--target: .* has no column 'z'; its columns are a, b, y"),
    ("a,b,y\n1,2,0\n3,4,1\n", {"features": "7"}, r"--features: column 7 is out of range; .* has 3 columns"),
    ("a,b,y\n1,2,0\n3,4,1\n", {"features": "a,y"}, r"column 'y' is both a feature and the target"),
    ("a,b,y\n1,2,0\n3,4,1\n", {"features": "a,0"}, r"names a column twice"),
    ("a,a,y\n1,2,0\n3,4,1\n", {}, r"bad.csv:1: column name 'a' appears twice"),
    ("a,b,y\n1,2,0.5\n3,4,1\n", {}, r"target y holds 0.5, but a multiclass model needs class labels"),
    ("a,b,y\n1,2,0\n3,4,0\n", {}, r"holds one class only \('0'\)"),
    ("", {}, r"bad.csv holds no rows"),
])
def test_csv_mistakes_are_one_clear_error(tmp_path, text, flags, message):
    with pytest.raises(SymgradError, match=message):
        D.load(write(tmp_path, "bad.csv", text), "multiclass", **flags)


def test_binary_model_needs_two_classes_and_regression_needs_numbers(tmp_path):
    path = write(tmp_path, "iris.csv", IRIS_CSV)
    with pytest.raises(SymgradError, match="holds 3 classes, but a binary model needs exactly two"):
        D.load(path, "binary")
    with pytest.raises(SymgradError, match="holds words, but a regression model needs numbers"):
        D.load(path, "regression")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(SymgradError, match="data file .*nope.csv does not exist"):
        D.load(str(tmp_path / "nope.csv"), "multiclass")
    with pytest.raises(SymgradError, match="unknown data set 'data.parquet'"):
        D.load("data.parquet", "multiclass")
    with pytest.raises(SymgradError, match="model declares no task"):
        D.load(write(tmp_path, "a.csv", IRIS_CSV))


# -- NPZ ------------------------------------------------------------------------------------------
def test_npz_named_arrays_default_and_chosen_keys(tmp_path):
    X, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 2, 1])
    np.savez(tmp_path / "a.npz", X=X, y=y, other=np.ones(4))
    ds = D.load(str(tmp_path / "a.npz"), "multiclass")
    np.testing.assert_array_equal(ds.X, X)
    assert ds.y.tolist() == [0, 1, 2, 1]
    np.savez(tmp_path / "b.npz", images=X.reshape(4, 3, 1), labels_onehot=np.eye(3)[y])
    ds = D.load(str(tmp_path / "b.npz"), "multiclass", features="images", target="labels_onehot")
    assert ds.X.shape == (4, 3) and ds.y.tolist() == [0, 1, 2, 1]


def test_npz_single_table_uses_columns(tmp_path):
    table = np.c_[np.arange(10.0).reshape(5, 2), [0, 1, 0, 1, 1]]
    np.savez(tmp_path / "t.npz", table)
    ds = D.load(str(tmp_path / "t.npz"), "binary", features="0:2", target="2")
    assert ds.X.shape == (5, 2) and ds.y.tolist() == [0, 1, 0, 1, 1]


@pytest.mark.parametrize("arrays, flags, message", [
    ({"a": np.ones((3, 2)), "b": np.ones(3)}, {},
     r"has no array 'X' for the features and no array 'y' for the target; its arrays are a, b"),
    ({"X": np.ones((3, 2)), "y": np.ones(4)}, {}, r"array 'X' has 3 rows but 'y' has 4"),
    ({"X": np.array([["a", "b"]] * 3), "y": np.ones(3)}, {}, r"array 'X' holds <U1 values, not numbers"),
    ({"X": np.ones((3, 2)), "y": np.ones(3)}, {"target": "t"},
     r"has no array 't' for the target; its arrays are X, y"),
])
def test_npz_mistakes_are_one_clear_error(tmp_path, arrays, flags, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SymgradError, match=message):
        D.load(str(tmp_path / "bad.npz"), "regression", **flags)


def test_npz_that_is_not_an_archive(tmp_path):
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(SymgradError, match="cannot read .*x.npz"):
        D.load(str(tmp_path / "x.npz"), "regression")


# -- splits, standardisation, targets, batches ----------------------------------------------------
def test_splits_are_disjoint_complete_stratified_and_seeded():
    ds = D.load("digits")
    parts = D.split_indices(ds, 0, 0.15, 0.2)
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything.tolist()) == list(range(len(ds.X)))
    assert abs(len(parts["test"]) - 0.2 * len(ds.X)) <= 10
    share = np.bincount(ds.y) / len(ds.y)
    for idx in parts.values():
        np.testing.assert_allclose(np.bincount(ds.y[idx], minlength=10) / len(idx), share, atol=0.01)
    again, other = D.split_indices(ds, 0, 0.15, 0.2), D.split_indices(ds, 1, 0.15, 0.2)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


def test_regression_split_is_stratified_by_target_quintile():
    ds = D.load("diabetes")
    parts = D.split_indices(ds, 0, 0.15, 0.2)
    edges = np.quantile(ds.y[:, 0], [0.2, 0.4, 0.6, 0.8])
    counts = np.bincount(np.searchsorted(edges, ds.y[parts["test"], 0], side="right"), minlength=5)
    assert counts.min() >= 16 and counts.max() <= 19  # 88 test rows, about 17.6 per quintile


def test_standardised_on_training_rows_only_and_targets_encoded():
    data = D.prepare(D.load("wine"), seed=1)
    assert len(data.train) + len(data.val) + len(data.test) == 178
    np.testing.assert_allclose(data.train.X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.train.X.std(axis=0), 1, atol=1e-12)
    assert not np.allclose(data.test.X.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_array_equal(data.train.Y.argmax(axis=1), data.train.labels)
    assert data.train.Y.shape[1] == 3 and np.all(data.train.Y.sum(axis=1) == 1)
    reg = D.prepare(D.load("diabetes"), seed=0)
    np.testing.assert_allclose(reg.train.Y.mean(axis=0), 0, atol=1e-12)
    assert reg.y_mean is not None and reg.y_std[0] > 1
    binary = D.prepare(D.load("breast_cancer"), seed=0)
    assert binary.train.Y.shape[1] == 1 and set(np.unique(binary.train.Y)) == {0.0, 1.0}


def test_constant_columns_stay_finite():
    data = D.prepare(D.load("digits"), seed=0)  # the border pixels of digits are always 0
    assert np.isfinite(data.train.X).all() and np.isfinite(data.test.X).all()


@pytest.mark.parametrize("val, test, message", [
    (0.0, 0.2, "validation fraction must lie between 0 and 1"),
    (0.5, 0.5, "leave no rows for training"),
    (0.15, 1.2, "test fraction must lie between 0 and 1"),
])
def test_bad_fractions(val, test, message):
    with pytest.raises(SymgradError, match=message):
        D.prepare(D.load("iris"), 0, val, test)


def test_too_few_rows_to_split(tmp_path):
    path = write(tmp_path, "tiny.csv", "a,y\n1,0\n2,1\n")
    with pytest.raises(SymgradError, match="too few rows"):
        D.prepare(D.load(path, "binary"), 0)


def test_batches_cover_every_row_once_with_a_last_partial_batch():
    rng = np.random.default_rng(0)
    got = list(D.batches(10, 4, rng))
    assert [len(b) for b in got] == [4, 4, 2]
    assert sorted(np.concatenate(got).tolist()) == list(range(10))
    again = list(D.batches(10, 4, np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for a, b in zip(got, again, strict=True))
    assert not np.array_equal(np.concatenate(got), np.concatenate(list(D.batches(10, 4, rng))))
