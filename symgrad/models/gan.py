"""A generative adversarial network: generator G(z) and discriminator D(x) in one model.

Both players' losses are written as equations and each is differentiated w.r.t. its own
player's parameters only:

* the discriminator's cross-entropy, real samples labelled 1 and generated ones 0:
  L_D = mean(softplus(-D(x))) + mean(softplus(D(G(z)))), w.r.t. D's parameters;
* the non-saturating generator loss: L_G = mean(softplus(-D(G(z)))) = -mean(log sigma(D(G(z)))),
  w.r.t. G's parameters, through the discriminator.

softplus(-d) = -log sigma(d) keeps both stable for any logit. The model's `loss` is their sum
(so the module keeps the common contract); training alternates `loss_and_grad_L_D` and
`loss_and_grad_L_G`.
"""
from __future__ import annotations

from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Model


def gan(name: str = "gan_ring", data_dim: int = 2, noise_dim: int = 2, hidden: int = 64) -> Model:
    m = Model(name, f"GAN: a relu generator from {noise_dim}-d noise to {data_dim}-d samples and a "
                    "leaky-relu discriminator, with the discriminator's cross-entropy and the "
                    "non-saturating generator loss")
    (B,) = m.dims("B")
    n_h = m.dim("n_h", default=hidden)
    X = m.input("X", (B, data_dim))  # real samples
    Z = m.input("Z", (B, noise_dim))  # noise
    G = [m.param("Wg1", (noise_dim, n_h), "he_normal"), m.param("bg1", (n_h,), "zeros"),
         m.param("Wg2", (n_h, n_h), "he_normal"), m.param("bg2", (n_h,), "zeros"),
         m.param("Wg3", (n_h, data_dim)), m.param("bg3", (data_dim,), "zeros")]
    D = [m.param("Wd1", (data_dim, n_h), "he_normal"), m.param("bd1", (n_h,), "zeros"),
         m.param("Wd2", (n_h, n_h), "he_normal"), m.param("bd2", (n_h,), "zeros"),
         m.param("Wd3", (n_h, 1)), m.param("bd3", (1,), "zeros")]

    def generator(z):
        h = F.relu(z @ G[0] + G[1])
        h = F.relu(h @ G[2] + G[3])
        return h @ G[4] + G[5]

    def discriminator(x):
        h = F.leaky_relu(x @ D[0] + D[1], 0.2)
        h = F.leaky_relu(h @ D[2] + D[3], 0.2)
        return h @ D[4] + D[5]

    fake = m.output("fake", generator(Z))
    d_real = m.let("d_real", discriminator(X))
    d_fake = m.let("d_fake", discriminator(fake))
    L_D = m.objective(F.mean(F.softplus(-d_real)) + F.mean(F.softplus(d_fake)), "L_D", D)
    L_G = m.objective(F.mean(F.softplus(-d_fake)), "L_G", G)
    m.loss(L_D + L_G)
    return m
