#!/usr/bin/env python3
"""Export diffusers' own sampling loops on the fixture U-Nets, for the GPU sampler's tests.

Writes ``tests/fixtures/sampling/`` (``manifest.json``, one ``<case>.safetensors`` per case and
``README.md``) with the pinned torch / diffusers of ``scripts/requirements.txt``:

    OMP_NUM_THREADS=1 /tmp/venv/bin/python scripts/make_sampler_fixtures.py \\
        [--out tests/fixtures/sampling] [--trained weights/fashion-ddpm --trained-name fashion_ddpm_ddim50]

Each case runs the loop of diffusers' pipelines, in float32 on the CPU::

    latents = noise * scheduler.init_noise_sigma          # after scheduler.set_timesteps(N)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(latents, t)
        out = unet(inp, t, class_labels=labels).sample    # CFG: batch cat([inp, inp]), labels cat([y, null])
        latents = scheduler.step(out, t, latents, **kw).prev_sample   # kw = {eta} for DDIM

``noise`` (standard normal from a ``torch.Generator`` seeded by the case name, before the
``init_noise_sigma`` scaling) and the final ``latents`` (``sample``) go to ``<case>.safetensors``.
Only deterministic samplers are exported (DDIM with eta = 0, Euler, Heun, DPM-Solver++(2M),
flow-matching Euler, PNDM): stochastic ones draw noise a GPU RNG cannot replay.

Every case is run a second time in float64 to measure how sensitive the result is to rounding
(``f64_rel_diff`` = max|x_f32 - x_f64| / max|x_f64| in the manifest): the model is ``.double()``,
the scheduler modules' ``torch`` / ``np`` globals are swapped for aliases whose ``float32`` is
``float64`` (the technique of ``make_schedule_fixtures.py``: diffusers' own source lines run in
double precision, schedule tables included) and diffusers' sinusoidal timestep embedding, which
casts to float32 even in a float64 model, is replaced by the same formula in float64.
``f64_rel_diff_f32_temb`` is the same measurement keeping diffusers' float32 timestep embedding.
``jitter_rel_diff`` reruns the float32 loop with every model output multiplied elementwise by
(1 + 1e-6 N(0, 1)) (another float32 U-Net's rounding, roughly) and reports the largest relative
change of the result; ``suggested_rel_tol`` = max(1e-3, 3x the larger of the two, rounded up).

With ``--trained DIR --trained-name NAME`` one more case is written: the model in DIR sampled
with DDIM (50 steps, eta = 0; ``DDIMScheduler.from_config`` of DIR's own scheduler_config.json,
DDPMScheduler defaults when DIR has none), 4 images, class labels 0..3 when the model is
class-conditional, no guidance. Its ``model`` entry is DIR relative to ``tests/fixtures``
(``../../weights/fashion-ddpm``), its ``model_path`` DIR relative to the repository root.
Without ``--trained`` the trained cases of an existing manifest are kept as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import math
import os
import platform
import shutil
import sys
import zlib

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file, save_file

import diffusers
import diffusers.models.embeddings as diffusers_embeddings
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UNet2DModel,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")

CLASSES = {
    "DDIMScheduler": DDIMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "HeunDiscreteScheduler": HeunDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    "FlowMatchEulerDiscreteScheduler": FlowMatchEulerDiscreteScheduler,
    "PNDMScheduler": PNDMScheduler,
}
CLI = {
    "DDIMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler",
    "HeunDiscreteScheduler": "heun",
    "DPMSolverMultistepScheduler": "dpm++2m",
    "FlowMatchEulerDiscreteScheduler": "flow-euler",
    "PNDMScheduler": "pndm",
}
SCHEDULER_MODULES = sorted(
    {importlib.import_module(c.__module__) for c in list(CLASSES.values()) + [DDPMScheduler]},
    key=lambda m: m.__name__,
)

BATCH = 2
TRAINED_BATCH = 4
UNCOND_MODEL = "google_flags"
COND_MODEL = "class_conditional"
COND_LABELS = [3, 7]
# Relative size of the per-element perturbation of the model output in the jitter runs: about
# what separates two float32 U-Net forwards (torch f32 vs f64 differs by ~1e-6 on outputs ~1).
JITTER = 1e-6
JITTER_SEEDS = (1, 2)

# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------


def case(name, cls, steps, config=None, model=UNCOND_MODEL, eta=None, labels=None, guidance=None):
    if eta is None and cls == "DDIMScheduler":
        eta = 0.0
    return dict(name=name, cls=cls, steps=steps, config=config or {}, model=model, eta=eta, labels=labels, guidance=guidance)


NOCLIP = dict(clip_sample=False)
SCALED_LINEAR = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
COSINE = dict(beta_schedule="squaredcos_cap_v2")
KARRAS = dict(use_karras_sigmas=True)
DPMPP_2M = dict(algorithm_type="dpmsolver++", solver_order=2)  # the class defaults, made explicit
PLMS = dict(skip_prk_steps=True)

CASES = [
    # DDIM, eta = 0. DDIMScheduler's defaults: linear betas, leading spacing, clip_sample=True,
    # set_alpha_to_one=True, steps_offset=0.
    case("ddim_eps_1", "DDIMScheduler", 1),
    case("ddim_eps_10", "DDIMScheduler", 10),
    case("ddim_eps_50", "DDIMScheduler", 50),
    case("ddim_eps_10_noclip", "DDIMScheduler", 10, NOCLIP),
    case("ddim_eps_50_noclip", "DDIMScheduler", 50, NOCLIP),
    case("ddim_sample_10", "DDIMScheduler", 10, dict(prediction_type="sample")),
    case("ddim_v_10_noclip", "DDIMScheduler", 10, dict(prediction_type="v_prediction", **NOCLIP)),
    case("ddim_eps_10_trailing_noclip", "DDIMScheduler", 10, dict(timestep_spacing="trailing", **NOCLIP)),
    case("ddim_eps_10_scaled_linear_noclip", "DDIMScheduler", 10, dict(**SCALED_LINEAR, **NOCLIP)),
    case("ddim_eps_10_cosine_noclip", "DDIMScheduler", 10, dict(**COSINE, **NOCLIP)),
    # Euler (defaults: linspace spacing, final sigma 0).
    case("euler_eps_1", "EulerDiscreteScheduler", 1),
    case("euler_eps_10", "EulerDiscreteScheduler", 10),
    case("euler_eps_50", "EulerDiscreteScheduler", 50),
    case("euler_eps_10_karras", "EulerDiscreteScheduler", 10, KARRAS),
    case("euler_v_10", "EulerDiscreteScheduler", 10, dict(prediction_type="v_prediction")),
    # Heun: N steps = 2N - 1 model evaluations.
    case("heun_eps_1", "HeunDiscreteScheduler", 1),
    case("heun_eps_10", "HeunDiscreteScheduler", 10),
    case("heun_v_10_karras", "HeunDiscreteScheduler", 10, dict(prediction_type="v_prediction", **KARRAS)),
    # DPM-Solver++(2M) (defaults: lower_order_final=True, final_sigmas_type="zero").
    case("dpmpp2m_eps_1", "DPMSolverMultistepScheduler", 1, DPMPP_2M),
    case("dpmpp2m_eps_10", "DPMSolverMultistepScheduler", 10, DPMPP_2M),
    case("dpmpp2m_eps_50", "DPMSolverMultistepScheduler", 50, DPMPP_2M),
    case("dpmpp2m_sample_10", "DPMSolverMultistepScheduler", 10, dict(prediction_type="sample", **DPMPP_2M)),
    case("dpmpp2m_eps_10_karras", "DPMSolverMultistepScheduler", 10, dict(**KARRAS, **DPMPP_2M)),
    # Flow matching Euler: the model output is read as the velocity; timesteps are sigma * 1000.
    case("flow_euler_shift1_1", "FlowMatchEulerDiscreteScheduler", 1, dict(shift=1.0)),
    case("flow_euler_shift1_10", "FlowMatchEulerDiscreteScheduler", 10, dict(shift=1.0)),
    case("flow_euler_shift1_50", "FlowMatchEulerDiscreteScheduler", 50, dict(shift=1.0)),
    case("flow_euler_shift3_10", "FlowMatchEulerDiscreteScheduler", 10, dict(shift=3.0)),
    # PNDM: PLMS (skip_prk_steps=True, as Stable Diffusion configures it; N + 1 evaluations) and
    # the class default, the Runge-Kutta warm-up (N + 9 evaluations).
    case("pndm_plms_eps_1_trailing", "PNDMScheduler", 1, dict(PLMS, timestep_spacing="trailing")),
    case("pndm_plms_eps_10_sd", "PNDMScheduler", 10, dict(PLMS, **SCALED_LINEAR, steps_offset=1)),
    case("pndm_plms_eps_50", "PNDMScheduler", 50, PLMS),
    case("pndm_plms_v_10_trailing", "PNDMScheduler", 10, dict(PLMS, prediction_type="v_prediction", timestep_spacing="trailing")),
    case("pndm_prk_eps_10", "PNDMScheduler", 10),
    # Class-conditional (num_class_embeds = 11; label 10 serves as the null label).
    case("cc_ddim_10_label", "DDIMScheduler", 10, NOCLIP, model=COND_MODEL, labels=COND_LABELS),
    case("cc_ddim_10_cfg3", "DDIMScheduler", 10, NOCLIP, model=COND_MODEL, labels=COND_LABELS, guidance=3.0),
]

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


def _timestep_embedding_f64(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1, max_period=10000):
    """diffusers.models.embeddings.get_timestep_embedding, in float64 throughout."""
    assert len(timesteps.shape) == 1
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float64, device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = timesteps[:, None].double() * torch.exp(exponent)[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


@contextlib.contextmanager
def float64_everywhere(f64_time_embedding=True):
    saved = [(m, m.torch, getattr(m, "np", None)) for m in SCHEDULER_MODULES]
    saved_emb = diffusers_embeddings.get_timestep_embedding
    default_dtype = torch.get_default_dtype()
    for m in SCHEDULER_MODULES:
        m.torch = _Float64Alias(torch, torch.float64)
        if getattr(m, "np", None) is not None:
            m.np = _Float64Alias(np, np.float64)
    if f64_time_embedding:
        diffusers_embeddings.get_timestep_embedding = _timestep_embedding_f64
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(default_dtype)
        diffusers_embeddings.get_timestep_embedding = saved_emb
        for m, t, n in saved:
            m.torch = t
            if n is not None:
                m.np = n


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def json_safe(value):
    """Python's json writes non-finite floats as bare NaN / Infinity tokens; the crate's config
    reader accepts them as the strings "NaN" / "Infinity" / "-Infinity", which is what the
    manifest holds instead (valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def as_float(x):
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def load_unet(model_dir):
    model = UNet2DModel.from_pretrained(model_dir, torch_dtype=torch.float32, low_cpu_mem_usage=False)
    return model.eval()


def sample_shape(model, batch):
    size = model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (batch, model.config.in_channels, h, w)


def case_noise(name, shape):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(shape, generator=g, dtype=torch.float32)


def run_loop(c, config_json, unet, noise, dtype, null_label, jitter_seed=None):
    """diffusers' pipeline loop. ``config_json`` is the scheduler's saved config text. With
    ``jitter_seed`` every model output is multiplied by (1 + JITTER * N(0, 1)), elementwise,
    standing in for the rounding of another float32 implementation of the U-Net."""
    jitter = torch.Generator().manual_seed(jitter_seed) if jitter_seed is not None else None
    torch.manual_seed(0)  # Euler's step draws (unused, s_churn = 0) noise from the global RNG
    scheduler = CLASSES[c["cls"]].from_config(json.loads(config_json))
    # FlowMatchEulerDiscreteScheduler has neither init_noise_sigma nor scale_model_input (the
    # flow pipelines use neither): 1 and the identity.
    init_sigma_before = as_float(getattr(scheduler, "init_noise_sigma", 1.0))
    scheduler.set_timesteps(c["steps"])
    init_sigma = getattr(scheduler, "init_noise_sigma", 1.0)
    latents = noise.to(dtype) * init_sigma
    init_sigma = as_float(init_sigma)
    labels = None
    if c["labels"] is not None:
        labels = torch.tensor(c["labels"], dtype=torch.long)
        if c["guidance"] is not None:
            labels = torch.cat([labels, torch.full_like(labels, null_label)])
    model_timesteps = []
    kw = dict(eta=c["eta"]) if c["cls"] == "DDIMScheduler" else {}
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
            if c["guidance"] is not None:
                inp = torch.cat([inp, inp])
            model_timesteps.append(as_float(t))
            out = unet(inp, t, class_labels=labels).sample
            if jitter is not None:
                out = out * (1 + JITTER * torch.randn(out.shape, generator=jitter, dtype=out.dtype))
            if c["guidance"] is not None:
                cond, uncond = out.chunk(2)
                out = uncond + c["guidance"] * (cond - uncond)
            latents = scheduler.step(out, t, latents, **kw).prev_sample
    assert latents.dtype == dtype, (c["name"], latents.dtype)
    assert torch.isfinite(latents).all(), c["name"]
    return dict(
        sample=latents,
        timesteps=model_timesteps,
        init_noise_sigma=init_sigma,
        init_noise_sigma_before_set_timesteps=init_sigma_before,
        scheduler=scheduler,
    )


def suggested_tol(entry):
    """1e-3, or 3x the measured sensitivity rounded up to 1, 2 or 5 x 10^k where that is larger."""
    need = 3 * max(entry["f64_rel_diff"], entry["jitter_rel_diff"])
    if need <= 1e-3:
        return 1e-3
    k = math.floor(math.log10(need))
    for m in (1, 2, 5, 10):
        if m * 10.0**k >= need:
            return float(f"{m * 10.0**k:.0e}")


def rel_diff(a, ref):
    a = a.double()
    ref = ref.double()
    return float((a - ref).abs().max() / ref.abs().max())


def check_against_ddim_pipeline(c, config_json, unet, noise, sample):
    """The DDIM cases must be what diffusers' DDIMPipeline produces (it draws the starting
    noise with randn_tensor from the generator, i.e. torch.randn on the CPU, and returns
    (x / 2 + 0.5).clamp(0, 1))."""
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(json.loads(config_json)))
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(zlib.crc32(c["name"].encode()))
    image = pipe(batch_size=noise.shape[0], generator=g, eta=c["eta"], num_inference_steps=c["steps"], output_type="np").images
    expect = (sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    err = float(np.max(np.abs(image - expect)))
    assert err < 1e-6, (c["name"], err)


def make_case(c, model_dir, unet, unet64, out_dir, batch, extra=None):
    shape = sample_shape(unet, batch)
    null_label = None
    if c["guidance"] is not None:
        n = unet.config.num_class_embeds
        assert n is not None and n >= 2, "classifier-free guidance needs a null label"
        null_label = n - 1
        assert all(0 <= y < null_label for y in c["labels"])
    if c.get("source_config") is not None:
        scheduler = CLASSES[c["cls"]].from_config(c["source_config"])
    else:
        scheduler = CLASSES[c["cls"]](**c["config"])
    config_json = scheduler.to_json_string()
    noise = case_noise(c["name"], shape)

    real = run_loop(c, config_json, unet, noise, torch.float32, null_label)
    with float64_everywhere(f64_time_embedding=True):
        wide = run_loop(c, config_json, unet64, noise, torch.float64, null_label)
    with float64_everywhere(f64_time_embedding=False):
        wide_t32 = run_loop(c, config_json, unet64, noise, torch.float64, null_label)
    jittered = [run_loop(c, config_json, unet, noise, torch.float32, null_label, seed)["sample"] for seed in JITTER_SEEDS]
    if c["cls"] == "DDIMScheduler" and c["labels"] is None:
        check_against_ddim_pipeline(c, config_json, unet, noise, real["sample"])

    sample = real["sample"].contiguous()
    fname = f"{c['name']}.safetensors"
    save_file({"noise": noise.contiguous(), "sample": sample}, os.path.join(out_dir, fname))
    back = load_file(os.path.join(out_dir, fname))
    assert torch.equal(back["noise"], noise) and torch.equal(back["sample"], sample)

    entry = dict(
        name=c["name"],
        model=os.path.relpath(model_dir, FIXTURES),
        model_path=os.path.relpath(model_dir, REPO),
        scheduler_class=c["cls"],
        cli_scheduler=CLI[c["cls"]],
        scheduler_config=json.loads(config_json),
        steps=c["steps"],
        eta=c["eta"] if c["eta"] is not None else 0.0,
        class_labels=c["labels"],
        guidance_scale=c["guidance"],
        null_label=null_label,
        file=fname,
        batch=batch,
        shape=list(shape),
        noise_seed=zlib.crc32(c["name"].encode()),
        init_noise_sigma=real["init_noise_sigma"],
        timesteps=real["timesteps"],
        num_model_evals=len(real["timesteps"]),
        max_abs_sample=float(sample.abs().max()),
        f64_rel_diff=rel_diff(real["sample"], wide["sample"]),
        f64_rel_diff_f32_temb=rel_diff(real["sample"], wide_t32["sample"]),
        jitter_rel_diff=max(rel_diff(j, real["sample"]) for j in jittered),
    )
    entry["suggested_rel_tol"] = suggested_tol(entry)
    if extra:
        entry.update(extra)
    notes = dict(
        init_noise_sigma_before_set_timesteps=real["init_noise_sigma_before_set_timesteps"],
        lower_order_final=getattr(real["scheduler"].config, "lower_order_final", None),
    )
    return entry, notes


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def fmt_steps(ts, limit=12):
    s = [f"{t:g}" for t in ts]
    return ", ".join(s) if len(s) <= limit else ", ".join(s[:6] + ["…"] + s[-4:])


def write_readme(out_dir, manifest, command):
    v = manifest["versions"]
    lines = [
        "# Sampling-loop fixtures",
        "",
        "diffusers' own sampling loops on the 16×16 fixture U-Nets, as references for the GPU",
        "sampler (the tests compare the final `sample` to ≲1e-3 relative). Generated by",
        f"`scripts/make_sampler_fixtures.py` (see its docstring) with diffusers {v['diffusers']},",
        f"torch {v['torch']}, numpy {v['numpy']}, safetensors {v['safetensors']}, on the CPU in float32:",
        "",
        "```sh",
        command,
        "```",
        "",
        "Do not edit by hand. The loop is the one of diffusers' pipelines:",
        "",
        "```python",
        "scheduler.set_timesteps(N)",
        "latents = noise * scheduler.init_noise_sigma",
        "for t in scheduler.timesteps:",
        "    inp = scheduler.scale_model_input(latents, t)",
        "    out = unet(inp, t, class_labels=labels).sample",
        "    # classifier-free guidance: unet(cat([inp, inp]), t, class_labels=cat([labels, null])),",
        "    # out = out_uncond + w * (out_cond - out_uncond)",
        "    latents = scheduler.step(out, t, latents, **({'eta': eta} if ddim else {})).prev_sample",
        "```",
        "",
        "## Files",
        "",
        "* `manifest.json`: `cases[]` with `name`, `model` (directory under `tests/fixtures`, or a",
        "  path relative to it for a trained model), `model_path` (relative to the repository root),",
        "  `scheduler_class`, `cli_scheduler`, `scheduler_config` (the scheduler's `save_config`",
        "  dict, `_class_name` included; non-finite floats as the strings `\"-Infinity\"` etc.),",
        "  `steps`, `eta`, `class_labels`, `guidance_scale`, `null_label`, `file`, `batch`, `shape`,",
        "  `noise_seed` (the `torch.Generator` seed, crc32 of the name), `init_noise_sigma`,",
        "  `timesteps` (the values passed to the U-Net, in order, as float; Heun's repeat),",
        "  `num_model_evals`, `max_abs_sample`, `f64_rel_diff`, `f64_rel_diff_f32_temb`,",
        "  `jitter_rel_diff`, `suggested_rel_tol` (below); trained cases add `trained: true`,",
        "  `source_scheduler_config` (the directory's own file) and `source_scheduler_config_from`.",
        "* `<name>.safetensors`: float32 `noise` `[B, C, H, W]` (standard normal, before the",
        "  `init_noise_sigma` scaling) and `sample` `[B, C, H, W]` (the final `prev_sample`, no clamping).",
        "",
        "## float32 vs float64",
        "",
        "Each loop was rerun in float64 (model `.double()`, the scheduler modules' float32 aliased to",
        "float64 so diffusers' own code computes its tables and steps in double precision, and the",
        "sinusoidal timestep embedding, which diffusers casts to float32 even in a float64 model,",
        "computed in float64). `f64_rel_diff` = max|x_f32 − x_f64| / max|x_f64|; `f64_rel_diff_f32_temb`",
        "is the same with diffusers' float32 timestep embedding kept. They indicate the tolerance a",
        "float32 GPU implementation can be held to. `jitter_rel_diff` is the largest relative change",
        f"of the final sample when every model output is multiplied by (1 + {JITTER:g}·N(0, 1)) elementwise",
        f"(seeds {list(JITTER_SEEDS)}), standing in for another float32 U-Net's rounding: it exposes",
        "ill-conditioned loops. `suggested_rel_tol` = 1e-3, or 3× the larger of the two rounded up",
        "(1, 2, 5 × 10^k) where that exceeds 1e-3.",
        "",
        "| case | model | scheduler | steps | evals | init σ | timesteps | max abs | f64 rel diff | (f32 temb) | jitter | tol |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in manifest["cases"]:
        extra = []
        cfg = e["scheduler_config"]
        defaults = CLASSES[e["scheduler_class"]]().config
        for k, val in cfg.items():
            if k.startswith("_"):
                continue
            d = defaults.get(k)
            if json_safe(d) != val and not (isinstance(d, (list, tuple)) and list(d) == val):
                extra.append(f"{k}={val}")
        if e["eta"]:
            extra.append(f"eta={e['eta']}")
        if e["class_labels"] is not None:
            extra.append(f"labels={e['class_labels']}")
        if e["guidance_scale"] is not None:
            extra.append(f"w={e['guidance_scale']}, null={e['null_label']}")
        sched = e["cli_scheduler"] + (f" ({', '.join(extra)})" if extra else "")
        lines.append(
            f"| `{e['name']}` | {e['model']} | {sched} | {e['steps']} | {e['num_model_evals']} | "
            f"{e['init_noise_sigma']:.6g} | {fmt_steps(e['timesteps'])} | {e['max_abs_sample']:.4g} | "
            f"{e['f64_rel_diff']:.2e} | {e['f64_rel_diff_f32_temb']:.2e} | {e['jitter_rel_diff']:.2e} | "
            f"{e['suggested_rel_tol']:g} |"
        )
    lines += ["", "## Notes", ""] + [f"* {n}" for n in manifest["notes"]] + [""]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(FIXTURES, "sampling"))
    parser.add_argument("--trained", help="a trained model directory (config.json, weights, scheduler_config.json)")
    parser.add_argument("--trained-name", help="the case name for --trained")
    parser.add_argument("--trained-steps", type=int, default=50)
    parser.add_argument("--only", help="comma-separated built-in case names to run ('' for none); for trying the script out with --out elsewhere")
    args = parser.parse_args()
    if bool(args.trained) != bool(args.trained_name):
        parser.error("--trained and --trained-name go together")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out_dir = os.path.abspath(args.out)

    kept = []
    old_manifest = os.path.join(out_dir, "manifest.json")
    if not args.trained and os.path.exists(old_manifest):
        with open(old_manifest) as f:
            old = json.load(f)
        for e in old["cases"]:
            if e.get("trained"):
                with open(os.path.join(out_dir, e["file"]), "rb") as f:
                    kept.append((e, f.read()))
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    entries = []
    notes_by_case = {}
    models = {}
    only = None if args.only is None else {n for n in args.only.split(",") if n}
    for c in CASES:
        if only is not None and c["name"] not in only:
            continue
        if c["model"] not in models:
            d = os.path.join(FIXTURES, c["model"])
            unet = load_unet(d)
            models[c["model"]] = (d, unet, copy.deepcopy(unet).double().eval())
        d, unet, unet64 = models[c["model"]]
        entry, notes = make_case(c, d, unet, unet64, out_dir, BATCH)
        entries.append(entry)
        notes_by_case[c["name"]] = notes
        print(f"{entry['name']:34s} evals {entry['num_model_evals']:3d}  max|x| {entry['max_abs_sample']:10.4g}  "
              f"f64 rel {entry['f64_rel_diff']:.2e}  (f32 temb {entry['f64_rel_diff_f32_temb']:.2e})  "
              f"jitter {entry['jitter_rel_diff']:.2e}  tol {entry['suggested_rel_tol']:g}", flush=True)

    command = "OMP_NUM_THREADS=1 /tmp/venv/bin/python scripts/make_sampler_fixtures.py"
    if args.trained:
        tdir = os.path.abspath(args.trained)
        unet = load_unet(tdir)
        sched_path = os.path.join(tdir, "scheduler_config.json")
        if os.path.exists(sched_path):
            with open(sched_path) as f:
                source = json.load(f)
            source_note = "scheduler_config.json"
        else:
            source = json.loads(DDPMScheduler().to_json_string())
            source_note = "DDPMScheduler defaults (the directory has no scheduler_config.json)"
            print(f"warning: {sched_path} missing; using DDPMScheduler defaults", file=sys.stderr)
        n = unet.config.num_class_embeds
        labels = list(range(TRAINED_BATCH)) if n is not None and n >= TRAINED_BATCH else None
        c = case(args.trained_name, "DDIMScheduler", args.trained_steps, model=None, labels=labels)
        c["source_config"] = source
        entry, notes = make_case(
            c, tdir, unet, copy.deepcopy(unet).double().eval(), out_dir, TRAINED_BATCH,
            extra=dict(trained=True, source_scheduler_config=source, source_scheduler_config_from=source_note),
        )
        entries.append(entry)
        notes_by_case[entry["name"]] = notes
        print(f"{entry['name']:34s} evals {entry['num_model_evals']:3d}  max|x| {entry['max_abs_sample']:10.4g}  "
              f"f64 rel {entry['f64_rel_diff']:.2e}  (f32 temb {entry['f64_rel_diff_f32_temb']:.2e})  "
              f"jitter {entry['jitter_rel_diff']:.2e}  tol {entry['suggested_rel_tol']:g}", flush=True)
        command += f" --trained {os.path.relpath(tdir, REPO)} --trained-name {args.trained_name}"
        if args.trained_steps != 50:
            command += f" --trained-steps {args.trained_steps}"
    for e, blob in kept:
        with open(os.path.join(out_dir, e["file"]), "wb") as f:
            f.write(blob)
        entries.append(e)
        print(f"kept trained case {e['name']} from the previous manifest")
        command += f"  # kept from an earlier run: {e['name']} (--trained {e['model_path']})"

    notes = [
        "`init_noise_sigma` is read after `set_timesteps` (as the pipelines do). "
        + "; ".join(
            f"`{k}`: {v['init_noise_sigma_before_set_timesteps']:.6g} before set_timesteps"
            for k, v in notes_by_case.items()
            if abs(v["init_noise_sigma_before_set_timesteps"] - next(e for e in entries if e["name"] == k)["init_noise_sigma"]) > 1e-6
        )
        + " (cases not listed: the same value before and after).",
        "Euler and Heun (linspace/trailing spacing) start from init_noise_sigma = σ_max (not "
        "sqrt(σ_max² + 1), which is for leading spacing): ≈ 157.4 for Euler's default betas "
        "(linear 1e-4 → 0.02) but ≈ 25.15 for Heun, whose class defaults are linear 0.00085 → 0.012. "
        "DDIM and DPM-Solver++ use 1.",
        "Euler and Heun with N = 1 and the default linspace spacing sample at t = 0 only "
        "(np.linspace(0, 999, 1) = [0]): init_noise_sigma = σ(t=0) ≈ 0.01 (Euler) / 0.029 (Heun); "
        "there the result is sensitive to diffusers' float32 1 − ᾱ_0 (f64_rel_diff ~1e-4 / 1e-5).",
        "Heun evaluates the model 2N − 1 times: timesteps are [t0, t1, t1, t2, t2, …, t_{N−1}, "
        "t_{N−1}] (each t after the first twice: the corrector of one step, then the predictor of "
        "the next); the last step (σ_{N−1} → 0) is a plain Euler step whose corrector is never "
        "run, and N = 1 is a single Euler step.",
        "DPM-Solver++(2M): the first step is first order (no history), and in diffusers 0.42.1 the "
        "last step is first order too whenever final_sigmas_type == 'zero' (the default), whatever "
        "N is (besides lower_order_final=True with N < 15, or euler_at_final); N = 1 is one "
        "first-order step from t = 999 straight to σ = 0.",
        "DDIM's default spacing is `leading` with steps_offset 0: 10 steps are 900, 800, …, 0 and "
        "1 step is t = 0 alone (the model sees only t = 0 and the sample at ᾱ_0 ≈ 1).",
        "DDIM's default clip_sample=True clamps x̂₀ to [−1, 1] each step; the `_noclip` cases turn it off.",
        "The fixture U-Nets are random: their ε is not consistent with x, so without clipping "
        "x̂₀ = (x − √(1−ᾱ)·ε)/√ᾱ is large and ε-prediction results reach |x| ~ 250–700 (a relative "
        "comparison to max|x| is dominated by those elements). With clip_sample=True the loop is "
        "chaotic instead: `ddim_eps_50` amplifies a 1e-6 perturbation of "
        "the model output to ~3e-3 (its suggested_rel_tol is 0.02); `ddim_eps_10` stays at 1e-4. "
        "The class-conditional cases therefore run without clipping.",
        "Every unconditional DDIM case is checked against diffusers' DDIMPipeline (same generator "
        "seed, output_type='np'): identical within 1e-6 after (x / 2 + 0.5).clamp(0, 1).",
        "FlowMatchEulerDiscreteScheduler has no init_noise_sigma and no scale_model_input: the "
        "loop uses 1 and the identity (as the flow pipelines do). Its timesteps are σ·1000 with σ from linspace(1, 1/1000, N) (shifted when "
        "shift ≠ 1) and a final σ = 0; the model output is taken as the velocity.",
    ]
    manifest = dict(
        generator="scripts/make_sampler_fixtures.py",
        versions=dict(
            diffusers=diffusers.__version__,
            torch=torch.__version__,
            numpy=np.__version__,
            safetensors=safetensors.__version__,
            python=platform.python_version(),
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
        ),
        notes=notes,
        cases=[json_safe(e) for e in entries],
    )
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, allow_nan=False)
        f.write("\n")
    write_readme(out_dir, manifest, command)
    total = sum(os.path.getsize(os.path.join(out_dir, n)) for n in os.listdir(out_dir))
    print(f"wrote {out_dir}: {len(entries)} cases, {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
