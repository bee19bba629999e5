"""symgrad's code generator: lower a derivation, fuse kernels, emit a numpy/numexpr module."""
