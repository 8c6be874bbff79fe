//! Latent diffusion: a diffusers `LDMPipeline` folder (UNet2DModel on latents + VQModel +
//! DDIMScheduler, `scaling_factor` 0.7) samples latents from given noise and decodes
//! `latents / scaling_factor` exactly as diffusers' own loop does (tests/fixtures/ldm_pipeline,
//! from scripts/make_ldm_fixtures.py), and bad latent folders are errors naming the file and key.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
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
    assert!(pipeline.decoder.is_some());
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

/// Copies the fixture pipeline folder into a temp dir, applies `edit`, and returns the error
/// of reading it.
fn folder_error(edit: impl Fn(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture().join("pipeline");
    for part in ["", "unet", "vqvae", "scheduler"] {
        fs::create_dir_all(tmp.path().join(part)).unwrap();
        for entry in fs::read_dir(src.join(part)).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                fs::copy(entry.path(), tmp.path().join(part).join(entry.file_name())).unwrap();
            }
        }
    }
    edit(tmp.path());
    PipelineConfig::load(tmp.path())
        .expect_err("bad folder")
        .to_string()
}

fn edit_json(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    fs::write(path, text.replace(from, to)).unwrap();
}

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
