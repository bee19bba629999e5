"""Memory a generated call takes beyond what it returns. Large temporaries live in the
workspace kept across calls: fresh ones are handed back to the system when they are freed and
faulted in again on the next call (700-900 page faults an LSTM hvp before this was measured).
The sizes come from tracemalloc, not from timing; the other tests check the generated lines
that keep each kind of temporary out of fresh memory."""
from __future__ import annotations

import importlib
import inspect
import re
import tracemalloc

import numpy as np
import pytest

from symgrad.models import BUILTINS
from tests.oracle import jiggle, random_batch

GENERATED = [f"symgrad.generated.{name}" for name in BUILTINS]


def _fresh_bytes(call) -> int:
    """Peak traced memory of one call, less what it still holds when it returns (its results)."""
    call()  # the first call fills the workspace
    tracemalloc.start()
    try:
        result = call()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak - current


def _inputs(name: str, batch: int):
    module = importlib.import_module(f"symgrad.generated.{name}")
    dims = {"n_in": 64, "n_out": 10, **module.DEFAULT_DIMS, "B": batch}  # digits-sized
    rng = np.random.default_rng(0)
    params = jiggle(module.init_params(dims, seed=0, dtype=np.float64), rng)
    vector = {k: rng.standard_normal(p.shape) for k, p in params.items()}
    return module, dims, params, random_batch(module, dims, rng), vector


@pytest.mark.parametrize("function", ["hvp", "loss_and_grad"])
def test_lstm_takes_less_than_one_gate_sequence_of_fresh_memory(function):
    """Before: 4.2 MiB (hvp) and 1.9 MiB (loss_and_grad) a call at B = 64, n_h = 64, mostly
    copies of (B, 8, 4 n_h) sequences reshaped through batch-major views; now under 0.5 MiB."""
    module, dims, params, batch, vector = _inputs("lstm_digits", 64)
    args = (params, batch, vector) if function == "hvp" else (params, batch)
    fresh = _fresh_bytes(lambda: getattr(module, function)(*args))
    gates = 64 * 8 * 4 * dims["n_h"] * 8  # one (B, 8, 4 n_h) float64 array
    assert fresh < gates, f"{function} took {fresh} bytes of fresh memory a call"


def test_dense_hvp_keeps_its_temporaries_in_the_workspace():
    """The digits MLP's hvp took 0.7 MiB a call beyond its results (64 KiB (B, n_h1) arrays),
    80 page faults a call; now less than one such array."""
    module, dims, params, batch, vector = _inputs("mlp_tanh", 64)
    fresh = _fresh_bytes(lambda: module.hvp(params, batch, vector))
    assert fresh < 64 * dims["n_h1"] * 8, f"hvp took {fresh} bytes of fresh memory a call"


def _source(path: str) -> str:
    return inspect.getsource(importlib.import_module(path))


@pytest.mark.parametrize("path", GENERATED)
def test_no_sequence_is_reshaped_or_summed_through_a_strided_view(path):
    """A batch-major view of a step-major sequence, or a reversed one, reshaped to rows is
    copied into the workspace first (`np.copyto`); a column sum reads the sequence itself."""
    source = _source(path)
    merged = r"\.reshape\([^,()]*\*[^,()]*, "  # a reshape whose first axis is a product: (8*B, ...)
    assert not re.search(r"(\.swapaxes\(0, 1\)|::-1\])(\[[^\]]*\])*" + merged, source)
    assert not re.search(r"_colsum\([^)]*(swapaxes|::-1)", source)


def test_loop_steps_write_products_into_arrays_made_before_the_loop():
    """In the LSTM's hvp no step allocates a product it does not carry to the next step (a
    (B, 4 n_h) product a step is 128 KiB), and no step adds a carry that is always zero."""
    source = inspect.getsource(importlib.import_module("symgrad.generated.lstm_digits").hvp)
    lines = source.splitlines()
    bodies = [line for k, line in enumerate(lines) if line.startswith(" " * 8)
              and any(before.strip().startswith("for t in range") for before in lines[:k])]
    fresh = [m[1] for line in bodies if (m := re.match(r"\s*(\w+) = .*\.dot\(", line))]
    carried = {m[1] for line in bodies if (m := re.match(r"\s*\w+ = (\w+)$", line))}
    assert bodies and set(fresh) <= carried, set(fresh) - carried
    assert "[...] = 0.0" not in source


def test_hvp_pads_and_joins_sequences_in_the_workspace():
    source = inspect.getsource(importlib.import_module("symgrad.generated.lstm_digits").hvp)
    assert "np.pad(" not in source
    joins = re.findall(r"np\.concatenate\(\s*\[(?:[^\[\]]|\[[^\[\]]*\])*\],\s*axis=\d(.*?)\)", source, re.S)
    assert joins and all("out=" in rest for rest in joins), joins


def test_stored_sequences_are_products_operands_in_place():
    """A product over the (batch, step) rows of a loop's sequence reads it as the loop stored
    it (step-major, a reversed one included): only the narrow operand it is paired with (an
    input X, a joined state sequence) is copied, never a (B, T, 4 n_h) gate sequence."""
    source = _source("symgrad.generated.lstm_digits")
    assert "d_lstm_u1_seq.reshape(8*B, 4*n_h)" in source
    assert not re.search(r"np\.copyto\(\w+\.reshape\([^)]*4\*n_h\)", source)


@pytest.mark.parametrize("path", GENERATED)
def test_loop_steps_index_reversed_sequences_directly(path):
    """A step of a sequence reversed in time is one index (x[7 - t]), not three views a step."""
    assert "[:, ::-1][:, t]" not in _source(path)
