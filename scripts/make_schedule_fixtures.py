#!/usr/bin/env python3
"""Export diffusers' noise schedules, step plans and sampler loops for `tests/schedule.rs`.

Writes ``tests/fixtures/schedules/{tables,timesteps,loops}.json`` (plus ``README.md``) from the
pinned diffusers 0.42.1 / torch 2.15.0 of ``scripts/requirements.txt``:

    /tmp/venv/bin/python scripts/make_schedule_fixtures.py [--out tests/fixtures/schedules]

Every quantity is exported twice:

* ``*_f32``: what diffusers really computes. Its tables are float32 (``torch.linspace(...,
  dtype=torch.float32)``, ``torch.cumprod`` of float32 alphas, float32 sigmas) and its sampling
  loop runs in float32. Values are written as the shortest decimal that round-trips the float32.
* ``*_f64``: diffusers' own code run with every float32 replaced by float64. The scheduler
  modules' ``torch`` and ``np`` globals are swapped for thin aliases whose ``float32`` attribute is
  ``float64`` and torch's default dtype is float64 while the scheduler is built and stepped, so
  the *same source lines* execute in double precision. These are the reference for the Rust f64
  port (tolerance 1e-12 on tables). The script also re-derives the beta tables with plain numpy
  float64 formulas and asserts they agree with the aliased run (and that float32 diffusers agrees
  with both to ~1e-6).

Stochastic samplers draw noise through diffusers' ``randn_tensor``; the script replaces that name
in the scheduler modules with a replay of noise drawn up front from a seeded ``torch.Generator``
(``torch.randn(..., generator=g)``), exports the noise, and feeds the identical values to the
float32 and float64 runs. The "model" in the loops is the analytic toy
``m(x, t) = 0.3 * x + 0.1 * sin(t / 100)``, so the per-step update math is checked without a
U-Net.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers.deprecated.scheduling_sde_vp import ScoreSdeVpScheduler

CLASSES = {
    "DDPMScheduler": DDPMScheduler,
    "DDIMScheduler": DDIMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "HeunDiscreteScheduler": HeunDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    "ScoreSdeVpScheduler": ScoreSdeVpScheduler,
    "FlowMatchEulerDiscreteScheduler": FlowMatchEulerDiscreteScheduler,
    "PNDMScheduler": PNDMScheduler,
}
MODULES = sorted({importlib.import_module(c.__module__) for c in CLASSES.values()}, key=lambda m: m.__name__)

# ---------------------------------------------------------------------------------------------
# float64 execution of diffusers' own code
# ---------------------------------------------------------------------------------------------


class _Float64Alias:
    """Stands in for a module (torch or numpy): every attribute is the module's, except that
    ``float32`` names ``float64``."""

    def __init__(self, module, float64):
        self._module = module
        self._float64 = float64

    def __getattr__(self, name):
        if name == "float32":
            return self._float64
        return getattr(self._module, name)


@contextlib.contextmanager
def float64_everywhere():
    saved = [(m, m.torch, getattr(m, "np", None)) for m in MODULES]
    default_dtype = torch.get_default_dtype()
    for m in MODULES:
        m.torch = _Float64Alias(torch, torch.float64)
        if getattr(m, "np", None) is not None:
            m.np = _Float64Alias(np, np.float64)
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(default_dtype)
        for m, t, n in saved:
            m.torch = t
            if n is not None:
                m.np = n


class NoiseReplay:
    """The noise a loop may draw: ``pool[k]`` is what the k-th draw returns. ``step`` is set by the
    loop before each ``scheduler.step``; ``draw_steps`` records at which steps draws happened."""

    def __init__(self, pool):
        self.pool = pool
        self.step = None
        self.draw_steps = []


@contextlib.contextmanager
def replay_noise(replay):
    """Replace ``randn_tensor`` in the scheduler modules by a replay of ``replay.pool`` (float32
    tensors), converted to the dtype diffusers asks for."""
    saved = [(m, getattr(m, "randn_tensor", None)) for m in MODULES]

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None, **_):
        k = len(replay.draw_steps)
        if k >= len(replay.pool):
            raise RuntimeError("the sampler drew more noise than the fixture prepared")
        replay.draw_steps.append(replay.step)
        noise = replay.pool[k]
        assert tuple(noise.shape) == tuple(shape), (noise.shape, shape)
        return noise.to(dtype if dtype is not None else torch.get_default_dtype())

    for m, _ in saved:
        if hasattr(m, "randn_tensor"):
            m.randn_tensor = randn_tensor
    try:
        yield replay
    finally:
        for m, f in saved:
            if f is not None:
                m.randn_tensor = f


# ---------------------------------------------------------------------------------------------
# number formatting
# ---------------------------------------------------------------------------------------------


def f32_list(values):
    """float32 values as the shortest decimals that round-trip them."""
    return [float(str(np.float32(v))) for v in np.asarray(values, dtype=np.float32).ravel()]


def f64_list(values):
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def tensor_np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def scalar(x):
    return float(tensor_np(x))


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def numpy_betas(schedule, beta_start, beta_end, T):
    """Plain numpy float64 formulas of diffusers' beta schedules."""
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":

        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])
    raise ValueError(schedule)


TABLE_CASES = [
    dict(name="linear", beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000),
    dict(name="scaled_linear", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000),
    dict(name="squaredcos_cap_v2", beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000),
    # Small T: i / T must be a float division (candle once used integer division here).
    dict(name="squaredcos_cap_v2_T10", beta_schedule="squaredcos_cap_v2", num_train_timesteps=10),
    dict(name="linear_T7", beta_schedule="linear", beta_start=0.001, beta_end=0.05, num_train_timesteps=7),
    dict(name="linear_zero_snr", beta_schedule="linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, rescale_betas_zero_snr=True),
]

POSTERIOR_INDICES = [0, 1, 2, 3, 10, 100, 500, 998, 999]


def make_tables(report):
    out = []
    for case in TABLE_CASES:
        kw = {k: v for k, v in case.items() if k != "name"}
        real = DDPMScheduler(**kw)
        with float64_everywhere():
            wide = DDPMScheduler(**kw)
        assert wide.alphas_cumprod.dtype == torch.float64
        betas64 = tensor_np(wide.betas)
        ac64 = tensor_np(wide.alphas_cumprod)
        if not kw.get("rescale_betas_zero_snr"):
            ref = numpy_betas(kw["beta_schedule"], kw.get("beta_start", 0.0001), kw.get("beta_end", 0.02), kw["num_train_timesteps"])
            assert np.max(np.abs(ref - betas64)) < 1e-15, case["name"]
            assert np.max(np.abs(np.cumprod(1 - ref) - ac64)) < 1e-14, case["name"]
        betas32 = tensor_np(real.betas)
        ac32 = tensor_np(real.alphas_cumprod)
        diff = dict(
            betas_max_abs=float(np.max(np.abs(betas32 - betas64))),
            betas_max_rel=float(np.max(np.abs(betas32 - betas64) / np.abs(betas64))),
            alphas_cumprod_max_abs=float(np.max(np.abs(ac32 - ac64))),
            alphas_cumprod_max_rel=float(np.max(np.abs(ac32 - ac64) / np.maximum(np.abs(ac64), 1e-300))),
        )
        # sigma = sqrt((1 - abar) / abar): relative error grows where abar is tiny.
        if ac64[-1] > 0:
            s64 = np.sqrt((1 - ac64) / ac64)
            s32 = tensor_np(((1 - real.alphas_cumprod) / real.alphas_cumprod) ** 0.5)
            diff["sigmas_max_rel"] = float(np.max(np.abs(s32 - s64) / s64))
        assert diff["alphas_cumprod_max_abs"] < 2e-6, (case["name"], diff)
        report[f"table {case['name']}"] = diff
        entry = dict(
            name=case["name"],
            config_json=real.to_json_string(),
            betas_f64=f64_list(betas64),
            alphas_cumprod_f64=f64_list(ac64),
            betas_f32=f32_list(betas32),
            alphas_cumprod_f32=f32_list(ac32),
            f32_vs_f64=diff,
        )
        if case["name"] == "linear":
            # DDPM posterior q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7), numpy float64.
            b = betas64
            ac = ac64
            ac_prev = np.append(1.0, ac[:-1])
            var = b * (1 - ac_prev) / (1 - ac)
            entry["posterior"] = dict(
                indices=POSTERIOR_INDICES,
                mean_coef1=f64_list((b * np.sqrt(ac_prev) / (1 - ac))[POSTERIOR_INDICES]),
                mean_coef2=f64_list(((1 - ac_prev) * np.sqrt(1 - b) / (1 - ac))[POSTERIOR_INDICES]),
                variance=f64_list(var[POSTERIOR_INDICES]),
                log_variance_clipped=f64_list(np.log(np.append(var[1], var[1:]))[POSTERIOR_INDICES]),
            )
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# timesteps and sigmas
# ---------------------------------------------------------------------------------------------


def build(cls_name, config, N):
    s = CLASSES[cls_name](**config)
    s.set_timesteps(N)
    return s


def describe(s):
    d = dict(timesteps=tensor_np(s.timesteps).astype(np.float64))
    if getattr(s, "sigmas", None) is not None and not isinstance(s, ScoreSdeVpScheduler):
        d["sigmas"] = tensor_np(s.sigmas).astype(np.float64)
    d["init_noise_sigma"] = scalar(s.init_noise_sigma) if hasattr(s, "init_noise_sigma") else 1.0
    return d


def timestep_cases():
    cases = []
    for cls_name in [
        "DDPMScheduler",
        "DDIMScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
    ]:
        for spacing in ["leading", "trailing", "linspace"]:
            for N in [1, 10, 50]:
                cases.append((cls_name, dict(timestep_spacing=spacing), N))
        cases.append((cls_name, dict(timestep_spacing="leading", steps_offset=1), 10))
        # numpy.arange(T, 0, -T/N) has N + 1 entries for these N: diffusers then appends a
        # timestep -1 (a bug the port does not copy; the test checks the first N).
        cases.append((cls_name, dict(timestep_spacing="trailing"), 61))
        cases.append((cls_name, dict(num_train_timesteps=999, beta_schedule="squaredcos_cap_v2", timestep_spacing="linspace"), 7))
    for cls_name in ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler"]:
        for N in [1, 10, 50]:
            cases.append((cls_name, dict(use_karras_sigmas=True), N))
        cases.append((cls_name, dict(use_karras_sigmas=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), 25))
        cases.append((cls_name, dict(use_karras_sigmas=True, beta_schedule="squaredcos_cap_v2"), 20))
    cases.append(("EulerDiscreteScheduler", dict(final_sigmas_type="sigma_min"), 10))
    cases.append(("EulerDiscreteScheduler", dict(use_karras_sigmas=True, sigma_min=0.1, sigma_max=50.0), 10))
    cases.append(("EulerDiscreteScheduler", dict(timestep_type="continuous", prediction_type="v_prediction"), 10))
    cases.append(("EulerDiscreteScheduler", dict(rescale_betas_zero_snr=True, timestep_spacing="trailing"), 10))
    cases.append(("DPMSolverMultistepScheduler", dict(final_sigmas_type="sigma_min"), 10))
    cases.append(("DPMSolverMultistepScheduler", dict(lambda_min_clipped=-5.1), 20))
    for N in [1, 10, 50]:
        for shift in [1.0, 3.0]:
            cases.append(("FlowMatchEulerDiscreteScheduler", dict(shift=shift), N))
    cases.append(("FlowMatchEulerDiscreteScheduler", dict(shift=3.0, use_karras_sigmas=True), 10))
    cases.append(("FlowMatchEulerDiscreteScheduler", dict(shift=2.0, shift_terminal=0.1), 10))
    cases.append(("FlowMatchEulerDiscreteScheduler", dict(invert_sigmas=True), 10))
    for N in [1, 10, 50]:
        cases.append(("ScoreSdeVpScheduler", dict(), N))
    cases.append(("ScoreSdeVpScheduler", dict(num_train_timesteps=1000, sampling_eps=1e-5), 20))
    # PNDM as Stable Diffusion folders configure it (PLMS only): its timesteps hold every model
    # evaluation, the second timestep twice.
    plms = dict(skip_prk_steps=True)
    for spacing in ["leading", "trailing", "linspace"]:
        for N in [1, 2, 3, 4, 10, 50]:
            cases.append(("PNDMScheduler", dict(plms, timestep_spacing=spacing), N))
    cases.append(("PNDMScheduler", dict(plms, timestep_spacing="leading", steps_offset=1, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), 50))
    cases.append(("PNDMScheduler", dict(plms, timestep_spacing="trailing"), 61))
    cases.append(("PNDMScheduler", dict(plms, num_train_timesteps=999, beta_schedule="squaredcos_cap_v2", timestep_spacing="linspace"), 7))
    # PNDM's default: the Runge-Kutta warm-up (12 evaluations) first; diffusers needs N >= 4.
    for spacing in ["leading", "trailing", "linspace"]:
        for N in [4, 5, 10, 50]:
            cases.append(("PNDMScheduler", dict(timestep_spacing=spacing), N))
    cases.append(("PNDMScheduler", dict(timestep_spacing="leading", steps_offset=1), 7))
    return cases


def make_timesteps():
    out = []
    for cls_name, config, N in timestep_cases():
        real = describe(build(cls_name, config, N))
        with float64_everywhere():
            wide = describe(build(cls_name, config, N))
        entry = dict(class_name=cls_name, config=config, num_inference_steps=N)
        entry["timesteps_f64"] = f64_list(wide["timesteps"])
        entry["timesteps_f32"] = f32_list(real["timesteps"])
        if "sigmas" in wide:
            entry["sigmas_f64"] = f64_list(wide["sigmas"])
            entry["sigmas_f32"] = f32_list(real["sigmas"])
        entry["init_noise_sigma_f64"] = wide["init_noise_sigma"]
        entry["init_noise_sigma_f32"] = float(str(np.float32(real["init_noise_sigma"])))
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# toy-model sampling loops
# ---------------------------------------------------------------------------------------------

SHAPE = (1, 2, 4, 4)
NUM_STEPS = 10
TRAJECTORY_ELEMENTS = 4


def toy_model(x, t):
    return 0.3 * x + 0.1 * math.sin(t / 100.0)


LOOP_CASES = [
    dict(name="ddpm", class_name="DDPMScheduler", config=dict(), stochastic=True),
    dict(name="ddpm_fixed_large_v_trailing", class_name="DDPMScheduler", config=dict(variance_type="fixed_large", prediction_type="v_prediction", clip_sample=False, timestep_spacing="trailing"), stochastic=True),
    dict(name="ddpm_sample_linspace_offset", class_name="DDPMScheduler", config=dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1, clip_sample_range=0.8), stochastic=True),
    dict(name="ddim_eta0", class_name="DDIMScheduler", config=dict(), eta=0.0),
    dict(name="ddim_eta0_v_trailing_cosine_zero_snr", class_name="DDIMScheduler", config=dict(prediction_type="v_prediction", timestep_spacing="trailing", beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True, clip_sample=False, set_alpha_to_one=False), eta=0.0),
    dict(name="ddim_eta0_sample_linspace", class_name="DDIMScheduler", config=dict(prediction_type="sample", timestep_spacing="linspace", clip_sample=False), eta=0.0),
    dict(name="ddim_eta1", class_name="DDIMScheduler", config=dict(), eta=1.0, stochastic=True),
    dict(name="euler", class_name="EulerDiscreteScheduler", config=dict()),
    dict(name="euler_karras_v", class_name="EulerDiscreteScheduler", config=dict(use_karras_sigmas=True, prediction_type="v_prediction", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
    dict(name="euler_leading_sample", class_name="EulerDiscreteScheduler", config=dict(timestep_spacing="leading", steps_offset=1, prediction_type="sample")),
    dict(name="heun", class_name="HeunDiscreteScheduler", config=dict()),
    dict(name="heun_karras_v_clip", class_name="HeunDiscreteScheduler", config=dict(use_karras_sigmas=True, prediction_type="v_prediction", clip_sample=True, clip_sample_range=2.0)),
    dict(name="euler_ancestral", class_name="EulerAncestralDiscreteScheduler", config=dict(), stochastic=True),
    dict(name="euler_ancestral_v_trailing", class_name="EulerAncestralDiscreteScheduler", config=dict(prediction_type="v_prediction", timestep_spacing="trailing"), stochastic=True),
    dict(name="dpmpp_2m", class_name="DPMSolverMultistepScheduler", config=dict()),
    dict(name="dpmpp_2m_karras_v", class_name="DPMSolverMultistepScheduler", config=dict(use_karras_sigmas=True, prediction_type="v_prediction")),
    dict(name="dpmpp_2m_heun_sigma_min_sample", class_name="DPMSolverMultistepScheduler", config=dict(solver_type="heun", final_sigmas_type="sigma_min", prediction_type="sample", lower_order_final=False)),
    dict(name="dpmpp_1", class_name="DPMSolverMultistepScheduler", config=dict(solver_order=1, timestep_spacing="trailing")),
    dict(name="sde_vp", class_name="ScoreSdeVpScheduler", config=dict(), stochastic=True),
    dict(name="flow_euler_shift1", class_name="FlowMatchEulerDiscreteScheduler", config=dict(shift=1.0)),
    dict(name="flow_euler_shift3", class_name="FlowMatchEulerDiscreteScheduler", config=dict(shift=3.0)),
    dict(name="flow_euler_stochastic", class_name="FlowMatchEulerDiscreteScheduler", config=dict(shift=3.0, stochastic_sampling=True), stochastic=True),
    # Another sampler chosen for a saved config: diffusers' `Target.from_config(saved_json)`.
    dict(name="ddpm_config_as_euler_ancestral", class_name="DDPMScheduler", target="EulerAncestralDiscreteScheduler", config=dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing"), stochastic=True),
    dict(name="ddpm_config_as_heun", class_name="DDPMScheduler", target="HeunDiscreteScheduler", config=dict(beta_start=0.0002), stochastic=False),
    dict(name="euler_config_as_ddim", class_name="EulerDiscreteScheduler", target="DDIMScheduler", config=dict(prediction_type="v_prediction"), eta=0.0),
    dict(name="ddpm_config_as_dpmpp_2m", class_name="DDPMScheduler", target="DPMSolverMultistepScheduler", config=dict(timestep_spacing="leading", steps_offset=1)),
]
# PNDM (PLMS) at the step counts where its warm-up differs (1–4), at 10 and 50, with Stable
# Diffusion's config (scaled_linear, leading, steps_offset 1, set_alpha_to_one false), every
# spacing, v_prediction and set_alpha_to_one.
SD_PNDM = dict(skip_prk_steps=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, set_alpha_to_one=False)
for _n in [1, 2, 3, 4, 10, 50]:
    LOOP_CASES.append(dict(name=f"pndm_sd_{_n}", class_name="PNDMScheduler", config=SD_PNDM, steps=_n))
LOOP_CASES += [
    dict(name="pndm_v_trailing_5", class_name="PNDMScheduler", config=dict(skip_prk_steps=True, prediction_type="v_prediction", timestep_spacing="trailing"), steps=5),
    dict(name="pndm_v_sd2_linspace_alpha_one_3", class_name="PNDMScheduler", config=dict(SD_PNDM, prediction_type="v_prediction", timestep_spacing="linspace", set_alpha_to_one=True), steps=3),
    dict(name="pndm_linspace_10", class_name="PNDMScheduler", config=dict(skip_prk_steps=True, timestep_spacing="linspace"), steps=10),
    dict(name="pndm_cosine_leading_v_2", class_name="PNDMScheduler", config=dict(skip_prk_steps=True, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"), steps=2),
    # skip_prk_steps=False (PNDMScheduler's default): the Runge-Kutta warm-up, then PLMS.
    dict(name="pndm_prk_4", class_name="PNDMScheduler", config=dict(), steps=4),
    dict(name="pndm_prk_10", class_name="PNDMScheduler", config=dict(), steps=10),
    dict(name="pndm_prk_v_trailing_7", class_name="PNDMScheduler", config=dict(prediction_type="v_prediction", timestep_spacing="trailing", set_alpha_to_one=True), steps=7),
    dict(name="pndm_prk_sd_50", class_name="PNDMScheduler", config=dict(SD_PNDM, skip_prk_steps=False), steps=50),
]


def run_loop(case, config_json, z, pool, dtype):
    target = CLASSES[case.get("target", case["class_name"])]
    s = target.from_config(json.loads(config_json))
    s.set_timesteps(case.get("steps", NUM_STEPS))
    x = z.to(dtype)
    model_timesteps = []
    trajectory = []
    replay = NoiseReplay(pool)
    with replay_noise(replay):
        if isinstance(s, ScoreSdeVpScheduler):
            T = s.config.num_train_timesteps
            x_mean = x
            for i, t in enumerate(s.timesteps):
                replay.step = i
                model_t = float(t) * (T - 1)
                model_timesteps.append(model_t)
                score = toy_model(x, model_t)
                x, x_mean = s.step_pred(score, x, t)
                trajectory.append(x_mean)
            final = x_mean  # noise removal at the last step, as score_sde does
        else:
            x = x * getattr(s, "init_noise_sigma", 1.0)
            for i, t in enumerate(s.timesteps):
                replay.step = i
                x_in = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
                model_timesteps.append(float(t))
                m = toy_model(x_in, float(t))
                kwargs = dict(eta=case["eta"]) if "eta" in case else {}
                x = s.step(m, t, x, **kwargs).prev_sample
                trajectory.append(x)
            final = x
    assert final.dtype == dtype, (case["name"], final.dtype)
    return dict(
        final=tensor_np(final).astype(np.float64).ravel(),
        model_timesteps=model_timesteps,
        trajectory=[tensor_np(v).astype(np.float64).ravel()[:TRAJECTORY_ELEMENTS] for v in trajectory],
        draw_steps=replay.draw_steps,
    )


def make_loops(report):
    g = torch.Generator().manual_seed(20240611)
    out = []
    for case in LOOP_CASES:
        source = CLASSES[case["class_name"]](**case["config"])
        config_json = source.to_json_string()
        z = torch.randn(SHAPE, generator=g, dtype=torch.float32)
        pool = [torch.randn(SHAPE, generator=g, dtype=torch.float32) for _ in range(NUM_STEPS)] if case.get("stochastic") else []
        real = run_loop(case, config_json, z, pool, torch.float32)
        with float64_everywhere():
            wide = run_loop(case, config_json, z, pool, torch.float64)
        assert real["draw_steps"] == wide["draw_steps"], case["name"]
        # Heun's loop index counts model evaluations; its noise-free, so no draws to map.
        noises = pool[: len(real["draw_steps"])]
        scale = np.max(np.abs(wide["final"]))
        err = float(np.max(np.abs(real["final"] - wide["final"])) / scale)
        report[f"loop {case['name']} f32 vs f64 (max abs / max |x|)"] = err
        entry = dict(
            name=case["name"],
            # The exact text diffusers writes to scheduler_config.json (may hold -Infinity).
            scheduler_config_json=config_json,
            kind_class_name=case.get("target", case["class_name"]),
            num_inference_steps=case.get("steps", NUM_STEPS),
            eta=case.get("eta", 0.0),
            z=f32_list(z),
            noise=[f32_list(n) for n in noises],
            noise_steps=real["draw_steps"],
            model_timesteps_f64=wide["model_timesteps"],
            model_timesteps_f32=[float(str(np.float32(t))) for t in real["model_timesteps"]],
            final_f64=f64_list(wide["final"]),
            final_f32=f32_list(real["final"]),
            trajectory_f64=[f64_list(v) for v in wide["trajectory"]],
            f32_vs_f64_max_rel=err,
        )
        out.append(entry)
    return out


# PNDM image-to-image as StableDiffusionImg2ImgPipeline runs it: set_timesteps(N), then the loop
# over scheduler.timesteps[t_start * order:] (the N + 1 PLMS evaluations, sliced) with the
# scheduler's counter at 0, from a given sample (here z itself, as if already noised).
IMG2IMG_CASES = [
    dict(name="pndm_sd_img2img_10_from_1", config=SD_PNDM, steps=10, t_start=1),
    dict(name="pndm_sd_img2img_10_from_2", config=SD_PNDM, steps=10, t_start=2),
    dict(name="pndm_v_trailing_img2img_10_from_6", config=dict(skip_prk_steps=True, prediction_type="v_prediction", timestep_spacing="trailing"), steps=10, t_start=6),
    dict(name="pndm_sd_img2img_10_from_9", config=SD_PNDM, steps=10, t_start=9),
]


def run_img2img(case, config_json, z, dtype):
    s = PNDMScheduler.from_config(json.loads(config_json))
    s.set_timesteps(case["steps"])
    x = z.to(dtype)
    model_timesteps = []
    for t in s.timesteps[case["t_start"] * s.order:]:
        model_timesteps.append(float(t))
        x = s.step(toy_model(x, float(t)), t, x).prev_sample
    return tensor_np(x).astype(np.float64).ravel(), model_timesteps


def make_img2img(report):
    g = torch.Generator().manual_seed(20240612)
    out = []
    for case in IMG2IMG_CASES:
        config_json = PNDMScheduler(**case["config"]).to_json_string()
        z = torch.randn(SHAPE, generator=g, dtype=torch.float32)
        real, real_t = run_img2img(case, config_json, z, torch.float32)
        with float64_everywhere():
            wide, wide_t = run_img2img(case, config_json, z, torch.float64)
        assert real_t == wide_t, case["name"]
        err = float(np.max(np.abs(real - wide)) / np.max(np.abs(wide)))
        report[f"img2img {case['name']} f32 vs f64 (max abs / max |x|)"] = err
        out.append(dict(
            name=case["name"],
            scheduler_config_json=config_json,
            num_inference_steps=case["steps"],
            first_step=case["t_start"],
            z=f32_list(z),
            model_timesteps=wide_t,
            final_f64=f64_list(wide),
            final_f32=f32_list(real),
        ))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "schedules"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    report = {}
    meta = dict(diffusers=diffusers.__version__, torch=torch.__version__, numpy=np.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability())
    files = dict(
        tables=dict(meta=meta, tables=make_tables(report)),
        timesteps=dict(meta=meta, cases=make_timesteps()),
        loops=dict(meta=meta, toy_model="m(x, t) = 0.3 * x + 0.1 * sin(t / 100)", shape=list(SHAPE), cases=make_loops(report), img2img_cases=make_img2img(report)),
    )
    for name, content in files.items():
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(content, f, separators=(",", ":"), allow_nan=False)
            f.write("\n")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(
            "# Scheduler fixtures\n\n"
            "Generated by `scripts/make_schedule_fixtures.py` (see its docstring) with "
            f"diffusers {meta['diffusers']}, torch {meta['torch']}, numpy {meta['numpy']} "
            f"(CPU capability {meta['cpu_capability']}). Do not edit by hand.\n\n"
            "* `tables.json`: betas / alphas_cumprod (f64 = diffusers' code run in float64; f32 = diffusers as is).\n"
            "* `timesteps.json`: `scheduler.timesteps`, `scheduler.sigmas`, `init_noise_sigma` per class, spacing and N.\n"
            "* `loops.json`: 10-step sampling loops (PNDM: 1 to 50 steps) with the toy model `m = 0.3 x + 0.1 sin(t / 100)`; "
            "`img2img_cases`: PNDM loops over `scheduler.timesteps[t_start:]` as the image-to-image pipeline runs them.\n\n"
            "## Measured float32-vs-float64 differences\n\n"
            + "".join(f"* {k}: {json.dumps(v)}\n" for k, v in report.items())
        )
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"wrote {args.out} ({total} bytes)")
    for k, v in report.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
