//! The on-disk pipeline cache (src/gpu/pipeline_cache.rs) on the test adapter: a corrupt file is
//! ignored with a warning and replaced by a valid one, which the next context loads; a backend
//! without a cache (GL) says so and writes nothing.

mod common;

use std::path::PathBuf;

use wgpu_diffusion::gpu::pipeline_cache::{self, PipelineCacheStatus};
use wgpu_diffusion::schedule::SchedulerKind;
use wgpu_diffusion::{GpuContext, GpuOptions, Pipeline, SampleOptions};

fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm")
}

fn sample_once(ctx: &std::sync::Arc<GpuContext>) {
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 1,
        num_images: 1,
        ..SampleOptions::default()
    };
    Pipeline::load_with(ctx, &bundled())
        .and_then(|p| p.sample(&options))
        .expect("sample through the cache");
}

#[test]
fn a_corrupt_cache_file_is_ignored_with_a_warning_and_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let options = GpuOptions {
        pipeline_cache_dir: Some(tmp.path().to_path_buf()),
        ..GpuOptions::from_env()
    };
    let probe = common::ctx();
    let info = probe.adapter.info.clone();
    drop(probe);
    let Some(file) = pipeline_cache::file_for(tmp.path(), &info) else {
        // GL (or another backend without a cache): nothing is read or written.
        let ctx = GpuContext::new(&options).expect("context");
        assert!(
            matches!(ctx.pipeline_cache_status(), PipelineCacheStatus::Off(why) if why.contains("has none")),
            "{:?}",
            ctx.pipeline_cache_status()
        );
        sample_once(&ctx);
        assert_eq!(ctx.save_pipeline_cache().expect("save"), None);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        eprintln!(
            "{:?} has no pipeline cache: checked that nothing is written",
            info.backend
        );
        return;
    };
    std::fs::write(&file, b"not a pipeline cache").unwrap();
    let ctx = GpuContext::new(&options).expect("a corrupt cache file is not an error");
    let status = ctx.pipeline_cache_status().clone();
    let warning = status.warning().unwrap_or_default();
    assert!(
        matches!(status, PipelineCacheStatus::Ignored { .. })
            && warning.contains(&file.display().to_string())
            && warning.contains("ignored"),
        "{status:?}"
    );
    sample_once(&ctx);
    assert_eq!(ctx.save_pipeline_cache().expect("save"), Some(file.clone()));
    // Nothing compiled since: nothing to write.
    assert_eq!(ctx.save_pipeline_cache().expect("save"), None);
    drop(ctx);
    let rewritten = std::fs::read(&file).unwrap();
    assert_ne!(rewritten, b"not a pipeline cache");

    let again = GpuContext::new(&options).expect("context");
    assert_eq!(
        again.pipeline_cache_status(),
        &PipelineCacheStatus::Active {
            path: file.clone(),
            loaded_bytes: rewritten.len()
        }
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "one file, no temp files left"
    );
}

#[test]
fn disabled_reads_and_writes_nothing() {
    let ctx = GpuContext::new(&GpuOptions {
        pipeline_cache_dir: None,
        ..GpuOptions::from_env()
    })
    .expect("context");
    assert!(matches!(
        ctx.pipeline_cache_status(),
        PipelineCacheStatus::Off(why) if why == "disabled"
    ));
    assert_eq!(ctx.save_pipeline_cache().expect("save"), None);
}
