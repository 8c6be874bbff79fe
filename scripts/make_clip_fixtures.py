#!/usr/bin/env python3
"""CLIP tokenizer fixtures for tests/tokenizer.rs (not needed by `make test`; the outputs are committed).

Provenance: CLIP's BPE merges come from the open-clip-torch wheel (`open_clip/bpe_simple_vocab_16e6.txt.gz`,
the file OpenAI's CLIP repository ships). The vocabulary is built from it as CLIP and transformers do (256 byte
symbols, the same with `</w>`, the 48 894 merges' concatenations, `<|startoftext|>`, `<|endoftext|>` = 49 408
tokens) and written by the `tokenizers` library's BPE model (`backend_tokenizer.model.save`), since transformers 5
no longer writes vocab.json / merges.txt itself.

Writes tests/fixtures/clip_tokenizer/:
  vocab.json, merges.txt    the real vocabulary, once (1.4 MB); the Rust test copies them into each *_vocab folder
  sd1_vocab/, sd2_vocab/    tokenizer_config.json + special_tokens_map.json as the Stable Diffusion 1.x / 2.x hub
                            folders hold them (transformers 4.2x format: AddedToken dicts, pad `<|endoftext|>` / `!`)
  sd2_vocab_v4/             tokenizer_config.json with `added_tokens_decoder` (the format transformers >= 4.34
                            writes), pad `!`
  sd1_json/, sd2_json/      `save_pretrained` of transformers 5's CLIPTokenizer: tokenizer.json +
                            tokenizer_config.json, from a truncated vocabulary (the first 5000 merges, 5514 tokens)
                            so the committed files stay small
  expected.json             per folder: pad/bos/eos ids, len(tokenizer), and for every prompt the input_ids and
                            attention_mask of `tokenizer(prompt, padding="max_length",
                            max_length=tokenizer.model_max_length, truncation=True)` — diffusers'
                            StableDiffusionPipeline call — from CLIPTokenizer.from_pretrained on that folder

Usage: pip install -r scripts/requirements-clip.txt (plus diffusers' torch venv is not needed);
       pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc
       python scripts/make_clip_fixtures.py --open-clip-wheel /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl
Deterministic and idempotent: running it again rewrites identical files.
"""

import argparse
import gzip
import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import tokenizers
import transformers
from transformers import CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "clip_tokenizer"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
TRUNCATED_MERGES = 5000

PROMPTS = [
    "",
    "a photo of an astronaut riding a horse on mars",
    "A PHOTO OF AN ASTRONAUT",
    "MiXeD CaSe PrOmPt",
    "hello, world!!! ... ???",
    "wow!!!!!!!!!!?!?!",
    "hello! ! !",
    "it's don't they're we've i'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE",
    "rock 'n' roll, 'quoted' and ''double''",
    "'sam 'tis 'twas",
    "the year 2023, 3.14159 and 1,000,000 dollars",
    "007 agent #42, 1st 2nd 3rd 4th",
    "x²+y²=z² and Ⅻ ⅻ ①②③",
    "café crème brûlée",
    "cafe\u0301 A\u030a (decomposed accents)",
    "naïve résumé Ångström ünïcödé",
    "Straße ΟΔΟΣ ΣΟΦΙΑ Ώ ΆΈΉ",
    "İstanbul ǅ titlecase",
    "日本語のテキスト",
    "中文 한국어 русский текст",
    "arabic مرحبا hebrew שלום hindi नमस्ते thai สวัสดี",
    "emoji 🎨🖼️ 👩‍🚀 🚀🌕",
    "flag 🇯🇵 and skin tone 👍🏽",
    "multiple   spaces    between",
    "tabs\tand\t\ttabs",
    "new\nlines\n\nand\r\nwindows",
    "   leading and trailing   ",
    "non-breaking\u00a0space, em\u2003space, ideographic\u3000space",
    "zero\u200bwidth and \ufeffbyte order mark",
    "control\u0000chars\u0007here\u001b[0m",
    "\u0301 a leading combining mark",
    "fish &amp; chips &lt;b&gt; &quot;quoted&quot; &#39;",
    "<html><b>bold</b></html>",
    "<|startoftext|>a prompt<|endoftext|>",
    "<|ENDOFTEXT|> in caps and <|StartOfText|>",
    "a <|endoftext|> b <|endoftext|><|endoftext|>",
    "hyphen-ated under_scored dot.separated slash/separated",
    "email@example.com https://example.com/path?q=1&r=2",
    "masterpiece, best quality, (ultra-detailed:1.2), [cat|dog], {a|b}",
    "Ⓐ circled Ⓩ, ﬁ ligature, ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "a" * 120,
    "a photo of a cat, " * 20,
    "a " * 74,
    "a " * 75,
    "a " * 76,
    "hello!!! " * 30,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def bytes_to_unicode():
    """CLIP's table (openai/CLIP simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_merges(wheel):
    with zipfile.ZipFile(wheel) as z:
        data = z.read(BPE_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        raise SystemExit(f"{wheel}:{BPE_MEMBER}: sha256 {digest}, expected {BPE_SHA256}")
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # As openai/CLIP's SimpleTokenizer: skip the header, keep 49152 - 256 - 2 merges.
    return [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]


def clip_vocab(merges):
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}


def added_token(content, special_type=True):
    token = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **token} if special_type else token


def hub_config(pad):
    """tokenizer_config.json / special_tokens_map.json as the SD 1.x / 2.x hub folders hold them."""
    config = {
        "add_prefix_space": False,
        "bos_token": added_token("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": added_token("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": pad,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added_token("<|endoftext|>"),
    }
    special_map = {
        "bos_token": added_token("<|startoftext|>", False),
        "eos_token": added_token("<|endoftext|>", False),
        "pad_token": pad,
        "unk_token": added_token("<|endoftext|>", False),
    }
    return config, special_map


def v4_config(pad):
    """tokenizer_config.json as transformers >= 4.34 writes it (added_tokens_decoder)."""
    decoder = {
        str(i): {"content": c, "lstrip": False, "normalized": n, "rstrip": False, "single_word": False, "special": True}
        for i, c, n in [(0, pad, False), (49406, "<|startoftext|>", True), (49407, "<|endoftext|>", False)]
    }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }


def write_json(path, value):
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def expected_for(folder, files_dir):
    """Loads `folder` (plus the shared vocab files when it has none) with transformers and encodes every prompt."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in folder.iterdir():
            shutil.copy(f, tmp / f.name)
        if not (tmp / "tokenizer.json").exists():
            for name in ["vocab.json", "merges.txt"]:
                shutil.copy(files_dir / name, tmp / name)
        tok = CLIPTokenizer.from_pretrained(str(tmp))
        cases = []
        for prompt in PROMPTS:
            enc = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True)
            cases.append({"prompt": prompt, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return {
            "pad_token": tok.pad_token,
            "pad_id": tok.pad_token_id,
            "bos_id": tok.bos_token_id,
            "eos_id": tok.eos_token_id,
            "len": len(tok),
            "model_max_length": tok.model_max_length,
            "cases": cases,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open-clip-wheel", required=True, type=Path)
    args = parser.parse_args()

    merges = clip_merges(args.open_clip_wheel)
    vocab = clip_vocab(merges)
    assert len(vocab) == 49408, len(vocab)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
        full = CLIPTokenizer(vocab=str(tmp / "vocab.json"), merges=str(tmp / "merges.txt"), model_max_length=77)
        full.backend_tokenizer.model.save(str(OUT))
    assert json.loads((OUT / "vocab.json").read_text(encoding="utf-8")) == vocab

    for name, pad in [("sd1_vocab", "<|endoftext|>"), ("sd2_vocab", "!")]:
        (OUT / name).mkdir()
        config, special_map = hub_config(pad)
        write_json(OUT / name / "tokenizer_config.json", config)
        write_json(OUT / name / "special_tokens_map.json", special_map)
    (OUT / "sd2_vocab_v4").mkdir()
    write_json(OUT / "sd2_vocab_v4" / "tokenizer_config.json", v4_config("!"))

    small_merges = merges[:TRUNCATED_MERGES]
    small_vocab = clip_vocab(small_merges)
    for name, pad in [("sd1_json", "<|endoftext|>"), ("sd2_json", "!")]:
        tok = CLIPTokenizer(
            vocab=dict(small_vocab), merges=[tuple(m) for m in small_merges], pad_token=pad, model_max_length=77
        )
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            (OUT / name).mkdir()
            # is_local records where it was saved from; drop it so reruns are byte-identical anywhere.
            config = json.loads((Path(tmp) / "tokenizer_config.json").read_text(encoding="utf-8"))
            config.pop("is_local", None)
            write_json(OUT / name / "tokenizer_config.json", config)
            shutil.copy(Path(tmp) / "tokenizer.json", OUT / name / "tokenizer.json")

    expected = {
        "generator": "scripts/make_clip_fixtures.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "call": 'tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)',
        "folders": {},
    }
    for name in ["sd1_vocab", "sd2_vocab", "sd2_vocab_v4", "sd1_json", "sd2_json"]:
        expected["folders"][name] = expected_for(OUT / name, OUT)
    # One prompt per line keeps the file readable and its diffs small.
    lines = ["{"]
    for key in ["generator", "transformers", "tokenizers", "call"]:
        lines.append(f"  {json.dumps(key)}: {json.dumps(expected[key])},")
    lines.append('  "folders": {')
    names = list(expected["folders"])
    for i, name in enumerate(names):
        folder = expected["folders"][name]
        lines.append(f"    {json.dumps(name)}: {{")
        for key in ["pad_token", "pad_id", "bos_id", "eos_id", "len", "model_max_length"]:
            lines.append(f"      {json.dumps(key)}: {json.dumps(folder[key], ensure_ascii=False)},")
        lines.append('      "cases": [')
        for j, case in enumerate(folder["cases"]):
            comma = "," if j + 1 < len(folder["cases"]) else ""
            lines.append(f"        {json.dumps(case, ensure_ascii=False, separators=(',', ':'))}{comma}")
        lines.append("      ]")
        lines.append("    }" + ("," if i + 1 < len(names) else ""))
    lines.append("  }")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    (OUT / "expected.json").write_text(text, encoding="utf-8")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT.relative_to(ROOT)}: {len(PROMPTS)} prompts x {len(names)} folders, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
