"""Training with generated modules: data, optimizers (derived update kernels), the loop."""
