//! Soak: a long DDPM run of the bundled weights/fashion-ddpm keeps memory flat. The resident set
//! (`VmRSS` of /proc/self/status; on llvmpipe it includes every GPU buffer) and the context's
//! buffer / bind-group counts (`GpuContext::allocations`) are sampled as steps complete; after
//! a warm-up neither may grow (allocations: not at all; RSS: within a small tolerance for the
//! allocator's and driver's noise).
//!
//! CI size: 120 steps of one image (about a minute on a busy 2-core llvmpipe).
//! `SOAK_STEPS=1000 cargo test --test soak -- --nocapture` is the README's full run; it prints
//! the start / mid / end figures (`SOAK_IMAGES` sets the batch).

mod common;

use std::path::Path;

use wgpu_diffusion::gpu::Allocations;
use wgpu_diffusion::sampling::engine::IN_FLIGHT;
use wgpu_diffusion::{Pipeline, Progress, SampleOptions, SchedulerKind};

/// RSS growth allowed after warm-up: the allocator's and llvmpipe's noise, far below what a
/// per-step leak of even one 28×28 image buffer (3 KiB × steps) would add over the run.
const RSS_TOLERANCE_KIB: u64 = 4 * 1024;

/// Steps completed before the baseline is taken (pipelines compiled, caches and pools filled).
const WARM_UP_FRACTION: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: expected a count: {e}")),
        Err(_) => default,
    }
}

/// The resident set of this process in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("/proc/self/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS line in /proc/self/status"))
}

struct Sample {
    step: usize,
    rss_kib: u64,
    allocations: Allocations,
}

#[test]
fn a_long_ddpm_run_keeps_memory_and_allocations_flat() {
    let steps = env_usize("SOAK_STEPS", 120);
    let images = env_usize("SOAK_IMAGES", 1);
    let ctx = common::ctx();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm");
    let pipeline = Pipeline::load_with(&ctx, &dir).unwrap_or_else(|e| panic!("{e}"));
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddpm),
        steps,
        num_images: images,
        batch_size: Some(images),
        seed: 18,
        ..SampleOptions::default()
    };
    let spec = pipeline.prepare(&options).unwrap_or_else(|e| panic!("{e}"));
    let rss_loaded = rss_kib();
    let mut samples: Vec<Sample> = Vec::with_capacity(steps + 1);
    let t0 = std::time::Instant::now();
    let out = pipeline
        .run(&spec, &mut |p: Progress| {
            samples.push(Sample {
                step: p.steps_done,
                rss_kib: rss_kib(),
                allocations: ctx.allocations(),
            });
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let seconds = t0.elapsed().as_secs_f64();
    assert_eq!(out.data.len(), images * 28 * 28);
    assert!(out.data.iter().all(|v| v.is_finite()));
    assert!(
        samples.len() >= steps,
        "progress reported {} times for {steps} steps",
        samples.len()
    );

    let warm = samples
        .iter()
        .position(|s| s.step >= steps / WARM_UP_FRACTION)
        .unwrap_or(0);
    let base = &samples[warm];
    let mid = &samples[samples.len() / 2];
    let end = &samples[samples.len() - 1];
    let peak = samples[warm..].iter().map(|s| s.rss_kib).max().unwrap_or(0);
    println!(
        "soak: DDPM {steps} steps x {images} image(s) of weights/fashion-ddpm on {} in {seconds:.1} s; \
         RSS KiB: loaded {rss_loaded}, after step {} {}, mid (step {}) {}, end {}, peak after warm-up {peak}; \
         allocations at warm-up {:?}, at end {:?}",
        ctx.adapter.info.name,
        base.step,
        base.rss_kib,
        mid.step,
        mid.rss_kib,
        end.rss_kib,
        base.allocations,
        end.allocations
    );
    // Nothing is created once the run is going: every step reuses the recorded launches. The
    // steps reported while the loop runs are those up to `steps - IN_FLIGHT`; the rest are
    // reported after the end-of-run readbacks.
    let in_loop = samples
        .iter()
        .rposition(|s| s.step + IN_FLIGHT <= steps)
        .unwrap_or(0);
    assert!(in_loop > warm, "no step reported after warm-up");
    for s in &samples[warm..=in_loop] {
        assert_eq!(
            s.allocations, base.allocations,
            "after step {} the context had created {:?}, {:?} after step {}: something is \
             allocated per step",
            s.step, s.allocations, base.allocations, base.step
        );
    }
    // The end of the run reads back the non-finite status and the samples: two staging
    // buffers, whatever the number of steps.
    let end_growth = end.allocations.since(base.allocations);
    assert!(
        end_growth.buffers <= 2 && end_growth.bind_groups == 0,
        "the end of the run created {end_growth:?}; expected at most the 2 readback buffers"
    );
    assert!(
        peak <= base.rss_kib + RSS_TOLERANCE_KIB,
        "RSS grew from {} KiB after step {} to a peak of {peak} KiB (tolerance {RSS_TOLERANCE_KIB} KiB)",
        base.rss_kib,
        base.step
    );
}
