"""Generated update modules of the optimizers in `training.optimizers`. Do not edit: `make
generate` writes them again; a test fails when one differs from the generator."""
