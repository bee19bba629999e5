"""GANs: each player's objective differentiated w.r.t. its own parameters, through the other
network; alternating training on the ring of 8 Gaussians."""
from __future__ import annotations

import numpy as np
import pytest
from symgrad.training import gan

from tests.conftest import built, torch_or_skip
from tests.oracle import Interpreter, finite_differences


def _setup(seed=0):
    model, _, mod = built("gan_ring", "auto")
    rng = np.random.default_rng(seed)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in
              mod.init_params({"n_h": 5}, seed=seed, dtype=np.float64).items()}
    batch = {"X": rng.standard_normal((6, 2)), "Z": rng.standard_normal((6, 2))}
    return model, mod, params, batch


@pytest.mark.parametrize("objective", ["L_D", "L_G"])
def test_each_player_gets_its_own_gradient(objective):
    model, mod, params, batch = _setup()
    loss, grads = getattr(mod, f"loss_and_grad_{objective}")(params, batch)
    assert set(grads) == set(mod.OBJECTIVES[objective])
    group = {k: params[k] for k in grads}

    def value(p):
        leaves = {**params, **p, **batch}
        (v,) = Interpreter("numpy").evaluate([model.loss_nodes[objective]], leaves, {"B": 6, "n_h": 5})
        return float(v)

    assert loss == pytest.approx(value(group), rel=1e-12)
    fd = finite_differences(value, group)
    for k in grads:
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_generator_gradient_flows_through_the_discriminator_like_pytorch():
    torch = torch_or_skip()
    model, mod, params, batch = _setup(3)
    _, grads = mod.loss_and_grad_L_G(params, batch)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    nnf = torch.nn.functional
    z, x = torch.tensor(batch["Z"]), torch.tensor(batch["X"])
    fake = nnf.relu(nnf.relu(z @ t["Wg1"] + t["bg1"]) @ t["Wg2"] + t["bg2"]) @ t["Wg3"] + t["bg3"]

    def D(v):
        h = nnf.leaky_relu(v @ t["Wd1"] + t["bd1"], 0.2)
        return nnf.leaky_relu(h @ t["Wd2"] + t["bd2"], 0.2) @ t["Wd3"] + t["bd3"]

    # non-saturating generator loss: -log sigma(D(G(z)))
    nnf.binary_cross_entropy_with_logits(D(fake), torch.ones(6, 1)).backward()
    for k in mod.OBJECTIVES["L_G"]:
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
    for k in t:
        t[k].grad = None
    loss_d, grads_d = mod.loss_and_grad_L_D(params, batch)
    real_d, fake_d = D(x), D(fake.detach())
    tl = (nnf.binary_cross_entropy_with_logits(real_d, torch.ones(6, 1))
          + nnf.binary_cross_entropy_with_logits(fake_d, torch.zeros(6, 1)))
    tl.backward()
    assert loss_d == pytest.approx(tl.item(), rel=1e-12)
    for k in mod.OBJECTIVES["L_D"]:
        np.testing.assert_allclose(grads_d[k], t[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_quality_measures():
    rng = np.random.default_rng(0)
    assert gan.quality(gan.ring(2500, rng)) == (8, pytest.approx(1.0, abs=0.01))
    one_mode = gan.ring_centers()[[0]] + 0.02 * rng.standard_normal((2500, 2))
    assert gan.quality(one_mode)[0] == 1
    assert gan.quality(rng.uniform(-3, 3, (2500, 2)))[1] < 0.05


# The full default run (seed 0, 12000 steps) and its figures: tests/test_readme.py.


def test_gan_training_refuses_bad_settings(tmp_path):
    from symgrad.symbolic.errors import SymgradError

    _, _, mod = built("gan_ring", "auto")
    with pytest.raises(SymgradError, match="learning rate must be a positive number"):
        gan.train_gan(mod, lr=-1, out=tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(SymgradError, match="is not empty"):
        gan.train_gan(mod, steps=2, out=tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "x"
    _, _, mlp = built("mlp_tanh", "auto")
    with pytest.raises(SymgradError, match="needs objectives L_D"):
        gan.train_gan(mlp, steps=2, out=tmp_path / "c")
