//! CLIPTextModel parity with transformers: the fixtures in tests/fixtures/clip_text (made by
//! scripts/make_clip_text_fixtures.py from transformers 5.24 in float64: random-init models with
//! the real 49 408-token vocabulary, quick_gelu and gelu, 2 layers, 4 heads) run through our
//! embeddings (CPU) and GPU layers; every hidden state must match within 1e-4 of its max|x|. Plus
//! the pipeline pairing (tokenizer + text encoder) and the bad-input errors.

mod common;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::model::clip_text::text_model::CLIPTextModel;
use wgpu_diffusion::model::clip_text::{CLIPTextConfig, PromptEncoder};
use wgpu_diffusion::model::weights::{WeightSource, Weights};
use wgpu_diffusion::reference::compare_scaled;

const TOLERANCE: f64 = 1e-4;

/// The prompts of scripts/make_clip_text_fixtures.py, in order.
const PROMPTS: [&str; 3] = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "A painting of a Fox, in the style of Hokusai; ukiyo-e!!! 1857",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Io(Vec<u8>);

impl Io {
    fn load(name: &str) -> Io {
        Io(std::fs::read(
            fixtures()
                .join("clip_text")
                .join(name)
                .join("io.safetensors"),
        )
        .unwrap())
    }
    fn f32(&self, key: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(key).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{key}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    fn input_ids(&self) -> Vec<Vec<u32>> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor("input_ids").unwrap();
        let len = t.shape()[1];
        let ids: Vec<u32> = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        ids.chunks(len).map(<[u32]>::to_vec).collect()
    }
}

/// A pipeline folder in a temporary directory: `tokenizer/` (the committed SD 1.x tokenizer
/// fixture `tokenizer` names, with the real vocabulary) and `text_encoder/` (a copy of fixture
/// `encoder`).
fn pipeline(tokenizer: &str, encoder: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tok_src = fixtures().join("clip_tokenizer");
    let tok = dir.path().join("tokenizer");
    std::fs::create_dir(&tok).unwrap();
    for entry in std::fs::read_dir(tok_src.join(tokenizer)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tok.join(entry.file_name())).unwrap();
    }
    if tokenizer.ends_with("_vocab") {
        for f in ["vocab.json", "merges.txt"] {
            std::fs::copy(tok_src.join(f), tok.join(f)).unwrap();
        }
    }
    let enc = dir.path().join("text_encoder");
    std::fs::create_dir(&enc).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            fixtures().join("clip_text").join(encoder).join(f),
            enc.join(f),
        )
        .unwrap();
    }
    dir
}

fn check_fixture(name: &str) {
    let ctx = common::ctx();
    let io = Io::load(name);
    let model = CLIPTextModel::load(&ctx, &fixtures().join("clip_text").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let ids = io.input_ids();
    let graph = model.debug_graph(ids.len(), ids[0].len()).unwrap();
    let out = graph.forward(&model, &ids).unwrap();
    let mut worst = 0.0f64;
    for (i, tensor) in graph.hidden_states.iter().enumerate() {
        let got = tensor.read(&ctx).unwrap();
        let want: Vec<f64> = io
            .f32(&format!("hidden_states.{i}"))
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let cmp = compare_scaled(&format!("{name} hidden_states.{i}"), &got, &want, TOLERANCE);
        println!("{cmp}");
        assert!(cmp.ok(), "{cmp}");
        worst = worst.max(cmp.max_rel_to_scale);
    }
    let want: Vec<f64> = io
        .f32("last_hidden_state")
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let cmp = compare_scaled(&format!("{name} last_hidden_state"), &out, &want, TOLERANCE);
    println!("{cmp}");
    assert!(cmp.ok(), "{cmp}");
    worst = worst.max(cmp.max_rel_to_scale);
    println!("{name}: worst error / max|ref| over all hidden states: {worst:.3e}");
}

#[test]
fn quick_gelu_matches_transformers_layer_by_layer() {
    check_fixture("quick_gelu");
}

#[test]
fn gelu_matches_transformers_layer_by_layer() {
    check_fixture("gelu");
}

#[test]
fn pipeline_folder_tokenizes_and_encodes_like_transformers() {
    let ctx = common::ctx();
    let dir = pipeline("sd1_vocab", "gelu");
    let enc = PromptEncoder::load(&ctx, dir.path()).unwrap();
    let prompts: Vec<String> = PROMPTS.iter().map(|p| p.to_string()).collect();
    let out = enc.encode(&prompts).unwrap();
    let io = Io::load("gelu");
    assert_eq!(out.input_ids, io.input_ids());
    assert_eq!((out.seq_len, out.hidden_size), (77, 8));
    let want: Vec<f64> = io
        .f32("last_hidden_state")
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let cmp = compare_scaled("pipeline last_hidden_state", &out.embeds, &want, TOLERANCE);
    assert!(cmp.ok(), "{cmp}");
}

#[test]
fn unsupported_hidden_act_is_named() {
    let err = CLIPTextConfig::from_json_str(
        r#"{"hidden_act": "gelu_new", "hidden_size": 8, "num_attention_heads": 4}"#,
        Path::new("text_encoder/config.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("hidden_act") && err.contains("gelu_new"),
        "{err}"
    );
    assert!(err.contains("quick_gelu"), "{err}");
    let err = CLIPTextConfig::from_json_str(
        r#"{"hidden_size": 10, "num_attention_heads": 4}"#,
        Path::new("c.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("num_attention_heads") && err.contains("10"),
        "{err}"
    );
}

#[test]
fn vocabulary_mismatch_with_the_tokenizer_is_named() {
    let ctx = common::ctx();
    // sd1_json holds a truncated vocabulary (5514 tokens); the encoder has 49 408.
    let dir = pipeline("sd1_json", "quick_gelu");
    let err = PromptEncoder::load(&ctx, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab_size"), "{err}");
    assert!(err.contains("49408") && err.contains("5514"), "{err}");
}

#[test]
fn missing_files_are_named() {
    let ctx = common::ctx();
    let dir = pipeline("sd1_vocab", "quick_gelu");
    std::fs::remove_file(dir.path().join("text_encoder/model.safetensors")).unwrap();
    let err = PromptEncoder::load(&ctx, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    let err = CLIPTextModel::load(&ctx, &dir.path().join("text_encoder"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(dir.path().join("tokenizer")).unwrap();
    let err = PromptEncoder::load(&ctx, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer"), "{err}");
}

#[test]
fn position_ids_are_checked() {
    let ctx = common::ctx();
    let dir = fixtures().join("clip_text/quick_gelu");
    let config = CLIPTextConfig::from_file(&dir.join("config.json")).unwrap();
    let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    // Swap positions 3 and 4 of text_model.embeddings.position_ids in the file image.
    let (start, end) = {
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("text_model.embeddings.position_ids").unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I64);
        let data = t.data();
        let offset = data.as_ptr() as usize - bytes.as_ptr() as usize;
        (offset, offset + data.len())
    };
    let ids = &mut bytes[start..end];
    ids[24..32].copy_from_slice(&4i64.to_le_bytes());
    ids[32..40].copy_from_slice(&3i64.to_le_bytes());
    let source =
        WeightSource::Checkpoint(Weights::from_bytes("swapped.safetensors", &bytes).unwrap());
    let err = CLIPTextModel::from_source(&ctx, config.clone(), &source)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("position_ids") && err.contains("index 3"),
        "{err}"
    );
    // The unmodified file loads, its position_ids counted as used (no unused-tensor error).
    let source = WeightSource::file(&dir.join("model.safetensors")).unwrap();
    CLIPTextModel::from_source(&ctx, config, &source).unwrap();
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let ctx = common::ctx();
    let model = CLIPTextModel::load(&ctx, &fixtures().join("clip_text/gelu")).unwrap();
    let mut ids = vec![49407u32; 77];
    ids[5] = 49408;
    let err = model.encode(&[ids]).unwrap_err().to_string();
    assert!(err.contains("49408") && err.contains("position 5"), "{err}");
}
