"""Training end to end with the committed generated modules."""
from __future__ import annotations

import numpy as np
import pytest

from symgrad import pipeline
from training.data import load_bundled, prepare
from training.loop import TrainConfig, Trainer


def test_demo_mlp_reaches_095_on_digits():
    module = pipeline.load_module("mlp_tanh")
    trainer = Trainer(module, prepare(load_bundled("digits"), seed=0),
                      TrainConfig(epochs=40, lr=0.1, batch_size=32, seed=0))
    history = trainer.fit()
    assert history[-1].train_loss < history[0].train_loss
    assert trainer.evaluate(trainer.data.test)["accuracy"] >= 0.95


def test_training_is_reproducible_for_a_seed():
    def final(seed):
        module = pipeline.load_module("softmax_regression")
        t = Trainer(module, prepare(load_bundled("iris"), seed=seed), TrainConfig(epochs=3, seed=seed))
        t.fit()
        return t.params

    a, b, c = final(3), final(3), final(4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["W"], c["W"])


def test_splits_are_disjoint_and_standardised_on_train_only():
    data = prepare(load_bundled("wine"), seed=1)
    assert len(data.train) + len(data.val) + len(data.test) == 178
    assert np.allclose(data.train.X.mean(axis=0), 0, atol=1e-12)
    assert not np.allclose(data.test.X.mean(axis=0), 0, atol=1e-3)
    assert np.allclose(data.train.Y.sum(axis=1), 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trainer_keeps_dtype(dtype):
    module = pipeline.load_module("logistic_regression")
    t = Trainer(module, prepare(load_bundled("breast_cancer"), seed=0), TrainConfig(epochs=1, dtype=dtype))
    t.fit()
    assert all(p.dtype == np.dtype(dtype) for p in t.params.values())
