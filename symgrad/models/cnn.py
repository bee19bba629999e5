"""A small convolutional network: conv -> relu -> max pool, twice, then a dense softmax layer.

Layout NHWC (batch, height, width, channels) with HWIO kernels: the batch leads like every
other input, channels sit last so that a convolution is one matrix product
im2col(X) (B*OH*OW, kh*kw*C) times K (kh*kw*C, O) with no transposes, and flattening before
the dense layer needs no reordering.
"""
from __future__ import annotations

from symgrad.models import labels
from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Init, Model


def cnn(image: int = 8, channels: tuple[int, int] = (16, 32), kernel: int = 3,
        name: str | None = None, sparse: bool = False) -> Model:
    """For square single-channel images of side `image` (8 for scikit-learn's digits)."""
    c1, c2 = channels
    m = Model(name or f"cnn{image}",
              f"convolutional network for {image}x{image} images: two conv-relu-maxpool blocks "
              f"({c1} and {c2} channels) and a dense softmax layer", task="multiclass")
    B, n_out = m.dims("B n_out")
    X = m.input("X", (B, image, image, 1))
    Y = labels.target(m, B, n_out, sparse)
    pad = kernel // 2
    bias = Init("constant", 0.01)
    K1, c1_ = m.param("K1", (kernel, kernel, 1, c1), "he_normal"), m.param("c1", (c1,), bias)
    K2, c2_ = m.param("K2", (kernel, kernel, c1, c2), "he_normal"), m.param("c2", (c2,), bias)
    a1 = m.let("a1", F.relu(F.conv2d(X, K1, padding=pad) + c1_))
    p1 = m.let("p1", F.max_pool2d(a1, 2))
    a2 = m.let("a2", F.relu(F.conv2d(p1, K2, padding=pad) + c2_))
    p2 = m.let("p2", F.max_pool2d(a2, 2))
    flat = F.flatten(p2)
    W, b = m.param("W", (flat.shape[1], n_out)), m.param("b", (n_out,), "zeros")
    z = m.let("z", flat @ W + b)
    m.output("P", F.softmax(z))
    m.loss(labels.loss(z, Y))
    return m
