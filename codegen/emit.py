"""Assemble generated modules: lower the programs, render the jinja2 templates.

* `generate(derivation, backend)`: a model's module (the DESIGN.md contract: `forward`,
  `loss`, `loss_and_grad`, `init_params`, ...);
* `generate_update(model, backend)`: an update-rule module (optimizers), whose `update`
  applies the model's `update` equations to one tensor in place.

Both are pure functions of their arguments, so generating twice gives the same bytes (no
machine's calibration is baked in: see `codegen.calibration`); `write_module` puts a module in
place atomically.
"""
from __future__ import annotations

import math
import pathlib
import re
import textwrap

import jinja2
import sympy
from symgrad.codegen.atomic import write_text
from symgrad.codegen.kernels import Kernel, KernelTable, Unsupported
from symgrad.codegen.layout import def_lines, fit_all, string_literal
from symgrad.codegen.lowering import HELPERS, LOWERINGS
from symgrad.codegen.numba_kernels import NUMBA_HEAVY, NUMBA_HELPERS, numba_lines
from symgrad.codegen.program import Program, lower
from symgrad.codegen.stamp import stamp
from symgrad.symbolic import __version__
from symgrad.symbolic.derivation import Derivation
from symgrad.symbolic.errors import SymgradError
from symgrad.symbolic.graph import Node
from symgrad.symbolic.model import Model
from symgrad.symbolic.names import RESERVED, check_identifier
from symgrad.symbolic.printing import Printer

BACKENDS = ("auto", "numpy", "numexpr", "numba")

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(pathlib.Path(__file__).with_name("templates")),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined, autoescape=False,
)


# -- small text helpers -----------------------------------------------------------------------
def _tuple_text(shape) -> str:
    parts = [str(int(d)) if d.is_Integer else repr(str(d)) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _float(value: object) -> str:
    """A float literal for generated source; nan and inf are not literals (they would be names)."""
    v = float(value)
    if not math.isfinite(v):
        raise SymgradError(f"generated code: {value!r} is not a finite number")
    return repr(v)


def _dict_text(items: dict) -> str:
    if not items:
        return "{}"
    return "{\n" + "".join(f"    {k!r}: {v},\n" for k, v in items.items()) + "}"


def _safe_doc(text: str) -> str:
    """Text placed inside a docstring cannot end it or start an escape: backslashes are doubled
    and every quote escaped (a quote at the end would otherwise run into the closing quotes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 94, initial_indent="# ", subsequent_indent="#     ",
                         break_on_hyphens=False)


# -- pieces shared by both kinds of module ----------------------------------------------------
def _numexpr_call(k: Kernel, indent: str) -> list[str]:
    typed = {p: f"k({p})" for p in k.scalars}
    entries = [f'"{p}": {typed.get(p, p)}' for p in k.operands
               if re.search(rf"\b{p}\b", k.numexpr_source)]
    entries += [f'"{c}": k({v})' for c, v in k.numexpr_constants.items()]
    lines = ["k = out.dtype.type"] if any("k(" in e for e in entries) else []
    source = string_literal(k.numexpr_source, indent + "    ")
    call = f'return ne.evaluate({source}, local_dict={{{", ".join(entries)}}}, out=out)'
    if "\n" not in source:
        return lines + fit_all([call], indent)
    local = fit_all([f'local_dict={{{", ".join(entries)}}},'], indent + "    ")
    return lines + ["return ne.evaluate(", f"    {source},", *local, "    out=out,", ")"]


def _finish_kernels(kernels: dict[str, Kernel], backend: str) -> list[Kernel]:
    for i, k in enumerate(kernels.values(), 1):
        k.name = f"_ew{i}"
        params = [f"{p}: {'float' if p in k.scalars else 'np.ndarray'}" for p in k.operands]
        k.header = def_lines(k.name, params + ["out: np.ndarray"], "np.ndarray")
        k.math = "\n    ".join(_wrap(f"out = {_safe_doc(sympy.sstr(k.expr, full_prec=False))}", 90))
        indent = "        " if backend == "auto" else "    "
        numexpr = backend in ("auto", "numexpr") and k.numexpr_source
        k.numexpr_call = _numexpr_call(k, indent) if numexpr else []
        k.numpy_lines = fit_all(k.numpy_lines, "    ")
        k.numba_lines = []
        if backend == "numba" and not (k.heavy and not NUMBA_HEAVY):
            try:
                k.numba_lines = numba_lines(k.expr, k.operands, k.scalars, *k.layout)
            except Unsupported:  # a function numba's loops cannot call: numpy's ufuncs run it
                pass
    return list(kernels.values())


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent="    ", break_on_hyphens=False) or [""]


def _common(model: Model, backend: str, kernels: list[Kernel], programs: list[Program]) -> dict:
    if backend not in BACKENDS:
        raise SymgradError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    # a helper goes in when the code calls it (inside loops too), with what it calls itself
    code = "\n".join(line for p in programs for i in p.instrs for line in LOWERINGS[i.op].emit(i))
    code += "\n".join(line for k in kernels for line in k.numpy_lines)
    called = set(re.findall(r"\b(\w+)\(", code))  # one pass over the code, not one per helper
    used = {h for p in programs for i in p.instrs for h in LOWERINGS[i.op].helpers if h in called}
    used |= {h for h in HELPERS if h in called}
    if any(leaf.is_integer for leaf in model.leaves.values()):
        used.add("_labels")
    if "_dropout_mask" in used:
        used.add("_generator")
    if any(p.uses_workspace for p in programs):
        used.add("_workspace")
    compiled = NUMBA_HELPERS if backend == "numba" else {}
    while True:  # and the helpers those helpers call (_ones under the sums)
        inner = {h for u in used for h in re.findall(r"\b(\w+)\(", compiled.get(u, HELPERS[u]))
                 if h in HELPERS}
        if inner <= used:
            break
        used |= inner
    helpers = [compiled.get(h, HELPERS[h]).strip() for h in HELPERS if h in used]
    numba_helpers = any(h in compiled for h in used)
    return {
        "model": model,
        "version": __version__,
        "spec_hash": model.spec_hash(),
        "backend": backend,
        # an auto module switches between the engines it carries code for
        "allowed_backends": ("auto", "numpy", "numexpr") if backend == "auto" else (backend,),
        "uses_numexpr": any(k.numexpr_call for k in kernels),
        "uses_math": "_erf" in used,  # the one numpy helper that needs the standard library's math
        "uses_callable": "_by_rows" in used,  # the one helper whose signature takes a function
        "uses_numba": numba_helpers or any(k.numba_lines for k in kernels),
        "numba_math": numba_helpers or any("math." in line for k in kernels for line in k.numba_lines),
        # numpy everywhere until the running machine's measurement is installed (codegen.calibration)
        "thresholds": _dict_text({(dt, heavy): "None" for dt in "fd" for heavy in (False, True)}),
        "helpers": helpers,
        "kernels": kernels,
        "hypers": _dict_text({n: _float(v) for n, v in model.hyper_defaults.items()}),
    }


def statements(program: Program, texts: dict[int, str]) -> list[str]:
    """The program's lines, each equation cited once, before the first line computing it.

    A line that computes only a part of an equation (a row sum a later kernel reads) is cited
    together with the equations of the lines up to the one that finishes it, so that the lines
    under a group of citations compute exactly those equations, whole.
    """
    instrs = program.instrs
    last = {n: k for k, ins in enumerate(instrs) for n in ins.eqs}
    lines, shown = [], set()
    for k, ins in enumerate(instrs):
        group, end, j = set(), k, k
        while j <= end:  # extend over the lines that finish what this group began
            new = {n for n in instrs[j].eqs if n not in shown and n in texts}
            group |= new
            end = max([end, *(last[n] for n in new)])
            j += 1
        for number in sorted(group):
            shown.add(number)
            lines += _comment(f"({number}) {texts[number]}")
        lines += LOWERINGS[ins.op].emit(ins)
    lines += [f"np.copyto({leaf}, {value})" for leaf, value in program.copies]
    return lines


def _check_names(model: Model) -> None:
    """Every name the module will bind passes check_identifier again, now: the model's tables
    were checked when each name was declared, and nothing after that may slip one in."""
    for name in (model.name, *model.dim_symbols, *model.leaves, *(e.name for e in model.equations)):
        check_identifier(name, "name")


def model_names(model: Model) -> frozenset[str]:
    """Every name a model's module binds: the model's own and the generated code's fixed ones."""
    return frozenset(RESERVED | set(model.dim_symbols) | set(model.leaves)
                     | {e.name for e in model.equations})


def _bind_dims(program: Program, leaves: list[Node], where: str) -> list[str]:
    lines = []
    for dim in program.dims:
        source = next(((leaf.name, axis) for leaf in leaves if leaf in program.leaves
                       for axis, d in enumerate(leaf.shape) if isinstance(d, sympy.Symbol) and d.name == dim),
                      None)
        if source is None:
            raise SymgradError(f"{where}: dim {dim} cannot be read off the arrays this function receives")
        lines.append(f"{dim} = {source[0]}.shape[{source[1]}]")
    for condition, message in program.requirements.items():  # bounds that fit some dims only
        lines += [f"if not {condition}:", f'    raise ValueError(f"{where}: {message}")']
    return lines


# -- a model's module ---------------------------------------------------------------------------
_STATE_MISSING = 'raise ValueError("pass state=: this model keeps running statistics")'


def _model_body(program: Program, derivation: Derivation, arg: str, first_param: str,
                grad: bool, texts: dict[int, str], vectors: dict[str, Node] | None = None) -> list[str]:
    """Bind what the program reads (params, batch, hypers, state, rng, the vector of an
    HVP), then run it."""
    leaves = list(derivation.model.leaves.values())
    used = set(program.leaves)
    lines = [f'{leaf.name} = params["{leaf.name}"]' for leaf in leaves if leaf in used and leaf.op == "param"]
    lines.append(f'dt = params["{first_param}"].dtype')
    lines += [f'{v.name} = np.asarray(vector["{p}"], dtype=dt)'
              for p, v in (vectors or {}).items() if v in used]
    if any(leaf.op == "state" for leaf in used):
        lines += (["if state is None:  # a throwaway state: the batch statistics still apply",
                   "    state = init_state(validate(params), dt)"] if grad
                  else ["if state is None:", f"    {_STATE_MISSING}"])
    for leaf in leaves:
        if leaf in used and leaf.is_integer:
            lines.append(f'{leaf.name} = _labels({arg}["{leaf.name}"], "{leaf.name}")')
        elif leaf in used and leaf.op in ("input", "target"):
            lines.append(f'{leaf.name} = np.asarray({arg}["{leaf.name}"], dtype=dt)')
        elif leaf in used and leaf.op == "hyper":
            lines.append(f'{leaf.name} = _hyper(hypers, "{leaf.name}")')
        elif leaf in used and leaf.op == "state":
            lines.append(f'{leaf.name} = state["{leaf.name}"]')
    if any(ins.op == "dropout_mask" for ins in program.instrs):
        lines.append("rng = _generator(rng)")
    lines += _bind_dims(program, leaves, f"model {derivation.model.name!r}")
    return lines + statements(program, texts)


def _returning(program: Program, name: str, grads: list[str]) -> str:
    if name == "hvp":  # one entry a line: an LSTM's HVP returns long views
        lines = ["return (", f"    float({program.results['loss']}),", "    {"]
        lines += [f'        "{p}": {program.results[p]},' for p in grads] + ["    },", "    {"]
        lines += [f'        "{p}": {program.results["hv:" + p]},' for p in grads] + ["    },", ")"]
        return "\n".join(lines)
    if name == "forward":
        return "return {" + ", ".join(f'"{k}": {v}' for k, v in program.results.items()) + "}"
    if name == "loss":
        return f"return float({program.results['loss']})"
    return f"return float({program.results['loss']}), {{" + ", ".join(
        f'"{p}": {program.results[p]}' for p in grads) + "}"


def generate(derivation, backend: str = "auto", second_order: bool = True) -> str:
    """The source of the generated module for a model's derivation (or for an `sg.hvp` or
    `sg.hessian` of it: the module of the derivation they extend; for an `sg.jacobian`, that
    module with `jacobian_<output>_<wrt>` too). With `second_order`, the module has `hvp` and
    `hessian` (and per player of a GAN, `hvp_<objective>` and `hessian_<objective>`)."""
    from symgrad.symbolic.second_order import Jacobian

    jacobians = [derivation] if isinstance(derivation, Jacobian) else []
    derivation = getattr(derivation, "derivation", derivation)
    model = derivation.model
    _check_names(model)
    names = {n: t for n, (t, _) in derivation.names.items()}
    owners = derivation.owners
    kernels = KernelTable()
    kernels.layouts = backend == "numba"
    dims = frozenset(model.dim_symbols)
    own = {form: eq.name for eq in model.equations
           for form in (eq.node, derivation.train.get(eq.node), derivation.evaluate.get(eq.node))
           if form is not None}
    naming = {"dim_names": dims, "reserved": model_names(model), "own": own}
    modes = (True, False) if derivation.has_modes else (False,)
    updates = derivation.updates
    programs = {}
    for training in modes:
        programs["forward", training] = lower(derivation.outputs(training), names, owners, kernels,
                                              workspace=True, **naming)
        programs["loss", training] = lower({"loss": derivation.loss_in(training)}, names, owners, kernels,
                                           workspace=True, **naming)
    state_roots = {f"state:{k}": v for k, v in updates.items()}
    programs["loss_and_grad", True] = lower(
        {"loss": derivation.loss, **derivation.gradients, **state_roots}, names, owners, kernels,
        stores={key: key.split(":", 1)[1] for key in state_roots}, workspace=True, **naming)
    players = {}
    for objective in model.objectives:  # a GAN: each player's loss w.r.t. its own parameters
        from symgrad.symbolic.derivation import derive

        d = derive(model, objective)
        players[objective] = d
        programs[f"loss_and_grad_{objective}", True] = lower(
            {"loss": d.loss, **d.gradients}, {n: t for n, (t, _) in d.names.items()}, d.owners, kernels,
            workspace=True, **naming)
    hvps = {}
    if second_order:
        hvps = _second_order_programs(derivation, players, programs, names, owners, kernels, naming)
    for j in jacobians:
        programs[f"_vjp_{j.of}_{j.wrt}", False] = lower({"vjp": j.vjp}, names, owners, kernels,
                                                        workspace=True, **naming)
    context = _common(model, backend, _finish_kernels(kernels, backend), list(programs.values()))
    first_param = next(iter(model.params))
    grads = list(derivation.gradients)
    grad_numbers = sorted({owners[g] for g in derivation.gradients.values() if g in owners})
    span = f" (eqs. {grad_numbers[0]}-{grad_numbers[-1]})" if grad_numbers else ""
    functions = []
    # the equations' texts the comments cite, printed once for every function; an objective's
    # function cites the model's forward equations (its own backward steps are numbered in its
    # own derivation, which documents do not show)
    texts = {e.number: derivation.text(e) for e in derivation.equations}
    forward_texts = {e.number: texts[e.number] for e in derivation.forward}
    jobs = [(f"loss_and_grad_{o}", "batch", "tuple[float, dict[str, np.ndarray]]",
             f"The objective {o} and its gradient w.r.t. {', '.join(model.objectives[o])} only "
             "(the other parameters held fixed), in training mode.") for o in model.objectives]
    for name, arg, returns, doc in (
        ("forward", "inputs", "dict[str, np.ndarray]",
         "The model's outputs for a batch of inputs (evaluation mode unless `training`)."),
        ("loss", "batch", "float",
         f"The loss {derivation.loss_name} for a batch (evaluation mode unless `training`)."),
        ("loss_and_grad", "batch", "tuple[float, dict[str, np.ndarray]]",
         f"The loss {derivation.loss_name} and its gradient w.r.t. every parameter{span}, in "
         "training mode" + (" (updates `state` in place)." if updates else ".")),
        *jobs,
    ):
        grad = name.startswith("loss_and_grad")
        player = players.get(name.removeprefix("loss_and_grad_"))
        body: list[str] = []
        for training in ((True,) if grad else modes):
            program = programs[name, training]
            if player is None:
                lines = _model_body(program, derivation, arg, first_param, grad, texts)
            else:
                lines = _model_body(program, player, arg, first_param, grad, forward_texts)
            if program.uses_workspace:  # the workspace's arrays never reach the return line
                key = f"{name}_training" if training and len(modes) == 2 and not grad else name
                lines.insert(0, f'ws = _take_workspace("{key}")')
                lines.append(f'_give_back("{key}", ws)')
            lines.append(_returning(program, "loss_and_grad" if grad else name,
                                    list(player.gradients) if player else grads))
            if len(modes) == 2 and not grad and training:
                body += ["if training:"] + ["    " + line for line in lines]
            else:
                body += lines
        extra = ("    training: bool = False,\n" if not grad else "")
        functions.append({
            "name": name, "doc": "\n    ".join(textwrap.wrap(doc, 90)), "body": fit_all(body, "    "),
            "header": (f"def {name}(\n    params: Mapping[str, np.ndarray],\n"
                       f"    {arg}: Mapping[str, np.ndarray],\n"
                       "    hypers: Mapping[str, float] | None = None,\n    *,\n"
                       "    state: Mapping[str, np.ndarray] | None = None,\n"
                       "    rng: np.random.Generator | int | None = None,\n"
                       f"{extra}) -> {returns}:"),
        })
    functions += _second_order_functions(derivation, players, hvps, programs, first_param)
    for j in jacobians:
        functions += _jacobian_functions(j, programs, first_param)
    context.update({
        "regenerate": _regenerate(model),
        "summary": "\n".join(_wrap(_safe_doc(f"{model.name}: " + (
            model.description or f"a model with parameters {', '.join(model.params)}")), 92)),
        "equations": [line for e in derivation.forward
                      for line in _wrap(_safe_doc(f"({e.number}) {derivation.text(e)}"), 92)],
        "dims": repr(tuple(model.dim_symbols)),
        "default_dims": _dict_text(model.dim_defaults),
        "params": _dict_text({n: _tuple_text(v.shape) for n, v in model.params.items()}),
        "inputs": _dict_text({n: _tuple_text(v.shape) for n, v in model.data.items()}),
        "targets": repr(tuple(n for n, v in model.data.items() if v.op == "target")),
        "labels": repr(tuple(n for n, v in model.data.items() if v.is_integer)),
        "outputs": _dict_text({n: _tuple_text(v.shape) for n, v in model.outputs.items()}),
        "states": _dict_text({n: _tuple_text(v.shape) for n, v in model.leaves_of("state").items()}),
        "objectives": _dict_text({n: repr(g) for n, g in model.objectives.items()}),
        "task": repr(model.task),
        "prediction": repr(model.prediction),
        "inits": _dict_text({n: f"({i.scheme!r}, {_float(i.scale)})" for n, i in model.inits.items()}),
        "functions": functions,
    })
    return stamp(_compiled(_ENV.get_template("module.py.j2").render(**context), model.name))


# -- second order ------------------------------------------------------------------------------
def _second_order_programs(derivation: Derivation, players: dict, programs: dict, names: dict,
                           owners: dict, kernels: dict, naming: dict) -> dict:
    """The programs of `hvp` (the model's loss) and of each player's `hvp_<objective>`:
    the loss, its gradients and H v in one pass over the shared forward values."""
    from symgrad.symbolic.second_order import hvp, simplified

    out = {}
    for objective, first in [(None, derivation), *players.items()]:
        h = hvp(first)
        key = "hvp" if objective is None else f"hvp_{objective}"
        products = {f"hv:{p}": hv for p, hv in h.products.items()}
        roots = simplified({"loss": first.loss, **h.gradients, **products})
        own = {n: t for n, (t, _) in first.names.items()} if objective else dict(names)
        for p in h.gradients:
            own.setdefault(roots[p], f"d{first.loss_name}_d{p}")
        for p in h.products:
            own.setdefault(roots[f"hv:{p}"], f"hv_{p}")
        programs[key, True] = lower(roots, own, owners if objective is None else first.owners, kernels,
                                    workspace=True, every_temporary=True, **naming)
        out[key] = h
    return out


_HVP_HEADER = """def {name}(
    params: Mapping[str, np.ndarray],
    batch: Mapping[str, np.ndarray],
    vector: Mapping[str, np.ndarray],
    hypers: Mapping[str, float] | None = None,
    *,
    state: Mapping[str, np.ndarray] | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:"""

_HESSIAN_HEADER = """def {name}(
    params: Mapping[str, np.ndarray],
    batch: Mapping[str, np.ndarray],
    wrt: str,
    hypers: Mapping[str, float] | None = None,
    *,
    state: Mapping[str, np.ndarray] | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:"""


def _second_order_functions(derivation: Derivation, players: dict, hvps: dict, programs: dict,
                            first_param: str) -> list[dict]:
    functions = []
    for key, h in hvps.items():
        objective = key.removeprefix("hvp").removeprefix("_")
        first = players.get(objective, derivation)
        program = programs[key, True]
        cited = derivation.forward if objective else derivation.equations  # a player's: the model's forward
        texts = {e.number: derivation.text(e) for e in cited}
        lines = _model_body(program, first, "batch", first_param, True, texts, vectors=h.vectors)
        if program.uses_workspace:
            lines.insert(0, f'ws = _take_workspace("{key}")')
            lines.append(f'_give_back("{key}", ws)')
        lines += _returning(program, "hvp", list(h.wrt)).split("\n")
        of = f"the objective {objective}" if objective else f"the loss {derivation.loss_name}"
        doc = (f"H v: the Hessian of {of} w.r.t. {', '.join(h.wrt)} times `vector` (keyed and shaped "
               "like those parameters), with the loss and its gradient, in training mode; reverse mode "
               "over the backward pass. Running averages (`state`) are read, never updated.")
        functions.append({"name": key, "doc": "\n    ".join(textwrap.wrap(doc, 90)),
                          "body": fit_all(lines, "    "), "header": _HVP_HEADER.format(name=key)})
        dropout = any(ins.op == "dropout_mask" for ins in program.instrs)
        name = key.replace("hvp", "hessian", 1)
        among = "names" if objective else "PARAMS"
        body = [f'names = OBJECTIVES["{objective}"]'] if objective else []
        body += [f"if wrt not in {among}:",
                f'    raise KeyError(f"{name}: no parameter {{wrt!r}}; expected one of {{tuple({among})}}")']
        if dropout:  # every column sees the same dropout masks
            body.append("rng = int(rng.integers(2**63)) if isinstance(rng, np.random.Generator) else rng")
        body += [f"vector = {{k: np.zeros_like(params[k]) for k in {among}}}",
                 "unit = vector[wrt].reshape(-1)  # a view: setting unit[j] sets the vector",
                 "n = unit.size",
                 "out = np.empty((n, n), dtype=params[wrt].dtype)",
                 "for j in range(n):",
                 "    unit[j] = 1.0",
                 f"    hv = {key}(params, batch, vector, hypers, state=state, rng=rng)[2]",
                 "    out[:, j] = hv[wrt].reshape(-1)",
                 "    unit[j] = 0.0",
                 "return out"]
        doc = (f"The (n, n) Hessian of {of} w.r.t. the parameter `wrt` of n entries (row-major "
               f"flattening): column j is {key} with the j-th unit vector, so it costs n HVPs.")
        functions.append({"name": name, "doc": "\n    ".join(textwrap.wrap(doc, 90)),
                          "body": fit_all(body, "    "), "header": _HESSIAN_HEADER.format(name=name)})
    return functions


def _jacobian_functions(j, programs: dict, first_param: str) -> list[dict]:
    """`_vjp_<of>_<wrt>`: the output's VJP for one cotangent (evaluation mode), and
    `jacobian_<of>_<wrt>`, which stacks it over the unit cotangents, one row each."""
    d = j.derivation
    key = f"_vjp_{j.of}_{j.wrt}"
    program = programs[key, False]
    texts = {e.number: d.text(e) for e in d.equations}
    lines = _model_body(program, d, "inputs", first_param, False, texts, vectors={j.of: j.cotangent})
    if program.uses_workspace:
        lines.insert(0, f'ws = _take_workspace("{key}")')
        lines.append(f'_give_back("{key}", ws)')
    lines.append(f"return np.array({program.results['vjp']}, dtype=dt)")
    header = ("def {name}(\n    params: Mapping[str, np.ndarray],\n    inputs: Mapping[str, np.ndarray],\n"
              "{extra}    hypers: Mapping[str, float] | None = None,\n    *,\n"
              "    state: Mapping[str, np.ndarray] | None = None,\n"
              "    rng: np.random.Generator | int | None = None,\n) -> np.ndarray:")
    vjp = {"name": key,
           "doc": f"The VJP u^T d{j.of}/d{j.wrt} for the cotangent vector[{j.of!r}] (evaluation mode).",
           "body": fit_all(lines, "    "),
           "header": header.format(name=key, extra="    vector: Mapping[str, np.ndarray],\n")}
    name = f"jacobian_{j.of}_{j.wrt}"
    where = "params" if j.wrt in d.model.params else "inputs"
    body = [f'out = forward(params, inputs, hypers, state=state, rng=rng)["{j.of}"]',
            "unit = np.zeros_like(out)",
            "flat = unit.reshape(-1)  # a view: setting flat[i] sets the cotangent",
            f'rows = np.empty((flat.size, np.size({where}["{j.wrt}"])), dtype=out.dtype)',
            "for i in range(flat.size):",
            "    flat[i] = 1.0",
            f'    row = {key}(params, inputs, {{"{j.of}": unit}}, hypers, state=state, rng=rng)',
            "    rows[i] = row.reshape(-1)",
            "    flat[i] = 0.0",
            "return rows"]
    doc = (f"The Jacobian d{j.of}/d{j.wrt} (evaluation mode): shape (size of {j.of}, size of {j.wrt}), "
           f"both flattened row-major; row i is the VJP of the i-th unit cotangent.")
    jac = {"name": name, "doc": "\n    ".join(textwrap.wrap(doc, 90)), "body": fit_all(body, "    "),
           "header": header.format(name=name, extra="")}
    return [vjp, jac]


def _regenerate(model: Model) -> str:
    """How the module is written again: the command for a built-in or a model file, else the
    Python call (a model built in a script or a notebook has no command of its own). A path
    reaches the source only when it is plain (letters, digits, `_ . / -`)."""
    origin = model.origin
    if origin is None:
        return "`symgrad.write(model)` with this model"
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", origin):
        return f"`symgrad derive` with the model file that defines {model.name}"
    return f"`symgrad derive {origin}`"


# -- an update-rule module -----------------------------------------------------------------------
def generate_update(model: Model, backend: str = "auto") -> str:
    """The source of an update-rule module (see the module docstring)."""
    updates = model.updates
    if not updates:
        raise SymgradError(f"model {model.name!r} has no update equations")
    params, grads = model.leaves_of("param"), model.leaves_of("input")
    if len(params) != 1 or len(grads) != 1:
        raise SymgradError(f"update rules {model.name!r} need exactly one parameter and one gradient input")
    (p,), (g,) = params, grads
    names = {eq.node: eq.name for eq in model.equations}
    kernels = KernelTable()
    kernels.layouts = backend == "numba"
    program = lower(dict(updates), names, {}, kernels, stores={t: t for t in updates},
                    dim_names=frozenset(model.dim_symbols), reserved=model_names(model),
                    own={eq.node: eq.name for eq in model.equations})
    printer = Printer(names)
    texts = {}
    equations = []
    for number, eq in enumerate(model.equations, 1):
        arrow = "<-" if eq.kind == "update" else "="
        lhs = eq.target if eq.kind == "update" else eq.name
        texts[number] = f"{lhs} {arrow} {printer.text(eq.node, expand=True)}"
        equations += _wrap(_safe_doc(f"({number}) {texts[number]}"), 92)
    owners = {eq.node: n for n, eq in enumerate(model.equations, 1)}
    for ins in program.instrs:
        ins.eqs = tuple(sorted({owners[ins.node]} if ins.node in owners else ()))
    states = list(model.leaves_of("state"))
    hypers = list(model.hyper_defaults)
    context = _common(model, backend, _finish_kernels(kernels, backend), [program])
    body = _bind_dims(program, list(model.leaves.values()), f"update rules {model.name!r}")
    body += statements(program, texts)
    if any(re.search(r"\bdt\b", line) for line in body):
        body.insert(0, f"dt = {p}.dtype")
    arrays = [f"{p}: np.ndarray", f"{g}: np.ndarray"] + [f"{s}: np.ndarray" for s in states]
    context.update({
        "summary": "\n".join(_wrap(_safe_doc(f"{model.name}: {model.description or 'update rules'}"), 92)),
        "equations": equations,
        "states": repr(tuple(states)),
        "state_init": _dict_text({s: _float(model.inits[s].scale if model.inits[s].scheme == "constant"
                                            else {"ones": 1.0}.get(model.inits[s].scheme, 0.0))
                                  for s in states}),
        "header": def_lines("update", arrays + [f"{h}: float" for h in hypers], "None"),
        "call": fit_all(["update(" + ", ".join(
            ["p.reshape(-1)", "grads[name].reshape(-1)"] + [f's["{s}"].reshape(-1)' for s in states]
            + ["t=t" if h == "t" else f'{h}=h["{h}"]' for h in hypers]) + ")"], "        "),
        "body": fit_all(body, "    "),
    })
    return stamp(_compiled(_ENV.get_template("update.py.j2").render(**context), model.name))


def _compiled(source: str, name: str) -> str:
    """`source` if it compiles: a module that would not is an error here, never a file."""
    try:
        compile(source, f"<generated {name}>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        line = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise SymgradError(f"internal error: the generated module for {name!r} does not compile "
                           f"({line.strip() or 'source'}: {e.msg if hasattr(e, 'msg') else e})") from None
    return source


def write_module(source: str, folder: str | pathlib.Path, name: str) -> pathlib.Path:
    """Write `folder/name.py` atomically (temp file + rename)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise SymgradError(f"output folder {folder} does not exist or is not a folder")
    return write_text(folder / f"{name}.py", source)
