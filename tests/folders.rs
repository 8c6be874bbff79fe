//! `--model` folders: a diffusers pipeline folder (`model_index.json` + `unet/` + `scheduler/`)
//! samples exactly as the same model in a single folder; unsupported or incomplete folders are
//! errors naming the file, key and what is supported.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use wgpu_diffusion::sampling::{FolderLayout, Pipeline, PipelineConfig, SampleOptions};
use wgpu_diffusion::SchedulerKind;

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm")
}

/// The bundled model rewritten as `DDPMPipeline.save_pretrained` lays it out.
fn pipeline_folder(root: &Path, index: &str) {
    let src = bundled();
    fs::create_dir_all(root.join("unet")).unwrap();
    fs::create_dir_all(root.join("scheduler")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        fs::copy(src.join(f), root.join("unet").join(f)).unwrap();
    }
    fs::copy(
        src.join("scheduler_config.json"),
        root.join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    fs::copy(src.join("classes.json"), root.join("classes.json")).unwrap();
    fs::write(root.join("model_index.json"), index).unwrap();
}

const DDPM_INDEX: &str = r#"{"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
  "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}"#;

#[test]
fn a_pipeline_folder_samples_like_the_single_folder() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline_folder(tmp.path(), DDPM_INDEX);
    let layout = FolderLayout::resolve(tmp.path()).expect("layout");
    assert_eq!(layout.pipeline_class.as_deref(), Some("DDPMPipeline"));
    assert_eq!(layout.unet, tmp.path().join("unet"));
    // The configs alone (no GPU) read the same from both layouts.
    let single = PipelineConfig::load(&bundled()).expect("single");
    let folder = PipelineConfig::load(tmp.path()).expect("pipeline folder");
    assert_eq!(
        single.unet.plain().unwrap().block_out_channels,
        folder.unet.plain().unwrap().block_out_channels
    );
    assert_eq!(
        single.scheduler_config.class_name,
        folder.scheduler_config.class_name
    );
    assert!(folder.has_scheduler_file);
    assert_eq!(single.classes, folder.classes);

    let ctx = common::ctx();
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 2,
        num_images: 2,
        seed: 5,
        class_labels: Some(vec![3, 7]),
        ..SampleOptions::default()
    };
    let a = Pipeline::load_with(&ctx, &bundled())
        .expect("single")
        .sample(&options)
        .expect("sample");
    let b = Pipeline::load_with(&ctx, tmp.path())
        .expect("pipeline folder")
        .sample(&options)
        .expect("sample");
    assert_eq!(a.data, b.data);
}

/// The error of resolving a pipeline folder written with `index` (after `edit`).
fn folder_error(index: &str, edit: impl Fn(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    pipeline_folder(tmp.path(), index);
    edit(tmp.path());
    let err = PipelineConfig::load(tmp.path()).expect_err("bad folder");
    err.to_string()
}

#[test]
fn unsupported_or_incomplete_pipeline_folders_are_named() {
    let e = folder_error(
        r#"{"_class_name": "StableDiffusion3Pipeline", "unet": ["diffusers", "UNet2DModel"]}"#,
        |_| {},
    );
    assert!(
        e.contains("model_index.json")
            && e.contains("_class_name")
            && e.contains("StableDiffusion3Pipeline")
            && e.contains("DDPMPipeline"),
        "{e}"
    );
    let e = folder_error(DDPM_INDEX, |root| {
        fs::remove_dir_all(root.join("unet")).unwrap()
    });
    assert!(
        e.contains("unet") && e.contains("missing") && e.contains("UNet2DModel"),
        "{e}"
    );
    let e = folder_error(
        r#"{"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": ["diffusers", "UNet2DConditionModel"]}"#,
        |_| {},
    );
    assert!(
        e.contains("UNet2DConditionModel") && e.contains("supported: UNet2DModel"),
        "{e}"
    );
    let e = folder_error(
        r#"{"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"]}"#,
        |_| {},
    );
    assert!(
        e.contains("needs a \"unet\" part") && e.contains("scheduler"),
        "{e}"
    );
    let e = folder_error("{not json", |_| {});
    assert!(
        e.contains("model_index.json") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = folder_error(r#"{"unet": ["diffusers", "UNet2DModel"]}"#, |_| {});
    assert!(e.contains("_class_name") && e.contains("missing"), "{e}");
    // A part folder without its config is the U-Net loader's own error, naming the file.
    let e = folder_error(DDPM_INDEX, |root| {
        fs::remove_file(root.join("unet/config.json")).unwrap()
    });
    assert!(
        e.contains("unet/config.json") || e.contains("unet\\config.json"),
        "{e}"
    );
}
