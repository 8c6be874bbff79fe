#!/usr/bin/env python3
"""CLIPTextModel fixtures for tests/clip_text.rs (not needed by `make test`; the outputs are committed).

Two random-init transformers CLIPTextModel (hidden_act "quick_gelu" and "gelu"), the real vocabulary size
(49 408), hidden size 8, 4 heads (head_dim 2), intermediate size 20, 2 layers, max_position_embeddings 77.
Every parameter is redrawn at a scale that makes each part of the forward matter (transformers' init,
std 0.02, would leave attention and the MLP near no-ops at this size): linear weights and biases uniform
±1/sqrt(fan_in), token embeddings N(0, 1), position embeddings N(0, 0.5²), layer-norm weights 1 + N(0, 0.2²),
biases N(0, 0.2²).

Size and exactness: the token table is stored F16 (49 408 × 8 × 2 bytes = 790 KB; F32 would be 1.6 MB), and
it is rounded to f16 *before* the reference runs, so the float64 reference uses exactly the values the loader
reads (F16 → f32 is exact). The other weights are stored F32 (drawn in float32, so exact as well). The
quick_gelu model is stored as the Stable Diffusion hub files are (written by transformers 4): keys under
`text_model.` and `text_model.embeddings.position_ids` (I64 [1, 77]); the gelu model as transformers 5's
save_pretrained writes it: no `text_model.` prefix, no position_ids. Both load paths are covered, and the
script checks that transformers itself loads every stored value from both layouts.

The reference: the model cast to float64 (eager attention), called as diffusers' StableDiffusionPipeline calls
it (`text_encoder(input_ids)`, no attention mask: only the causal mask), with output_hidden_states=True.
Prompts are tokenized by CLIPTokenizer on the committed tokenizer fixture (tests/fixtures/clip_tokenizer: the
real vocabulary with the SD 1.x special tokens, pad <|endoftext|>), padded to 77.

Writes tests/fixtures/clip_text/{quick_gelu,gelu}/:
  config.json         CLIPTextConfig.to_json_file
  model.safetensors   the weights (transformers key names)
  io.safetensors      input_ids I64 [N, 77]; hidden_states.{0,1,2} (embeddings, after layer 0, after layer 1)
                      and last_hidden_state F32 [N, 77, 8] (float64 results rounded once to f32)

Usage: pip install -r scripts/requirements-clip.txt; python scripts/make_clip_text_fixtures.py
Deterministic: seeded; running it again rewrites identical files.
"""

import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "clip_tokenizer"
OUT = ROOT / "tests" / "fixtures" / "clip_text"

PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "A painting of a Fox, in the style of Hokusai; ukiyo-e!!! 1857",
]


def tokenizer():
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["vocab.json", "merges.txt"]:
            shutil.copy(TOKENIZER / name, tmp)
        for f in (TOKENIZER / "sd1_vocab").iterdir():
            shutil.copy(f, tmp)
        return CLIPTokenizer.from_pretrained(tmp)


def make(name, hidden_act, seed, hub_layout, ids):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=8,
        intermediate_size=20,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        projection_dim=8,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("token_embedding.weight"):
                p.copy_(torch.randn_like(p).half().float())
            elif key.endswith("position_embedding.weight"):
                p.copy_(0.5 * torch.randn_like(p))
            elif "layer_norm" in key and key.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "layer_norm" in key:
                p.copy_(0.2 * torch.randn_like(p))
            else:
                mod = model.get_submodule(key.rsplit(".", 1)[0])
                bound = mod.in_features ** -0.5
                p.copy_((2 * torch.rand_like(p) - 1) * bound)
    prefix = "text_model." if hub_layout else ""
    tensors = {}
    for key, p in model.state_dict().items():
        if key.endswith("position_ids"):
            continue  # a non-persistent buffer in transformers 5
        value = p.half() if key.endswith("token_embedding.weight") else p.float()
        tensors[prefix + key] = value.contiguous()
    if hub_layout:
        tensors["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    saved = {k.removeprefix(prefix): v for k, v in tensors.items() if not k.endswith("position_ids")}
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    config.to_json_file(out / "config.json")
    save_file(tensors, out / "model.safetensors")

    model = CLIPTextModel.from_pretrained(out, attn_implementation="eager", dtype=torch.float64).eval()
    # The reference model holds exactly the stored values (a key left unloaded would be re-initialised).
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value.double()), key
    with torch.no_grad():
        res = model(torch.tensor(ids), output_hidden_states=True)
    io = {"input_ids": torch.tensor(ids, dtype=torch.int64)}
    for i, h in enumerate(res.hidden_states):
        io[f"hidden_states.{i}"] = h.float().contiguous()
    io["last_hidden_state"] = res.last_hidden_state.float().contiguous()
    save_file(io, out / "io.safetensors", metadata={"transformers": transformers.__version__,
                                                      "torch": torch.__version__})
    print(name, {k: tuple(v.shape) for k, v in io.items()}, "max|last| =",
          float(res.last_hidden_state.abs().max()))


def main():
    tok = tokenizer()
    ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    make("quick_gelu", "quick_gelu", 1, True, ids)
    make("gelu", "gelu", 2, False, ids)


if __name__ == "__main__":
    main()
