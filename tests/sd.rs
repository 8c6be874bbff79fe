//! Stable Diffusion: diffusers `UNet2DConditionModel`s block by block (tests/fixtures/sd, from
//! scripts/make_sd_fixtures.py): an SD1-style U-Net (1×1 conv projections, an int head count) and
//! an SD2-style one (linear projections, per-block heads and depths, `only_cross_attention`,
//! `upcast_attention`), each from fixed latents, timesteps and text embeddings.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::model::unet_2d_condition::UNet2DConditionModel;
use wgpu_diffusion::reference::compare_scaled;
use wgpu_diffusion::sampling::{Pipeline, SampleOptions};
use wgpu_diffusion::schedule::SchedulerKind;

/// Block outputs vs diffusers' float64 forward, relative to each block's max |x|.
const BLOCK_TOLERANCE: f64 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn tensor(io: &SafeTensors, key: &str) -> Vec<f32> {
    let t = io.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn check_unet(name: &str, blocks: &[&str]) {
    let ctx = common::ctx();
    let dir = fixture().join(name);
    let model = UNet2DConditionModel::load(&ctx, &dir).expect("load");
    let bytes = fs::read(dir.join("io.safetensors")).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let sample = tensor(&io, "sample");
    let timesteps = tensor(&io, "timesteps");
    let context = tensor(&io, "encoder_hidden_states");
    let graph = model.debug_graph(2, 8, 8, 7).expect("graph");
    let out = graph
        .forward(&sample, &timesteps, &context)
        .expect("forward");
    let mut failed = Vec::new();
    for block in blocks {
        let got = match *block {
            "out" => out.clone(),
            b => graph.activations[b].read(&ctx).expect("read"),
        };
        let want = common::f64s(&tensor(&io, block));
        let c = compare_scaled(&format!("{name} {block}"), &got, &want, BLOCK_TOLERANCE);
        println!("{c}");
        if !c.ok() {
            failed.push(c.to_string());
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn sd1_unet_matches_diffusers_block_by_block() {
    check_unet(
        "unet_sd1",
        &[
            "time_embedding",
            "conv_in",
            "down_blocks.0",
            "down_blocks.1",
            "mid_block",
            "up_blocks.0",
            "up_blocks.1",
            "conv_act",
            "out",
        ],
    );
}

#[test]
fn sd2_unet_matches_diffusers_block_by_block() {
    check_unet(
        "unet_sd2",
        &[
            "time_embedding",
            "conv_in",
            "down_blocks.0",
            "down_blocks.1",
            "down_blocks.2",
            "mid_block",
            "up_blocks.0",
            "up_blocks.1",
            "up_blocks.2",
            "conv_act",
            "out",
        ],
    );
}

/// diffusers' own StableDiffusionPipeline loop vs ours, from the same latents: final latents and
/// decoded image relative to their max |x| (the sampler fixtures' tolerance).
const PIPELINE_TOLERANCE: f64 = 1e-3;

fn manifest() -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(fixture().join("manifest.json")).expect("manifest"))
        .expect("manifest parses")
}

fn check_pipeline(name: &str, cases: &[&str]) {
    let ctx = common::ctx();
    let pipeline =
        Pipeline::load_with(&ctx, &fixture().join(format!("pipeline_{name}"))).expect("SD folder");
    assert!(pipeline.decoder.is_some() && pipeline.prompt_encoder.is_some());
    let bytes = fs::read(fixture().join(format!("pipeline_{name}.io.safetensors"))).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let manifest = manifest();
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        })
    };
    for case in cases {
        let m = manifest[format!("pipeline_{name}")]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["case"] == *case)
            .expect("case in manifest")
            .clone();
        let scheduler = match m["sampler"].as_str().expect("sampler") {
            "DDIMScheduler" => SchedulerKind::Ddim,
            "EulerDiscreteScheduler" => SchedulerKind::Euler,
            other => panic!("{other}"),
        };
        let options = SampleOptions {
            scheduler: Some(scheduler),
            steps: m["steps"].as_u64().expect("steps") as usize,
            num_images: 2,
            guidance_scale: m["guidance_scale"].as_f64(),
            prompts: strings(&m["prompt"]),
            negative_prompts: strings(&m["negative_prompt"]),
            init_noise: Some(tensor(&io, &format!("{case}.noise"))),
            height: Some(16),
            width: Some(16),
            ..SampleOptions::default()
        };
        let samples = pipeline.sample(&options).expect("sample");
        assert_eq!(samples.shape, [2, 3, 16, 16], "{case}: image shape");
        let (latents, latent_shape) = samples.latents.as_ref().expect("latents kept");
        assert_eq!(*latent_shape, [2, 4, 8, 8]);
        for (what, got) in [("latents", latents.as_slice()), ("image", &samples.data)] {
            let want = common::f64s(&tensor(&io, &format!("{case}.{what}")));
            let c = compare_scaled(
                &format!("{name} {case} {what}"),
                got,
                &want,
                PIPELINE_TOLERANCE,
            );
            println!("{c}");
            assert!(c.ok(), "{c}");
        }
    }
}

#[test]
fn sd1_pipeline_matches_diffusers_with_and_without_guidance() {
    check_pipeline("sd1", &["ddim_cfg", "ddim_nocfg"]);
}

#[test]
fn sd2_pipeline_matches_diffusers_v_prediction_trailing_euler() {
    check_pipeline("sd2", &["euler_cfg", "euler_turbo"]);
}
