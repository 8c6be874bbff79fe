#!/usr/bin/env python3
"""Stable Diffusion fixtures for tests/sd.rs: tiny UNet2DConditionModels block by block, and two tiny
StableDiffusionPipeline folders with diffusers' own pipeline loop on them.

Writes ``tests/fixtures/sd/``:

* ``unet_sd1/``, ``unet_sd2/`` -- ``UNet2DConditionModel.save_pretrained`` (config.json +
  diffusion_pytorch_model.safetensors, F32) and ``io.safetensors``: inputs ``sample`` [2, 4, 8, 8],
  ``timesteps`` [2], ``encoder_hidden_states`` [2, 7, 16] and every block's output (``conv_in``,
  ``time_embedding``, ``down_blocks.i``, ``mid_block``, ``up_blocks.i``, ``conv_act``, ``out``) from the
  model run in float64 on the F32-stored weights; ``io_odd.safetensors`` the same at 9x7 latents
  (not a multiple of the overall factor: diffusers' ``forward_upsample_size`` path).
  sd1: conv projections, an int head count (``attention_head_dim`` 4: four heads, diffusers' naming
  quirk), one transformer layer. sd2: linear projections, per-block heads [2, 3, 4],
  ``transformer_layers_per_block`` [1, 2, 1], ``layers_per_block`` [1, 2, 1], ``only_cross_attention``
  on the second block, ``upcast_attention``.
* ``pipeline_sd1/``, ``pipeline_sd2/`` -- ``StableDiffusionPipeline.save_pretrained`` folders (unet,
  vae, text_encoder, tokenizer, scheduler; no safety checker): a tiny CLIP text encoder (hidden 32,
  2 layers) with a tokenizer built offline (the 256 byte symbols and their ``</w>`` forms, merges
  spelling the fixture prompts' words, the two special tokens), an AutoencoderKL with 2 blocks (8x8
  latents -> 16x16 images, scaling_factor 0.18215). sd1: quick_gelu CLIP, pad ``<|endoftext|>``, the
  sd1 U-Net shape, PNDMScheduler (skip_prk_steps, steps_offset 1, as SD 1.x folders are), F32 files.
  sd2: gelu CLIP, pad ``!``, the sd2 U-Net shape (without only_cross_attention),
  EulerDiscreteScheduler with v_prediction and trailing spacing, stored as the fp16 variant
  (``*.fp16.safetensors``, F16; the reference runs in float32 on the f16-rounded weights).
* ``pipeline_sd{1,2}.io.safetensors`` -- per case ``<case>.noise`` [2, 4, 8, 8] (the given latents),
  ``<case>.latents`` (the final latents, output_type="latent") and ``<case>.image`` [2, 3, 16, 16]
  (``vae.decode(latents / scaling_factor)``, before any clamping), and ``<case>.input_ids``.
  ``pipeline_sd1`` also has ``img2img_ddim``: StableDiffusionImg2ImgPipeline (strength 0.6, 5 DDIM
  steps) from ``img2img_ddim.init_image`` [3, 16, 16], its start the encoder's latent mean (diffusers
  draws a sample; patched to "argmax" here) and ``img2img_ddim.noise`` the noise it adds.
  The cases and their settings are in ``manifest.json`` (prompt, negative prompt, scheduler class
  swapped in with ``from_config`` as ``--sampler`` does, steps, guidance scale).

Every parameter is redrawn (uniform +-1/sqrt(fan_in) for weights and biases, norm weights 1 + N(0, 0.2^2))
so each part matters at this size. Usage: /work/venv/bin/python scripts/make_sd_fixtures.py
(pinned torch / diffusers / transformers of scripts/requirements.txt and requirements-clip.txt).
Deterministic and idempotent.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "sd"
SD1_TOKENIZER = ROOT / "tests" / "fixtures" / "clip_tokenizer" / "sd1_vocab"
SD2_TOKENIZER = ROOT / "tests" / "fixtures" / "clip_tokenizer" / "sd2_vocab"

PROMPTS = ["a photo of a red fox in the snow", "an astronaut riding a horse"]
NEGATIVE = ["blurry", "low quality, cartoon"]

UNET_SD1 = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=16,
    norm_num_groups=4,
)

UNET_SD2 = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 24, 32),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=(1, 2, 1),
    attention_head_dim=(2, 3, 4),
    transformer_layers_per_block=(1, 2, 1),
    cross_attention_dim=16,
    norm_num_groups=4,
    use_linear_projection=True,
    upcast_attention=True,
)


def redraw(module: torch.nn.Module, seed: int) -> None:
    """Every parameter at a scale where it matters (see the module docs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            leaf = name.rsplit(".", 1)[-1]
            is_norm = any(k in name for k in ("norm", "layer_norm", "final_layer_norm"))
            if is_norm and p.dim() == 1 and leaf == "weight":
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif is_norm and p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embedding" in name and p.dim() == 2 and "linear" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "position" in name else 1.0))
            else:
                fan_in = p.shape[1] * (p[0, 0].numel() if p.dim() > 2 else 1) if p.dim() > 1 else None
                if fan_in is None:
                    # a bias: the fan-in of its weight is not at hand; use the width
                    fan_in = max(p.shape[0], 1)
                bound = 1.0 / fan_in**0.5
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


def block_outputs(unet: UNet2DConditionModel, sample, t, ctx):
    """The model's output and every block's, run in float64."""
    outs = {}
    hooks = []

    def keep(name):
        def hook(_m, _i, o):
            outs[name] = (o[0] if isinstance(o, tuple) else o).detach().clone()

        return hook

    hooks.append(unet.conv_in.register_forward_hook(keep("conv_in")))
    hooks.append(unet.time_embedding.register_forward_hook(keep("time_embedding")))
    for i, b in enumerate(unet.down_blocks):
        hooks.append(b.register_forward_hook(keep(f"down_blocks.{i}")))
    hooks.append(unet.mid_block.register_forward_hook(keep("mid_block")))
    for i, b in enumerate(unet.up_blocks):
        hooks.append(b.register_forward_hook(keep(f"up_blocks.{i}")))
    hooks.append(unet.conv_act.register_forward_hook(keep("conv_act")))
    with torch.no_grad():
        outs["out"] = unet(sample, t, encoder_hidden_states=ctx).sample
    for h in hooks:
        h.remove()
    return outs


def unet_fixture(name: str, cfg: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg)
    redraw(unet, seed)
    unet.eval()
    folder = OUT / f"unet_{name}"
    shutil.rmtree(folder, ignore_errors=True)
    unet.save_pretrained(folder, safe_serialization=True)
    g = torch.Generator().manual_seed(seed + 1)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    timesteps = torch.tensor([981.0, 17.0])
    ctx = torch.randn(2, 7, 16, generator=g)
    u64 = unet.to(torch.float64)
    outs = block_outputs(u64, sample.double(), timesteps.double(), ctx.double())
    tensors = {
        "sample": sample,
        "timesteps": timesteps,
        "encoder_hidden_states": ctx,
    }
    tensors.update({k: v.float().contiguous() for k, v in outs.items()})
    save_file(tensors, str(folder / "io.safetensors"))
    # Latents that are not a multiple of the overall factor: the down path rounds up and each up
    # block upsamples to the next skip's size (diffusers' forward_upsample_size).
    odd = torch.randn(2, 4, 9, 7, generator=g)
    odd_outs = block_outputs(u64, odd.double(), timesteps.double(), ctx.double())
    odd_tensors = {"sample": odd, "timesteps": timesteps, "encoder_hidden_states": ctx}
    odd_tensors.update({k: v.float().contiguous() for k, v in odd_outs.items()})
    save_file(odd_tensors, str(folder / "io_odd.safetensors"))
    return {k: float(v.abs().max()) for k, v in outs.items()}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte -> printable-character table (the order CLIP's vocabulary starts with)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_tokenizer(folder: Path, special: Path) -> CLIPTokenizer:
    """A CLIP BPE vocabulary spelling the fixture prompts' words (see the module docs)."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    words = []
    for text in PROMPTS + NEGATIVE:
        for w in text.replace(",", " ,").split():
            if w not in words:
                words.append(w)
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            merged = parts[0] + parts[1]
            if pair not in merges:
                merges.append(pair)
                if merged not in vocab:
                    vocab.append(merged)
            parts = [merged] + parts[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    for f in special.iterdir():
        shutil.copy(f, folder)
    return CLIPTokenizer.from_pretrained(folder)


def pipeline(name: str, seed: int):
    sd2 = name == "sd2"
    with tempfile.TemporaryDirectory() as tmp:
        tok = tiny_tokenizer(Path(tmp) / "tok", SD2_TOKENIZER if sd2 else SD1_TOKENIZER)
        tok_files = {f.name: f.read_bytes() for f in (Path(tmp) / "tok").iterdir()}
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu" if sd2 else "quick_gelu",
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    redraw(text_encoder, seed + 1)
    cfg = dict(UNET_SD2 if sd2 else UNET_SD1)
    unet = UNet2DConditionModel(**cfg)
    redraw(unet, seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.18215,
    )
    redraw(vae, seed + 3)
    if sd2:
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            prediction_type="v_prediction",
            timestep_spacing="trailing",
            steps_offset=1,
        )
    else:
        scheduler = PNDMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            skip_prk_steps=True,
            set_alpha_to_one=False,
            steps_offset=1,
        )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    folder = OUT / f"pipeline_{name}"
    shutil.rmtree(folder, ignore_errors=True)
    if sd2:
        # Stored as the fp16 variant (`*.fp16.safetensors`, F16): the reference runs in float32 on
        # the f16-rounded values, so it uses exactly what the loader reads.
        with torch.no_grad():
            for m in (unet, vae, text_encoder):
                for p in m.parameters():
                    p.copy_(p.half().float())
        pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
        pipe.to(torch.float32)
    else:
        pipe.save_pretrained(folder, safe_serialization=True)
    # The offline vocabulary exactly as built (save_pretrained rewrites it equivalently).
    for fname, data in tok_files.items():
        (folder / "tokenizer" / fname).write_bytes(data)

    if sd2:
        cases = [
            ("euler_cfg", "EulerDiscreteScheduler", 4, 5.0, True),
            ("euler_turbo", "EulerDiscreteScheduler", 2, 0.0, False),
        ]
    else:
        cases = [
            ("ddim_cfg", "DDIMScheduler", 4, 7.5, True),
            ("ddim_nocfg", "DDIMScheduler", 3, 1.0, False),
            ("pndm_cfg", "PNDMScheduler", 5, 7.5, True),
        ]
    g = torch.Generator().manual_seed(seed + 4)
    tensors = {}
    manifest = []
    for case, cls, steps, scale, negative in cases:
        noise = torch.randn(2, 4, 8, 8, generator=g)
        sched_cls = {"DDIMScheduler": DDIMScheduler, "PNDMScheduler": PNDMScheduler,
                     "EulerDiscreteScheduler": EulerDiscreteScheduler}[cls]
        pipe.scheduler = sched_cls.from_config(scheduler.config)
        with torch.no_grad():
            latents = pipe(
                prompt=PROMPTS,
                negative_prompt=NEGATIVE if negative else None,
                num_inference_steps=steps,
                guidance_scale=scale,
                height=16,
                width=16,
                latents=noise.clone(),
                output_type="latent",
            ).images
            image = vae.decode(latents / vae.config.scaling_factor).sample
        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        tensors[f"{case}.noise"] = noise
        tensors[f"{case}.latents"] = latents.float().contiguous()
        tensors[f"{case}.image"] = image.float().contiguous()
        tensors[f"{case}.input_ids"] = ids.to(torch.int64)
        manifest.append(
            {
                "case": case,
                "sampler": cls,
                "steps": steps,
                "guidance_scale": scale,
                "prompt": PROMPTS,
                "negative_prompt": NEGATIVE if negative else None,
                "max_abs_latents": float(latents.abs().max()),
                "max_abs_image": float(image.abs().max()),
            }
        )
    if not sd2:
        img2img_case(pipe, scheduler, tensors, manifest, seed + 5)
    save_file(tensors, str(OUT / f"pipeline_{name}.io.safetensors"))
    return manifest


def img2img_case(pipe, scheduler, tensors, manifest, seed):
    """StableDiffusionImg2ImgPipeline on the same parts, the encoder's latent mean as its start
    (retrieve_latents in "argmax" mode: our encoder takes the mean, diffusers draws a sample)."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as img2img

    original = img2img.retrieve_latents
    img2img.retrieve_latents = lambda out, generator=None, sample_mode="sample": original(
        out, generator, "argmax"
    )
    try:
        i2i = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
        i2i.set_progress_bar_config(disable=True)
        i2i.scheduler = DDIMScheduler.from_config(scheduler.config)
        g = torch.Generator().manual_seed(seed)
        # A smooth image in [-1, 1] (a tensor below 0 is used as given, not renormalised).
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
        image = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy]).unsqueeze(0).clamp(-1, 1)
        noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            latents = i2i(
                prompt=PROMPTS,
                negative_prompt=NEGATIVE,
                image=image,
                strength=0.6,
                num_inference_steps=5,
                guidance_scale=7.5,
                generator=g,
                output_type="latent",
            ).images
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    finally:
        img2img.retrieve_latents = original
    case = "img2img_ddim"
    tensors[f"{case}.init_image"] = image[0].contiguous()
    tensors[f"{case}.noise"] = noise
    tensors[f"{case}.latents"] = latents.float().contiguous()
    tensors[f"{case}.image"] = decoded.float().contiguous()
    manifest.append(
        {
            "case": case,
            "sampler": "DDIMScheduler",
            "steps": 5,
            "strength": 0.6,
            "guidance_scale": 7.5,
            "prompt": PROMPTS,
            "negative_prompt": NEGATIVE,
            "max_abs_latents": float(latents.abs().max()),
            "max_abs_image": float(decoded.abs().max()),
        }
    )


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        "unet_sd1": unet_fixture("sd1", UNET_SD1, 10),
        "unet_sd2": unet_fixture(
            "sd2", dict(UNET_SD2, only_cross_attention=(False, True, False)), 20
        ),
        "pipeline_sd1": pipeline("sd1", 30),
        "pipeline_sd2": pipeline("sd2", 40),
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
