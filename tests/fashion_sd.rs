//! weights/fashion-sd, our trained text-to-image model (issue 17): the shipped folder sampled by our
//! pipeline vs diffusers' own `StableDiffusionPipeline` on it (tests/fixtures/fashion_sd, from
//! scripts/make_fashion_sd_fixtures.py), from the same latents; and the folder's size budget.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::reference::compare_scaled;
use wgpu_diffusion::sampling::{Pipeline, SampleOptions};
use wgpu_diffusion::schedule::SchedulerKind;

/// Final latents and decoded image relative to their max |x| (as tests/sd.rs): diffusers ran in
/// float64 on the stored weights, we run in f32.
const PIPELINE_TOLERANCE: f64 = 1e-3;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("weights/fashion-sd")
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/fashion_sd")
}

fn tensor(io: &SafeTensors, key: &str) -> Vec<f32> {
    let t = io.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn strings(v: &serde_json::Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    })
}

#[test]
fn fashion_sd_matches_diffusers_pipeline_from_the_same_latents() {
    let ctx = common::ctx();
    let pipeline = Pipeline::load_with(&ctx, &model()).expect("weights/fashion-sd loads");
    assert!(pipeline.decoder_config.is_some() && pipeline.text_config.is_some());
    let bytes = fs::read(fixture().join("io.safetensors")).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let manifest: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(fixture().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest parses");
    let cases = manifest["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    for m in cases {
        let case = m["case"].as_str().expect("case");
        // "DDIMScheduler" is the folder's own class: the default case passes no sampler.
        let scheduler = match m["sampler"].as_str().expect("sampler") {
            "DDIMScheduler" => None,
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            other => panic!("{other}"),
        };
        let options = SampleOptions {
            scheduler,
            steps: m["steps"].as_u64().expect("steps") as usize,
            num_images: 2,
            guidance_scale: m["guidance_scale"].as_f64(),
            prompts: strings(&m["prompt"]),
            negative_prompts: strings(&m["negative_prompt"]),
            init_noise: Some(tensor(&io, &format!("{case}.noise"))),
            ..SampleOptions::default()
        };
        let samples = pipeline.sample(&options).expect("sample");
        assert_eq!(samples.shape, [2, 1, 32, 32], "{case}: image shape");
        let (latents, latent_shape) = samples.latents.as_ref().expect("latents kept");
        assert_eq!(*latent_shape, [2, 4, 8, 8]);
        for (what, got) in [("latents", latents.as_slice()), ("image", &samples.data)] {
            let want = common::f64s(&tensor(&io, &format!("{case}.{what}")));
            let c = compare_scaled(
                &format!("fashion-sd {case} {what}"),
                got,
                &want,
                PIPELINE_TOLERANCE,
            );
            println!("{c}");
            assert!(c.ok(), "{c}");
        }
    }
}

/// The budget for the shipped folder: 15 MB with its model card.
#[test]
fn fashion_sd_folder_fits_its_size_budget_and_has_a_model_card() {
    fn walk(dir: &Path, total: &mut u64) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                walk(&entry.path(), total);
            } else {
                *total += meta.len();
            }
        }
    }
    let mut total = 0;
    walk(&model(), &mut total);
    assert!(
        total <= 15_000_000,
        "weights/fashion-sd is {total} bytes, budget 15 MB"
    );
    let card = fs::read_to_string(model().join("README.md")).expect("model card");
    for needle in ["Fashion-MNIST", "licen", "accuracy"] {
        assert!(card.contains(needle), "model card lacks {needle:?}");
    }
}
