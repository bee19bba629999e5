"""Training a GAN with alternating updates, on the standard ring of 8 Gaussians.

Each step draws a batch of real samples and of noise, takes one optimizer step of the
discriminator on `loss_and_grad_L_D` (its own parameters), then one of the generator on
`loss_and_grad_L_G` with fresh noise. Each player has its own Adam state; the learning rate
holds for the first half and falls linearly to a tenth over the second. Quality is
measured the usual way for this task: a generated sample is high quality when it lies within
3 standard deviations of a mode, and a mode is covered when at least 20 of 2,500 samples are
high-quality samples nearest to it.

RUN_DIR holds config.json, metrics.csv (every `every` steps: both losses, modes covered,
high-quality fraction, and the seconds those steps took), model.npz (the parameters),
module.py (a copy of the generated module) and samples.png (real and generated).
`symgrad.load_trained(RUN_DIR).sample(n)` draws from the generator.
"""
from __future__ import annotations

import json
import pathlib
import time
import types
from dataclasses import dataclass

import numpy as np
from symgrad.codegen import atomic
from symgrad.codegen.atomic import write_text
from symgrad.symbolic.errors import SymgradError
from symgrad.training import checkpoint, optimizers, plots, validate
from symgrad.training.data import streams

RING = {"modes": 8, "radius": 2.0, "std": 0.02}
SAMPLES = 2500


def ring_centers(modes: int = RING["modes"], radius: float = RING["radius"]) -> np.ndarray:
    angle = 2 * np.pi * np.arange(modes) / modes
    return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def ring(n: int, rng: np.random.Generator, std: float = RING["std"]) -> np.ndarray:
    """n samples from the mixture of 8 Gaussians (std 0.02) evenly spaced on a circle of radius 2."""
    centers = ring_centers()
    return centers[rng.integers(0, len(centers), n)] + std * rng.standard_normal((n, 2))


def quality(samples: np.ndarray, std: float = RING["std"], min_count: int = 20) -> tuple[int, float]:
    """(modes covered, fraction of high-quality samples)."""
    centers = ring_centers()
    distance = np.linalg.norm(samples[:, None, :] - centers[None], axis=2)
    good = distance.min(axis=1) < 3 * std
    counts = np.bincount(distance.argmin(axis=1)[good], minlength=len(centers))
    return int((counts >= min_count).sum()), float(good.mean())


@dataclass
class GanResult:
    run_dir: pathlib.Path
    modes: int
    high_quality: float
    params: dict[str, np.ndarray]
    summary: str


def _players(module: types.ModuleType) -> tuple[str, str]:
    objectives = getattr(module, "OBJECTIVES", {})
    if set(objectives) != {"L_D", "L_G"}:
        raise SymgradError("GAN training needs objectives L_D (discriminator) and L_G (generator); "
                           f"this model has {sorted(objectives) or 'none'}")
    for name in ("X", "Z"):
        if name not in module.INPUTS:
            raise SymgradError(f"GAN training feeds inputs X (real samples) and Z (noise); the model has "
                               f"{sorted(module.INPUTS)}")
    if module.INPUTS["X"][1:] != (2,):
        raise SymgradError(f"the ring data set is 2-D, but model input X has shape {module.INPUTS['X']}")
    return "L_D", "L_G"


def check_settings(*, steps, batch_size, lr, seed) -> None:
    """The GAN's settings, checked as epoch training checks its own (`training.validate`)."""
    validate.positive_int("steps", steps)
    validate.positive_int("batch size", batch_size)
    validate.positive_number("learning rate", lr)
    validate.seed(seed)


def train_gan(module: types.ModuleType, *, steps: int = 12000, batch_size: int = 256, lr: float = 3e-4,
              beta1: float = 0.5, seed: int = 0, out: str | pathlib.Path | None = None, every: int = 500,
              quiet: bool = False) -> GanResult:
    """Alternating Adam updates of discriminator and generator (see the module docstring)."""
    _players(module)
    check_settings(steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    validate.positive_int("every", every)
    run_dir = pathlib.Path(out) if out is not None else _fresh_dir(module)
    created = _claim(run_dir)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a NaN is reported once, below
            return _train(module, steps, batch_size, lr, beta1, seed, run_dir, every, quiet)
    except (SymgradError, KeyboardInterrupt) as e:
        # nothing is kept of a run that wrote no metrics row: its folder goes, as it came
        if created and not (run_dir / "metrics.csv").exists():
            for name in ("config.json", "module.py"):
                (run_dir / name).unlink(missing_ok=True)
            try:
                run_dir.rmdir()
            except OSError:
                pass
            else:
                e.args = (f"{e}; the run folder {run_dir} held no results and was removed",)
        raise


def _claim(run_dir: pathlib.Path) -> bool:
    """Create (or take the empty) run folder and check it takes files; True when created."""
    try:
        existed = run_dir.exists()
        if existed and not run_dir.is_dir():
            raise SymgradError(f"{run_dir} is a file, not a run folder")
        if existed and any(run_dir.iterdir()):
            raise SymgradError(f"run folder {run_dir} is not empty; choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SymgradError(f"cannot create run folder {run_dir}: {atomic.reason(e)}") from None
    try:
        atomic.check_writable(run_dir)
    except SymgradError:
        if not existed:
            run_dir.rmdir()
        raise
    return not existed


def _train(module, steps, batch_size, lr, beta1, seed, run_dir, every, quiet) -> GanResult:
    data_seed, noise_seed, _ = streams(seed)
    data_rng, noise_rng = np.random.default_rng(data_seed), np.random.default_rng(noise_seed)
    noise_dim = module.INPUTS["Z"][1]
    params = module.init_params(module.DEFAULT_DIMS, seed=seed, dtype=np.float32)
    adam = optimizers.load("adam")
    hypers = {"lr": lr, "beta1": beta1}
    groups = {o: {k: params[k] for k in module.OBJECTIVES[o]} for o in ("L_D", "L_G")}
    states = {o: adam.init_state(g) for o, g in groups.items()}
    fixed_noise = np.random.default_rng(seed + 1).standard_normal((SAMPLES, noise_dim)).astype(np.float32)
    rows = ["step,loss_D,loss_G,modes,high_quality,seconds"]
    config = {"model": module.__name__.rsplit(".", 1)[-1], "data": "ring", "steps": steps,
              "batch_size": batch_size, "optimizer": "adam", "lr": lr, "beta1": beta1, "seed": seed}
    source = module.__spec__.loader.get_source(module.__name__)  # the run loads without the model
    start = last = time.perf_counter()
    for t in range(1, steps + 1):
        # the second half lowers the rate linearly to a tenth: the players settle, the
        # generator's samples stop circling the modes
        hypers["lr"] = lr * min(1.0, 1.0 - 0.9 * (2 * t - steps) / steps)
        real = ring(batch_size, data_rng).astype(np.float32)
        noise = noise_rng.standard_normal((batch_size, noise_dim)).astype(np.float32)
        loss_d, grads = module.loss_and_grad_L_D(params, {"X": real, "Z": noise})
        adam.step(groups["L_D"], grads, states["L_D"], t, hypers)
        noise = noise_rng.standard_normal((batch_size, noise_dim)).astype(np.float32)
        loss_g, grads = module.loss_and_grad_L_G(params, {"X": real, "Z": noise})
        adam.step(groups["L_G"], grads, states["L_G"], t, hypers)
        if not (np.isfinite(loss_d) and np.isfinite(loss_g)):
            raise SymgradError(f"step {t}: a loss is not finite (L_D {loss_d}, L_G {loss_g}); "
                               "try a smaller --lr")
        if t % every == 0 or t == steps:
            modes, good = quality(generate(module, params, fixed_noise))
            now = time.perf_counter()
            seconds, last = now - last, now  # the row's own time, as an epoch's row has
            rows.append(f"{t},{loss_d:.6f},{loss_g:.6f},{modes},{good:.4f},{seconds:.2f}")
            if len(rows) == 2:  # the first row: the run has a result worth a folder
                write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
                write_text(run_dir / "module.py", source)
            write_text(run_dir / "metrics.csv", "\n".join(rows) + "\n")
            if not quiet:
                print(f"step {t:6d}/{steps}  L_D {loss_d:.4f}  L_G {loss_g:.4f}  modes {modes}/8  "
                      f"high-quality {good:.3f}  ({seconds:.1f} s)", flush=True)
    fake = generate(module, params, fixed_noise)
    modes, good = quality(fake)
    checkpoint.save(run_dir / "model.npz", params, {"kind": "gan", "model": config["model"], "config": config,
                                                    "modes": modes, "high_quality": good})
    plots.scatter(ring(SAMPLES, np.random.default_rng(seed + 2)), fake, run_dir / "samples.png",
                  f"{config['model']}: {modes}/8 modes, {good:.2f} high quality", ring_centers())
    summary = (f"modes covered {modes}/8  high-quality fraction {good:.4f}  ({config['model']} on ring, adam "
               f"lr {lr:g}, batch size {batch_size}, seed {seed}; {steps} steps; "
               f"{time.perf_counter() - start:.1f} s; run in {run_dir})")
    return GanResult(run_dir, modes, good, params, summary)


def generate(module: types.ModuleType, params: dict, noise: np.ndarray) -> np.ndarray:
    """The generator's samples for rows of noise."""
    return module.forward(params, {"Z": noise, "X": np.zeros((len(noise), 2), np.float32)})["fake"]


def _fresh_dir(module: types.ModuleType) -> pathlib.Path:
    base = pathlib.Path("runs") / f"{module.__name__.rsplit('.', 1)[-1]}-ring"
    k = 1
    while pathlib.Path(f"{base}-{k}").exists():
        k += 1
    return pathlib.Path(f"{base}-{k}")
