//! Latent diffusion: a diffusers `LDMPipeline` folder (UNet2DModel on latents + VQModel +
//! DDIMScheduler, `scaling_factor` 0.7) samples latents from given noise and decodes
//! `latents / scaling_factor` exactly as diffusers' own loop does (tests/fixtures/ldm_pipeline,
//! from scripts/make_ldm_fixtures.py), and bad latent folders are errors naming the file and key.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::model::autoencoder::DecodeOptions;
use wgpu_diffusion::reference::compare_scaled;
use wgpu_diffusion::sampling::{Pipeline, PipelineConfig, SampleOptions};

/// diffusers' loop in f32 vs f64 differs by ≤ 1.7e-6 relative (manifest.json); 1e-3 is the
/// sampler fixtures' tolerance.
const TOLERANCE: f64 = 1e-3;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ldm_pipeline")
}

fn tensor(io: &SafeTensors, key: &str) -> Vec<f32> {
    let t = io.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn ldm_pipeline_matches_diffusers_latents_and_decoded_image() {
    let ctx = common::ctx();
    let pipeline = Pipeline::load_with(&ctx, &fixture().join("pipeline")).expect("LDM folder");
    assert!(pipeline.decoder_config.is_some());
    let bytes = fs::read(fixture().join("io.safetensors")).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    for steps in [1, 10] {
        let case = format!("ddim_{steps}");
        let noise = tensor(&io, &format!("{case}.noise"));
        let options = SampleOptions {
            steps,
            num_images: 2,
            init_noise: Some(noise),
            ..SampleOptions::default()
        };
        let samples = pipeline.sample(&options).expect("sample");
        assert_eq!(samples.shape, [2, 3, 16, 16], "{case}: decoded image shape");
        let (latents, latent_shape) = samples.latents.as_ref().expect("latents kept");
        assert_eq!(*latent_shape, [2, 3, 8, 8]);
        for (name, got, key) in [
            ("latents", latents.as_slice(), "latents"),
            ("sample", samples.data.as_slice(), "sample"),
        ] {
            let want: Vec<f64> = tensor(&io, &format!("{case}.{key}"))
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let c = compare_scaled(&format!("{case} {name}"), got, &want, TOLERANCE);
            println!("{c}");
            assert!(c.ok(), "{c}");
        }
    }
}

fn folder_error(edit: impl Fn(&Path)) -> String {
    common::pipeline_folder_error(
        &fixture().join("pipeline"),
        &["", "unet", "vqvae", "scheduler"],
        edit,
    )
}

use common::edit_json;

#[test]
fn bad_latent_pipeline_folders_are_named() {
    // The decoder's latents disagree with the U-Net's channels.
    let e = folder_error(|root| {
        edit_json(
            &root.join("vqvae/config.json"),
            "\"vq_embed_dim\": 3",
            "\"vq_embed_dim\": 4",
        )
    });
    assert!(
        e.contains("vqvae") && e.contains("vq_embed_dim") && e.contains("4-channel latents"),
        "{e}"
    );
    // A decoder part of a class we do not decode with.
    let e = folder_error(|root| {
        edit_json(
            &root.join("model_index.json"),
            "\"VQModel\"",
            "\"AsymmetricAutoencoderKL\"",
        )
    });
    assert!(
        e.contains("vqvae") && e.contains("AsymmetricAutoencoderKL") && e.contains("VQModel"),
        "{e}"
    );
    // The decoder part is missing.
    let e = folder_error(|root| fs::remove_dir_all(root.join("vqvae")).unwrap());
    assert!(e.contains("vqvae") && e.contains("missing"), "{e}");
    // An unsupported VQ config value, named by key.
    let e = folder_error(|root| {
        edit_json(
            &root.join("vqvae/config.json"),
            "\"norm_type\": \"group\"",
            "\"norm_type\": \"spatial\"",
        )
    });
    assert!(e.contains("norm_type") && e.contains("spatial"), "{e}");
}

#[test]
fn latent_pipelines_refuse_what_they_cannot_do_yet() {
    let config = PipelineConfig::load(&fixture().join("pipeline")).expect("config");
    let e = config
        .prepare(&SampleOptions {
            trajectory_every: Some(2),
            ..SampleOptions::default()
        })
        .expect_err("trajectory")
        .to_string();
    assert!(
        e.contains("trajectory_every") && e.contains("latent"),
        "{e}"
    );
}

/// Latents of 8×2: at 8×8 the mid block's attention scores ([N, 64, 64], run whole at latent
/// resolution) are the decode's largest tensor, so no limit could band the rest while they fit;
/// at 8×2 they are 16 times smaller.
const LATENT_H: usize = 8;
const LATENT_W: usize = 2;
/// The image those latents decode to (the fixture's VQModel upscales 2×): what `height` and
/// `width` (`--height`, `--width`) of a latent pipeline give.
const IMAGE_H: usize = 2 * LATENT_H;
const IMAGE_W: usize = 2 * LATENT_W;

/// The largest binding limit (a multiple of 256 B) that splits the fixture pipeline's 8×2-latent
/// decode (batch 2) into at least 3 row bands, and the bands it gives.
fn three_band_limit(pipeline: &Pipeline) -> (u64, usize) {
    let decoder = pipeline.decoder().expect("loads").expect("decoder");
    let whole = decoder
        .decode_graph(2, LATENT_H, LATENT_W)
        .expect("unsplit decode");
    assert_eq!(whole.bands, 1);
    let mut limit = whole.memory.largest.1 / 256 * 256;
    while limit >= 256 {
        let options = DecodeOptions {
            binding_limit: Some(limit),
        };
        if let Ok(plan) = decoder.decode_plan(2, LATENT_H, LATENT_W, &options) {
            if plan.bands >= 3 {
                return (limit, plan.bands);
            }
        }
        limit -= 256;
    }
    panic!("no limit splits the decode into 3 bands");
}

#[test]
fn ldm_pipeline_with_a_banded_decode_equals_the_unsplit_run() {
    let ctx = common::ctx();
    let pipeline = Pipeline::load_with(&ctx, &fixture().join("pipeline")).expect("LDM folder");
    let (limit, bands) = three_band_limit(&pipeline);
    println!("decode binding limit {limit} B -> {bands} bands");
    let options = SampleOptions {
        steps: 10,
        num_images: 2,
        seed: 5,
        height: Some(IMAGE_H),
        width: Some(IMAGE_W),
        ..SampleOptions::default()
    };
    let whole = pipeline.sample(&options).expect("unsplit sample");
    let split = pipeline
        .sample(&SampleOptions {
            decode_binding_limit: Some(limit),
            ..options
        })
        .expect("banded sample");
    assert_eq!(split.shape, whole.shape);
    assert_eq!(
        split.latents, whole.latents,
        "the latents do not depend on the decode"
    );
    let max_abs = split
        .data
        .iter()
        .zip(&whole.data)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("banded vs unsplit: max abs {max_abs:e}");
    assert!(max_abs <= 1e-5, "banded vs unsplit: max abs {max_abs}");
    let scale = whole.data.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        scale > 0.01,
        "a decoded image of scale {scale} would prove nothing"
    );
}

#[test]
fn inspect_says_how_the_decode_is_banded() {
    let ctx = common::ctx();
    let pipeline = Pipeline::load_with(&ctx, &fixture().join("pipeline")).expect("LDM folder");
    // inspect plans batch 1: find a limit that bands that decode.
    let decoder = pipeline.decoder().expect("loads").expect("decoder");
    let whole = decoder
        .decode_graph(1, LATENT_H, LATENT_W)
        .expect("unsplit decode");
    let limit = whole.memory.largest.1 / 2;
    let plan = decoder
        .decode_plan(
            1,
            LATENT_H,
            LATENT_W,
            &DecodeOptions {
                binding_limit: Some(limit),
            },
        )
        .expect("banded plan");
    assert!(plan.bands >= 2, "{plan:?}");
    let dir = fixture().join("pipeline");
    let size = [IMAGE_H.to_string(), IMAGE_W.to_string()];
    let run = |extra: &[&str]| {
        let mut args = vec!["--height", &size[0], "--width", &size[1]];
        args.extend_from_slice(extra);
        common::inspect(&dir, &args)
    };
    let text = run(&[]);
    assert!(text.contains("decode bands 1 (unsplit)"), "{text}");
    let text = run(&["--decode-binding-limit", &limit.to_string()]);
    let want = format!("decode bands {} row bands", plan.bands);
    assert!(
        text.contains(&want) && text.contains(&format!("{limit} B (lowered)")),
        "{want}: {text}"
    );
}

#[test]
fn sample_cli_with_a_lowered_decode_limit_saves_the_unsplit_images() {
    let ctx = common::ctx();
    let pipeline = Pipeline::load_with(&ctx, &fixture().join("pipeline")).expect("LDM folder");
    let (limit, bands) = three_band_limit(&pipeline);
    let tmp = tempfile::tempdir().unwrap();
    let command = |limit: Option<u64>, name: &str| {
        let path = tmp.path().join(name);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-diffusion"));
        cmd.env("XDG_RUNTIME_DIR", "/tmp")
            .env_remove("WGPU_DIFFUSION_DECODE_BINDING_LIMIT")
            .args(["sample", "--quiet", "--model"])
            .arg(fixture().join("pipeline"))
            .args(["--num-images", "2", "--steps", "3", "--seed", "9"])
            .args([
                "--height",
                &IMAGE_H.to_string(),
                "--width",
                &IMAGE_W.to_string(),
            ])
            .arg("--save-tensor")
            .arg(&path);
        if let Some(l) = limit {
            // The environment variable spells the flag.
            cmd.env("WGPU_DIFFUSION_DECODE_BINDING_LIMIT", l.to_string());
        }
        (cmd, path)
    };
    let run = |limit: Option<u64>, name: &str| {
        let (mut cmd, path) = command(limit, name);
        let out = cmd.output().expect("run sample");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = fs::read(&path).expect("tensor written");
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let t = st.tensor("sample").expect("sample tensor");
        assert_eq!(t.shape(), &[2, 3, IMAGE_H, IMAGE_W]);
        tensor(&st, "sample")
    };
    let whole = run(None, "whole.safetensors");
    let split = run(Some(limit), "split.safetensors");
    let max_abs = split
        .iter()
        .zip(&whole)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("sample CLI, decode in {bands} bands vs unsplit: max abs {max_abs:e}");
    assert!(max_abs <= 1e-5, "max abs {max_abs}");
    // The variable is read: a limit no band split can meet fails, naming it.
    let (mut cmd, path) = command(Some(256), "none.safetensors");
    let out = cmd.output().expect("run sample");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("256 bytes is the lowered decode binding limit"),
        "{stderr}"
    );
    assert!(!path.exists(), "no tensor written on an error");
}
