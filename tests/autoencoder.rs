//! AutoencoderKL and VQModel parity with diffusers: the fixtures in tests/fixtures/vae (made by
//! scripts/make_vae_fixtures.py from diffusers in float64) run through our GPU decoders (and
//! encoders) and are compared block by block; the error relative to each tensor's scale must
//! stay ≤ 1e-4. Plus the bad inputs: unsupported config values named, a codebook of the wrong
//! shape, a missing weights file.

mod common;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::bench::preset::LDM_CELEBAHQ_256_VQVAE_CONFIG;
use wgpu_diffusion::model::autoencoder::config::{AutoencoderKLConfig, VQModelConfig};
use wgpu_diffusion::model::autoencoder::{
    AutoencoderGraph, AutoencoderKL, DecodeOptions, DecodePlan, VQModel,
};
use wgpu_diffusion::model::weights::WeightSource;
use wgpu_diffusion::reference::{compare_scaled, Comparison};
use wgpu_diffusion::GpuContext;

const TOLERANCE: f64 = 1e-4;

/// The decode memory of the ldm-celebahq-256 VQ decoder (batch 1, 64×64 latents) README.md
/// quotes.
const README_PLANNED_BYTES: u64 = 176_996_352;
const README_UNPLANNED_BYTES: u64 = 1_133_395_968;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae")
}

struct Io {
    bytes: Vec<u8>,
}

impl Io {
    fn load(dir: &Path) -> Io {
        Io {
            bytes: std::fs::read(dir.join("io.safetensors")).expect("io.safetensors"),
        }
    }
    fn f32(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid io.safetensors");
        let t = st.tensor(name).ok()?;
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let data = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Some((t.shape().to_vec(), data.collect()))
    }
}

/// Runs `graph` on `input` and compares every kept activation that the fixture holds as
/// `act.<name>`, then the output with the fixture's `output_key`.
fn compare_graph(
    ctx: &GpuContext,
    fixture: &str,
    io: &Io,
    graph: &AutoencoderGraph,
    input: &[f32],
    output_key: &str,
) -> Vec<Comparison> {
    let out = graph.run(input).expect("run");
    let mut results = Vec::new();
    for (key, tensor) in &graph.activations {
        let Some((want_shape, want)) = io.f32(&format!("act.{key}")) else {
            continue;
        };
        assert_eq!(tensor.shape, want_shape, "{fixture}: {key}");
        let got = tensor.read(ctx).expect("read activation");
        results.push(compare_scaled(
            &format!("{fixture} {key}"),
            &got,
            &common::f64s(&want),
            TOLERANCE,
        ));
    }
    let (want_shape, want) = io.f32(output_key).expect(output_key);
    assert_eq!(graph.output.shape, want_shape, "{fixture}: {output_key}");
    results.push(compare_scaled(
        &format!("{fixture} {output_key}"),
        &out,
        &common::f64s(&want),
        TOLERANCE,
    ));
    results
}

fn assert_all_ok(fixture: &str, results: &[Comparison], min: usize) {
    for c in results {
        println!("{c}");
    }
    let bad: Vec<String> = results
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "{fixture}: blocks off by more than {TOLERANCE} of their scale:\n{}",
        bad.join("\n")
    );
    assert!(
        results.len() >= min,
        "{fixture}: too few tensors compared ({} < {min})",
        results.len()
    );
}

fn kl_decode(fixture: &str, min: usize) {
    let ctx = common::ctx();
    let dir = fixtures_dir().join(fixture);
    let io = Io::load(&dir);
    let model = AutoencoderKL::load(&ctx, &dir).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    let (shape, latents) = io.f32("latents").expect("latents");
    let graph = model
        .debug_decode_graph(shape[0], shape[2], shape[3])
        .expect("graph");
    let results = compare_graph(&ctx, fixture, &io, &graph, &latents, "sample");
    assert_all_ok(fixture, &results, min);
}

#[test]
fn kl_decode_rgb_odd_latents() {
    // post_quant_conv, conv_in, mid_block, 2 up blocks, conv_act, sample.
    kl_decode("kl_rgb", 7);
}

#[test]
fn kl_decode_gray_legacy_names_no_post_quant_conv() {
    kl_decode("kl_gray_legacy", 6);
}

#[test]
fn kl_config_and_parameters() {
    let ctx = common::ctx();
    let rgb = AutoencoderKL::load(&ctx, &fixtures_dir().join("kl_rgb")).unwrap();
    assert_eq!(rgb.parameters, 43_711);
    assert_eq!(rgb.scaling_factor(), 0.18215);
    assert_eq!(rgb.upscale(), 2);
    let gray = AutoencoderKL::load(&ctx, &fixtures_dir().join("kl_gray_legacy")).unwrap();
    assert_eq!(gray.parameters, 54_703);
    assert_eq!(gray.scaling_factor(), 0.5);
    assert!(gray.quant_conv.is_none() && gray.post_quant_conv.is_none());
}

#[test]
fn decode_graph_is_batch_independent() {
    let ctx = common::ctx();
    let dir = fixtures_dir().join("kl_rgb");
    let io = Io::load(&dir);
    let model = AutoencoderKL::load(&ctx, &dir).unwrap();
    let (shape, latents) = io.f32("latents").unwrap();
    let g2 = model.decode_graph(2, shape[2], shape[3]).unwrap();
    let both = g2.run(&latents).unwrap();
    assert_eq!(both, g2.run(&latents).unwrap());
    let g1 = model.decode_graph(1, shape[2], shape[3]).unwrap();
    let second = g1.run(&latents[latents.len() / 2..]).unwrap();
    let c = compare_scaled(
        "batch entry 1 alone",
        &second,
        &common::f64s(&both[both.len() / 2..]),
        1e-6,
    );
    assert!(c.ok(), "{c}");
    // The plan is what the graph allocates.
    let plan = model.plan_memory(2, shape[2], shape[3]).unwrap();
    assert_eq!(plan, g2.memory);
    assert!(plan.planned_bytes < plan.unplanned_bytes, "{plan:?}");
}

/// Copies a fixture folder to a temp dir so a test can break one file.
fn scratch_copy(fixture: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-diffusion-vae-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixtures_dir().join(fixture).join(f), dir.join(f)).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn kl_bad_inputs_are_named() {
    let ctx = common::ctx();
    for (key, value, expect) in [
        (
            "up_block_types",
            serde_json::json!(["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]),
            "AttnUpDecoderBlock2D",
        ),
        ("act_fn", serde_json::json!("gelu"), "\"gelu\""),
        ("shift_factor", serde_json::json!(0.1159), "shift_factor"),
    ] {
        let dir = scratch_copy("kl_rgb", key);
        edit_config(&dir, key, value);
        let e = AutoencoderKL::load(&ctx, &dir).unwrap_err().to_string();
        println!("{e}");
        assert!(e.contains(key) && e.contains(expect), "{key}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Missing weights file: named.
    let dir = scratch_copy("kl_rgb", "missing-weights");
    std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let e = AutoencoderKL::load(&ctx, &dir).unwrap_err().to_string();
    assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Config and weights that disagree: the weights of another architecture.
    let dir = scratch_copy("kl_rgb", "mismatch");
    edit_config(&dir, "latent_channels", serde_json::json!(3));
    let e = AutoencoderKL::load(&ctx, &dir).unwrap_err().to_string();
    assert!(e.contains("encoder.conv_out.weight"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    // A missing directory.
    let e = AutoencoderKL::load(&ctx, Path::new("/nonexistent/vae"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/vae"), "{e}");
}

fn kl_encode(fixture: &str, min: usize) {
    let ctx = common::ctx();
    let dir = fixtures_dir().join(fixture);
    let io = Io::load(&dir);
    let model = AutoencoderKL::load(&ctx, &dir).unwrap();
    let (shape, image) = io.f32("image").expect("image");
    let graph = model
        .debug_encode_graph(shape[0], shape[2], shape[3])
        .expect("graph");
    let results = compare_graph(&ctx, fixture, &io, &graph, &image, "latent_mean");
    assert_all_ok(fixture, &results, min);
}

#[test]
fn kl_encode_mean_rgb_odd_image() {
    // conv_in, 2 down blocks, mid_block, conv_act, conv_out, quant_conv, latent_mean.
    kl_encode("kl_rgb", 8);
}

#[test]
fn kl_encode_mean_gray_legacy_no_quant_conv() {
    kl_encode("kl_gray_legacy", 7);
}

#[test]
fn encode_needs_an_image_the_downsamplers_can_halve() {
    let ctx = common::ctx();
    let model = AutoencoderKL::load(&ctx, &fixtures_dir().join("kl_rgb")).unwrap();
    let e = model.encode_graph(1, 1, 9).unwrap_err().to_string();
    assert!(e.contains("at least 2"), "{e}");
    assert!(model.encode_graph(1, 2, 3).is_ok());
    let e = model.decode_graph(0, 4, 4).unwrap_err().to_string();
    assert!(e.contains("batch"), "{e}");
}

fn vq_model(fixture: &str) -> (std::sync::Arc<GpuContext>, Io, VQModel) {
    let ctx = common::ctx();
    let dir = fixtures_dir().join(fixture);
    let io = Io::load(&dir);
    let model = VQModel::load(&ctx, &dir).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    (ctx, io, model)
}

#[test]
fn vq_decode_quantizes_on_the_gpu() {
    let (ctx, io, model) = vq_model("vq_rgb");
    let (shape, latents) = io.f32("latents").expect("latents");
    let graph = model
        .debug_decode_graph(shape[0], shape[2], shape[3])
        .unwrap();
    // quantize, post_quant_conv, conv_in, mid_block, 2 up blocks, conv_act, sample.
    let results = compare_graph(&ctx, "vq_rgb", &io, &graph, &latents, "sample");
    assert_all_ok("vq_rgb", &results, 8);
    // The quantised latents are codebook rows, bit for bit.
    let (_, want) = io.f32("act.quantize").unwrap();
    assert_eq!(graph.activations["quantize"].read(&ctx).unwrap(), want);
}

#[test]
fn vq_decode_force_not_quantize_and_encode() {
    let (ctx, io, model) = vq_model("vq_rgb");
    let (shape, latents) = io.f32("latents").unwrap();
    let graph = model
        .decode_graph_not_quantized(shape[0], shape[2], shape[3])
        .unwrap();
    let results = compare_graph(
        &ctx,
        "vq_rgb",
        &io,
        &graph,
        &latents,
        "sample_not_quantized",
    );
    assert_all_ok("vq_rgb not quantized", &results, 1);
    let (shape, image) = io.f32("image").unwrap();
    let graph = model
        .debug_encode_graph(shape[0], shape[2], shape[3])
        .unwrap();
    let results = compare_graph(&ctx, "vq_rgb", &io, &graph, &image, "encoded");
    assert_all_ok("vq_rgb encode", &results, 8);
}

#[test]
fn vq_config_scaling_factor_absent_means_one() {
    let (_, _, model) = vq_model("vq_rgb");
    let text = std::fs::read_to_string(fixtures_dir().join("vq_rgb/config.json")).unwrap();
    assert!(!text.contains("scaling_factor"), "{text}");
    assert_eq!(model.scaling_factor(), 1.0);
    assert_eq!(model.parameters, 42_833);
    assert_eq!(model.codebook.shape, vec![13, 4]);
}

#[test]
fn vq_bad_inputs_are_named() {
    let ctx = common::ctx();
    // A codebook of the wrong shape (the config says 12 vectors, the file holds 13).
    let dir = scratch_copy("vq_rgb", "codebook");
    edit_config(&dir, "num_vq_embeddings", serde_json::json!(12));
    let e = VQModel::load(&ctx, &dir).unwrap_err().to_string();
    assert!(
        e.contains("quantize.embedding.weight") && e.contains("[12, 4]") && e.contains("[13, 4]"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    for (key, value, expect) in [
        ("norm_type", serde_json::json!("spatial"), "\"spatial\""),
        (
            "down_block_types",
            serde_json::json!(["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
            "AttnDownEncoderBlock2D",
        ),
        ("act_fn", serde_json::json!("mish"), "\"mish\""),
    ] {
        let dir = scratch_copy("vq_rgb", key);
        edit_config(&dir, key, value);
        let e = VQModel::load(&ctx, &dir).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(expect), "{key}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // lookup_from_codebook reads indices on force_not_quantize: refused by name.
    let dir = scratch_copy("vq_rgb", "lookup");
    edit_config(&dir, "lookup_from_codebook", serde_json::json!(true));
    let model = VQModel::load(&ctx, &dir).unwrap();
    let e = model
        .decode_graph_not_quantized(1, 5, 7)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lookup_from_codebook"), "{e}");
    assert!(model.decode_graph(1, 5, 7).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_vae_fixture_is_tested() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("MANIFEST.json")).unwrap(),
    )
    .unwrap();
    for f in manifest["fixtures"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert!(
            ["kl_rgb", "kl_gray_legacy", "vq_rgb"].contains(&name),
            "fixture {name} has no test"
        );
        assert!(
            f["bytes"].as_u64().unwrap() < 1_000_000,
            "{name} is too big"
        );
    }
}

#[test]
fn ldm_celebahq_256_decoder_architecture_and_memory() {
    // The exact CompVis/ldm-celebahq-256 VQModel with random weights: diffusers 0.42.1 counts
    // 55,322,782 parameters for this config (32,960,771 in the decoder).
    let ctx = common::ctx();
    let label = Path::new("<ldm-celebahq-256 vqvae>/config.json");
    let config = VQModelConfig::from_json_str(LDM_CELEBAHQ_256_VQVAE_CONFIG, label).unwrap();
    assert_eq!(config.scaling_factor(), 1.0);
    let model = VQModel::from_source(&ctx, config, &WeightSource::random(7, "<random>")).unwrap();
    assert_eq!(model.parameters, 55_322_782);
    assert_eq!(model.upscale(), 4);
    let plan = model.plan_memory(1, 64, 64).unwrap();
    println!("ldm-celebahq-256 decode, batch 1: {plan:?}");
    // The figures README.md quotes.
    assert_eq!(plan.planned_bytes, README_PLANNED_BYTES, "{plan:?}");
    assert_eq!(plan.unplanned_bytes, README_UNPLANNED_BYTES, "{plan:?}");
    // The mid block's attention scores, [1, 4096, 4096] f32, are the largest tensor.
    assert_eq!(plan.largest.1, 4096 * 4096 * 4, "{plan:?}");
}

/// The largest binding limit (a whole number of KiB) under which `plan` splits the decode into
/// at least 3 bands: found by lowering the limit from the unsplit decode's largest activation.
fn banding_limit(largest: u64, plan: impl Fn(u64) -> Option<DecodePlan>) -> (u64, DecodePlan) {
    let mut limit = largest / 1024 * 1024;
    while limit >= 1024 {
        if let Some(p) = plan(limit).filter(|p| p.bands >= 3) {
            return (limit, p);
        }
        limit -= 1024;
    }
    panic!("no binding limit below {largest} B splits the decode into ≥ 3 bands");
}

/// A banded decode (a lowered binding limit forcing ≥ 3 row bands) against the unsplit decode
/// (≤ 1e-5 of its scale) and against diffusers' fixture (≤ TOLERANCE).
fn check_banded(
    fixture: &str,
    io: &Io,
    unsplit: &AutoencoderGraph,
    banded: impl Fn(u64) -> AutoencoderGraph,
    plan: impl Fn(u64) -> Option<DecodePlan>,
) {
    let (_, latents) = io.f32("latents").expect("latents");
    assert_eq!(
        unsplit.bands, 1,
        "{fixture}: the device limit needs no bands"
    );
    let whole = unsplit.run(&latents).expect("unsplit run");
    let (limit, p) = banding_limit(unsplit.memory.largest.1, plan);
    let graph = banded(limit);
    assert_eq!(graph.bands, p.bands, "{fixture}: plan and graph agree");
    assert_eq!(
        graph.memory, p.memory,
        "{fixture}: the plan is what the graph allocates"
    );
    assert!(
        graph.memory.largest.1 <= limit,
        "{fixture}: largest {:?} over the limit {limit}",
        graph.memory.largest
    );
    let split = graph.run(&latents).expect("banded run");
    let identical = split == whole;
    let max_abs = split
        .iter()
        .zip(&whole)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        max_abs <= 1e-5,
        "{fixture}: banded vs unsplit max abs {max_abs}"
    );
    println!(
        "{fixture}: limit {limit} B (unsplit largest {:?}) -> {} bands, bit-identical: {identical}",
        unsplit.memory.largest, graph.bands
    );
    let c = compare_scaled(
        &format!("{fixture} banded vs unsplit"),
        &split,
        &common::f64s(&whole),
        1e-5,
    );
    println!("{c}");
    assert!(c.ok(), "{c}");
    let (_, want) = io.f32("sample").expect("sample");
    let c = compare_scaled(
        &format!("{fixture} banded vs diffusers"),
        &split,
        &common::f64s(&want),
        TOLERANCE,
    );
    println!("{c}");
    assert!(c.ok(), "{c}");
}

fn limited(limit: u64) -> DecodeOptions {
    DecodeOptions {
        binding_limit: Some(limit),
    }
}

#[test]
fn kl_decode_in_bands_equals_unsplit() {
    let ctx = common::ctx();
    for fixture in ["kl_rgb", "kl_gray_legacy"] {
        let dir = fixtures_dir().join(fixture);
        let io = Io::load(&dir);
        let model = AutoencoderKL::load(&ctx, &dir).unwrap();
        let (shape, _) = io.f32("latents").unwrap();
        let (n, h, w) = (shape[0], shape[2], shape[3]);
        let unsplit = model.decode_graph(n, h, w).unwrap();
        check_banded(
            fixture,
            &io,
            &unsplit,
            |limit| model.decode_graph_with(n, h, w, &limited(limit)).unwrap(),
            |limit| model.decode_plan(n, h, w, &limited(limit)).ok(),
        );
    }
}

#[test]
fn vq_decode_in_bands_equals_unsplit() {
    let (_ctx, io, model) = vq_model("vq_rgb");
    let (shape, _) = io.f32("latents").unwrap();
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    let unsplit = model.decode_graph(n, h, w).unwrap();
    check_banded(
        "vq_rgb",
        &io,
        &unsplit,
        |limit| model.decode_graph_with(n, h, w, &limited(limit)).unwrap(),
        |limit| model.decode_plan(n, h, w, &limited(limit)).ok(),
    );
}

#[test]
fn decode_past_any_band_split_names_the_limit() {
    let ctx = common::ctx();
    let model = AutoencoderKL::load(&ctx, &fixtures_dir().join("kl_rgb")).unwrap();
    // 1 KiB holds no latent-resolution activation of this decoder, however the rows are split.
    let e = model
        .decode_graph_with(1, 5, 7, &limited(1024))
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(
        e.contains("1024") || e.contains("1 KiB") || e.contains("0.0"),
        "{e}"
    );
    assert!(e.contains("row band"), "{e}");
}

/// Stable Diffusion's VAE (stabilityai/sd-vae-ft-mse and the v1 checkpoints' vae/config.json).
const SD_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

#[test]
fn sd_vae_decode_at_512_plans_in_bands_under_128_mib() {
    // Its 256-channel 512×512 activations take 256 MiB each: past the 128 MiB binding limit
    // the planner must work within, so the decode runs in bands, every buffer within 128 MiB.
    let ctx = common::ctx();
    let label = Path::new("<sd-vae>/config.json");
    let config = AutoencoderKLConfig::from_json_str(SD_VAE_CONFIG, label).unwrap();
    let model =
        AutoencoderKL::from_source(&ctx, config, &WeightSource::random(3, "<random>")).unwrap();
    assert_eq!(model.upscale(), 8);
    let limit = 128 << 20;
    let plan = model.decode_plan(1, 64, 64, &limited(limit)).unwrap();
    println!("SD VAE decode 512², batch 1, limit 128 MiB: {plan:?}");
    assert!(plan.bands >= 2, "{plan:?}");
    assert!(plan.memory.largest.1 <= limit, "{plan:?}");
    assert_eq!(plan.binding_limit, limit.min(ctx.max_binding_bytes()));
    // Unsplit, the largest activation would be 256 channels × 512 × 512 × 4 bytes.
    let whole = model
        .decode_plan(1, 64, 64, &limited(u64::MAX))
        .ok()
        .filter(|p| p.bands == 1);
    if let Some(p) = whole {
        assert_eq!(p.memory.largest.1, 256 * 512 * 512 * 4, "{p:?}");
    }
}
