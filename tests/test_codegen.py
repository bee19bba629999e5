"""Generated code is product code: fresh, deterministic, ruff-clean, injection-proof, atomic."""
from __future__ import annotations

import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from symgrad.codegen.emit import generate, generate_update, write_module
from symgrad.symbolic.errors import ModelError, SymgradError
from symgrad.training.optimizers import OPTIMIZERS

import symgrad as sg
from symgrad.models import BUILTINS

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(BUILTINS))
def test_committed_model_module_is_fresh(name):
    committed = (ROOT / "generated" / f"{name}.py").read_text()
    assert committed == generate(sg.derive(BUILTINS[name].build())), \
        f"generated/{name}.py is stale: run `make generate`"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_committed_optimizer_module_is_fresh(name):
    committed = (ROOT / "training" / "kernels" / f"{name}.py").read_text()
    assert committed == generate_update(OPTIMIZERS[name]()), \
        f"training/kernels/{name}.py is stale: run `make generate`"


def test_no_stray_generated_modules():
    names = {p.stem for p in (ROOT / "generated").glob("*.py")} - {"__init__"}
    assert names == set(BUILTINS)


@pytest.mark.parametrize("backend", sg.BACKENDS)
def test_generation_is_byte_identical_across_processes(backend, tmp_path):
    """A fresh interpreter (new hash seeds, new sympy caches) writes the same bytes."""
    script = ("import sys, symgrad as sg\n"
              f"sys.stdout.write(sg.generate(sg.derive(sg.BUILTINS['mlp_relu'].build()), {backend!r}))")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    a = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    env["PYTHONHASHSEED"] = "999"
    b = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout == generate(sg.derive(BUILTINS["mlp_relu"].build()), backend)


def test_generated_code_passes_ruff(tmp_path):
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).with_name("ruff"))
    for backend in sg.BACKENDS:
        for name in BUILTINS:
            write_module(generate(sg.derive(BUILTINS[name].build()), backend), tmp_path, f"{name}_{backend}")
    for name in OPTIMIZERS:
        write_module(generate_update(OPTIMIZERS[name]()), tmp_path, f"opt_{name}")
    result = subprocess.run([ruff, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                             str(tmp_path), str(ROOT / "generated"), str(ROOT / "training" / "kernels")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_module_imports_only_numpy_numexpr_and_stdlib():
    import ast

    for path in list((ROOT / "generated").glob("*.py")) + list((ROOT / "training" / "kernels").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module.split(".")[0]]
            else:
                continue
            for n in names:
                assert n in {"numpy", "numexpr", "collections", "__future__"}, (path.name, n)


def test_numpy_backend_module_does_not_import_numexpr():
    src = generate(sg.derive(BUILTINS["mlp_tanh"].build()), "numpy")
    assert "numexpr" not in src and not re.search(r"\bne\.", src)  # prose may end a word in "ne."


def test_header_names_version_and_spec_hash():
    model = BUILTINS["mlp_tanh"].build()
    src = generate(sg.derive(model))
    assert f"symgrad {sg.__version__}" in src and model.spec_hash() in src
    other = BUILTINS["mlp_relu"].build()
    assert other.spec_hash() != model.spec_hash()


@pytest.mark.parametrize("evil", [
    'W"""; import os; os.system("echo pwned"); """', "W\nimport os", "__import__('os')", "W = 1",
])
def test_names_cannot_inject_code(evil):
    m = sg.Model("safe")
    (n,) = m.dims("n")
    with pytest.raises(ModelError):
        m.param(evil, (n,))
    with pytest.raises(ModelError):
        sg.Model(evil)


def test_description_cannot_break_out_of_the_docstring(tmp_path):
    m = sg.Model("described", description='ends """ here; import os \\ and more')
    B, n = m.dims("B n")
    X, W = m.input("X", (B, n)), m.param("W", (n,))
    m.loss(sg.sum(sg.square(X @ W)))
    src = generate(sg.derive(m))
    path = write_module(src, tmp_path, "described")
    spec = importlib.util.spec_from_file_location("described_mod", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "import os" in mod.__doc__ and not hasattr(mod, "os")


def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = sg.write("linear_regression", tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("derivation failed")

    monkeypatch.setattr("symgrad.pipeline.generate", boom)
    with pytest.raises(RuntimeError):
        sg.write("linear_regression", tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["linear_regression.py"]  # no temp files left


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(SymgradError, match="cannot create output folder"):
        sg.write("linear_regression", target / "sub")


def test_program_reuses_forward_values_and_fuses_kernels():
    src = generate(sg.derive(BUILTINS["mlp_tanh"].build()))
    body = src.split("def loss_and_grad(")[1]
    assert body.count("np.tanh") == 0  # tanh lives in a fused kernel, called once per layer
    assert body.count("_ew") >= 4
    assert "h1.T @ dL_dz2" in body and "X.T @ dL_dz1" in body  # names from the math, BLAS products
    assert "1 - h1**2" in body  # the backward uses the kept forward value h1 (tanh' = 1 - tanh^2)


def _run_twice(module, dims, seed):
    """Two calls with different parameters and batches; the first call's results, and a copy."""
    import numpy as np

    from tests.oracle import random_batch, run_kwargs

    rng = np.random.default_rng(seed)
    calls = []
    for k in range(2):
        params = module.init_params(dims, seed=seed + k, dtype=np.float64)
        batch = random_batch(module, dims, rng)
        kw = run_kwargs(module, dims)
        calls.append((params, batch, kw))
    return calls


@pytest.mark.parametrize("name", list(BUILTINS))
def test_results_do_not_share_memory_with_a_later_call(name):
    """Large temporaries live in a workspace kept across calls: nothing returned may be one."""
    import numpy as np

    from tests.conftest import built

    _, _, module = built(name, "auto")
    dims = {d: 3 for d in module.DIMS}
    (p1, b1, kw1), (p2, b2, kw2) = _run_twice(module, dims, seed=4)
    loss, grads = module.loss_and_grad(p1, b1, **kw1)
    outputs = module.forward(p1, {k: v for k, v in b1.items() if k not in module.TARGETS}, **kw1)
    kept = {k: v.copy() for k, v in grads.items()} | {f"out:{k}": v.copy() for k, v in outputs.items()}
    module.loss_and_grad(p2, b2, **kw2)
    module.forward(p2, {k: v for k, v in b2.items() if k not in module.TARGETS}, **kw2)
    for k, v in grads.items():
        np.testing.assert_array_equal(v, kept[k], err_msg=k)
    for k, v in outputs.items():
        np.testing.assert_array_equal(v, kept[f"out:{k}"], err_msg=k)
    assert module.loss_and_grad(p1, b1, **kw1)[0] == loss


def test_concurrent_calls_each_get_their_own_workspace():
    import threading

    import numpy as np

    from tests.conftest import built

    _, _, module = built("cnn_digits", "auto")
    assert "_take_workspace(" in (ROOT / "generated" / "cnn_digits.py").read_text()
    dims = {"B": 16, "n_out": 10}
    calls = [call for seed in range(4) for call in _run_twice(module, dims, seed)]
    want = [module.loss_and_grad(p, b, **kw) for p, b, kw in calls]
    got = [None] * len(calls)

    def work(i):
        for _ in range(5):
            got[i] = module.loss_and_grad(*calls[i][:2], **calls[i][2])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (l_want, g_want), (l_got, g_got) in zip(want, got, strict=True):
        assert l_got == l_want
        for k in g_want:
            np.testing.assert_array_equal(g_got[k], g_want[k])


def test_small_dense_models_allocate_as_before():
    """Workspaces are for large temporaries (images, patch matrices): a dense model's forward
    pass and gradient, whose sizes are all dims, pay no per-call bookkeeping. Its hvp keeps
    every temporary of two axes there: about twice as many of them are alive at once, and
    freeing them made glibc hand the heap's top back to the system every call."""
    import inspect

    from symgrad.generated import mlp_tanh

    for function in (mlp_tanh.forward, mlp_tanh.loss, mlp_tanh.loss_and_grad):
        assert "_take_workspace" not in inspect.getsource(function), function.__name__
    hvp = inspect.getsource(mlp_tanh.hvp)
    assert '_take_workspace("hvp")' in hvp and "np.empty(" not in hvp


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sums_as_blas_products_match_numpy(dtype):
    """_rowsum and _colsum (sums as a product with cached ones) give numpy's sums, any rank."""
    import numpy as np
    from symgrad.codegen.lowering import HELPERS

    env = {"np": np}
    for name in ("_ones", "_colsum", "_rowsum"):
        exec(HELPERS[name], env)
    rng = np.random.default_rng(0)
    for shape in [(5,), (7, 3), (2, 4, 6), (3, 1, 2, 5)]:
        x = rng.standard_normal(shape).astype(dtype)
        tol = {"rtol": 1e-5 if dtype == "float32" else 1e-12}
        for keepdims in (False, True):
            got = env["_rowsum"](x, keepdims=keepdims)
            assert got.shape == x.sum(axis=-1, keepdims=keepdims).shape and got.dtype == x.dtype
            np.testing.assert_allclose(got, x.sum(axis=-1, keepdims=keepdims), **tol)
        if x.ndim > 1:
            np.testing.assert_allclose(env["_colsum"](x), x.reshape(-1, shape[-1]).sum(axis=0), **tol)
    ones = env["_ones"](4, np.dtype(dtype))
    assert not ones.flags.writeable and env["_ones"](4, np.dtype(dtype)) is ones  # shared, so read-only
    body = (ROOT / "generated" / "mlp_tanh.py").read_text().split("def hvp(")[1]
    assert "_rowsum(Y, keepdims=True)" in body  # the row sum of the cross-entropy's adjoint


def test_softmax_cross_entropy_and_its_adjoint_are_one_helper_call():
    """loss_and_grad computes sum(Y * log_softmax(z)) and dL/dz in one _softmax_xent call into
    the logits' memory: no log_softmax stored, no separate row sum or adjoint kernel. The hvp,
    which reads log_softmax(z) again, keeps the unfused form."""
    src = (ROOT / "generated" / "mlp_tanh.py").read_text()
    body = src.split("def loss_and_grad(")[1].split("\ndef ")[0]
    assert "t4, dL_dz3 = _softmax_xent(z3, Y, 1.0/B, out=z3)" in body
    for gone in ("_log_softmax(", "np.vdot(", "_rowsum("):
        assert gone not in body, gone
    assert "_log_softmax(z3, axis=1)" in src.split("def hvp(")[1]
    cnn = (ROOT / "generated" / "cnn_digits.py").read_text().split("def loss_and_grad(")[1]
    assert "_softmax_xent(z, Y, 1.0/B" in cnn


def _unfused_module(model, monkeypatch, name):
    from symgrad.codegen.program import Lowering

    from symgrad.pipeline import import_source

    with monkeypatch.context() as patch:
        patch.setattr(Lowering, "_softmax_xent", lambda self, total, product: None)
        src = generate(sg.derive(model))
    assert "_softmax_xent(" not in src
    return import_source(src, name)


@pytest.mark.parametrize("name", ["mlp_tanh", "softmax_regression", "mlp_regularised", "attention_digits"])
def test_fused_softmax_cross_entropy_gives_the_unfused_values(name, monkeypatch):
    """The fused loss and gradients equal those of the module generated without the fusion, to
    rounding, in float64 and float32, with soft targets and a batch that is no power of two."""
    import numpy as np

    from tests.conftest import built
    from tests.oracle import random_batch, run_kwargs

    model, _, fused = built(name, "auto")
    assert "_softmax_xent(" in (ROOT / "generated" / f"{name}.py").read_text()
    unfused = _unfused_module(model, monkeypatch, f"{name}_unfused")
    dims = {d: 5 for d in fused.DIMS} | {"B": 7}
    if name == "attention_digits":
        dims = {"B": 7, "n_out": 10}
    rng = np.random.default_rng(11)
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        params = fused.init_params(dims, seed=3, dtype=dtype)
        params = {k: (v + rng.normal(0, 0.3, v.shape)).astype(dtype) for k, v in params.items()}
        batch = {k: v.astype(dtype) for k, v in random_batch(fused, dims, rng).items()}
        kw = run_kwargs(fused, dims, dtype)
        loss, grads = fused.loss_and_grad(params, batch, **kw)
        want_loss, want = unfused.loss_and_grad(params, batch, **run_kwargs(fused, dims, dtype))
        assert loss == pytest.approx(want_loss, rel=rtol)
        for k, g in want.items():
            assert grads[k].dtype == dtype
            np.testing.assert_allclose(grads[k], g, rtol=rtol, atol=rtol * np.abs(g).max(), err_msg=k)


def test_softmax_cross_entropy_is_not_fused_where_log_softmax_is_read_again():
    """A loss that reads log_softmax(z) beside the cross-entropy keeps the unfused lines."""
    m = sg.Model("xent_plus", task="multiclass")
    B, k = m.dims("B k")
    X, Y = m.input("X", (B, k)), m.target("Y", (B, k))
    W = m.param("W", (k, k))
    z = m.let("z", X @ W)
    m.output("P", sg.softmax(z))
    m.loss(sg.softmax_cross_entropy(z, Y) + 0.1 * sg.mean(sg.log_softmax(z)))
    body = generate(sg.derive(m)).split("def loss_and_grad(")[1].split("\ndef ")[0]
    assert "_softmax_xent(" not in body and "_log_softmax(z, axis=1)" in body


def test_small_kernels_spread_their_bias_and_products_allocate():
    """The tanh MLP's bias + tanh kernel spreads the bias row into `out` (a new array: the
    product it adds is read after the spread); a 2-D product never writes into a dead buffer
    through np.matmul (0.4 us more than `a.dot(b)` at batch 32), kernels do; an image keeps
    its bias add by rows (`_by_rows`), in place, with no spread."""
    src = (ROOT / "generated" / "mlp_tanh.py").read_text()
    kernel = src.split("def _ew1(")[1].split("\ndef ")[0]
    assert "    out[...] = b\n    np.add(out, a, out)\n    np.tanh(out, out)" in kernel
    body = src.split("def loss_and_grad(")[1].split("\ndef ")[0]
    assert "h1 = _ew1(t1, b1, out=np.empty((B, n_h1), dtype=dt))" in body
    assert "np.matmul(" not in body and "dL_dz1 = _ew3(dL_dh1, h1, out=t1)" in body
    cnn = (ROOT / "generated" / "cnn_digits.py").read_text()
    assert "a1 = _by_rows(_ew1, 512, t2, t2, c1)" in cnn.split("def loss_and_grad(")[1]


def test_bias_gradients_share_one_vector_of_ones_a_call():
    """Column sums of matrices are products with a vector of ones bound once per function."""
    body = (ROOT / "generated" / "mlp_tanh.py").read_text().split("def loss_and_grad(")[1].split("\ndef ")[0]
    assert body.count("_ones_B = _ones(B, dL_dz1.dtype)") == 1
    assert body.index("_ones_B = ") < body.index("_ones_B.dot(dL_dz1)")
    for k in (1, 2, 3):
        assert f"dL_db{k} = _ones_B.dot(dL_dz{k})" in body
    assert "_colsum(" not in body
