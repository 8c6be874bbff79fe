//! A sampling run creates the same number of GPU buffers and bind groups whatever its number of
//! steps: every stage's update parameters live in one uniform buffer read through dynamic offsets
//! into one bind group, and so do the per-step noise draws. Counted with `GpuContext::allocations`
//! (every buffer and bind group of the crate is created through the context's counted helpers;
//! clippy.toml forbids the direct wgpu calls).

mod common;

use wgpu_diffusion::gpu::{Allocations, GpuContext};
use wgpu_diffusion::sampling::analytic::{GaussianDenoiser, GaussianModel, Parametrization};
use wgpu_diffusion::sampling::engine::{run_chunk, ChunkJob, InitNoise, InitRule, RunStage};
use wgpu_diffusion::schedule::{PlanOptions, SamplerSettings, SchedulerKind, StepPlan};

const SHAPE: [usize; 4] = [4, 1, 8, 8];

/// Runs DDPM with `steps` steps on the analytic Gaussian model; returns what `run_chunk` created,
/// what building the model created, and the final sample.
fn ddpm_run(ctx: &GpuContext, steps: usize) -> (Allocations, Allocations, Vec<f32>) {
    let settings = SamplerSettings::defaults(SchedulerKind::Ddpm);
    let plan = StepPlan::from_settings(&settings, steps, &PlanOptions::default()).expect("plan");
    assert_eq!(plan.steps.len(), steps);
    let model = GaussianModel {
        mean: 0.3,
        std: 0.6,
        param: Parametrization::for_settings(&settings).expect("param"),
    };
    let before_model = ctx.allocations();
    let denoiser = GaussianDenoiser::new(ctx, &model, SHAPE).expect("denoiser");
    let model_allocations = ctx.allocations().since(before_model);
    let stages: Vec<RunStage> = plan
        .steps
        .iter()
        .enumerate()
        .flat_map(|(step, r)| r.stages.iter().map(move |&stage| RunStage { step, stage }))
        .collect();
    let noisy = stages
        .iter()
        .filter(|r| r.stage.draws_noise && r.stage.noise_std != 0.0)
        .count();
    assert!(
        noisy + 1 >= steps,
        "DDPM with {steps} steps draws noise at only {noisy} stages"
    );
    let job = ChunkJob {
        stages: &stages,
        init: InitRule {
            image_coef: 0.0,
            noise_coef: plan.init_noise_sigma,
        },
        init_noise: InitNoise::Seeded,
        init_image: None,
        seed: 5,
        first_image: 0,
        images: SHAPE[0],
        guidance: None,
        trajectory_steps: &[],
    };
    let before = ctx.allocations();
    let sample = run_chunk(ctx, &denoiser, &job, &mut |_| {})
        .expect("run")
        .sample;
    (ctx.allocations().since(before), model_allocations, sample)
}

#[test]
fn a_1000_step_run_allocates_what_a_10_step_run_does() {
    let ctx = common::ctx();
    let (short, short_model, short_sample) = ddpm_run(&ctx, 10);
    let (long, long_model, long_sample) = ddpm_run(&ctx, 1000);
    println!(
        "DDPM 10 steps: {} buffers, {} bind groups (model: {} buffers, {} bind groups)",
        short.buffers, short.bind_groups, short_model.buffers, short_model.bind_groups
    );
    println!(
        "DDPM 1000 steps: {} buffers, {} bind groups (model: {} buffers, {} bind groups)",
        long.buffers, long.bind_groups, long_model.buffers, long_model.bind_groups
    );
    assert_eq!(
        short, long,
        "a 1000-step run created {long:?}, a 10-step run {short:?}: something is allocated per step"
    );
    assert_eq!(short_model, long_model);
    // The runs did run: both end on finite samples.
    for (steps, sample) in [(10, &short_sample), (1000, &long_sample)] {
        assert_eq!(sample.len(), SHAPE.iter().product::<usize>());
        assert!(
            sample.iter().all(|v| v.is_finite()),
            "{steps}-step run produced a non-finite sample"
        );
    }
}
