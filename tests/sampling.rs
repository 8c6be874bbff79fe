//! The GPU sampler against diffusers' own loops (tests/fixtures/sampling, from
//! scripts/make_sampler_fixtures.py), against the CPU f64 loop `sample_reference` with a
//! known-answer Gaussian model (every sampler, same Philox noise), statistically (stochastic
//! samplers must land on the data distribution), and for seed reproducibility.

// `!(err <= tol)` on purpose: a NaN error must fail.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use wgpu_diffusion::reference::rng::normal_image;
use wgpu_diffusion::sampling::analytic::{GaussianDenoiser, GaussianModel, Parametrization};
use wgpu_diffusion::sampling::engine::{
    run_chunk, ChunkJob, InitNoise, InitRule, RunStage, STREAM_INIT, STREAM_STEP,
};
use wgpu_diffusion::sampling::{Pipeline, SampleOptions};
use wgpu_diffusion::schedule::{
    sample_reference, PlanOptions, SamplerSettings, SchedulerConfig, SchedulerKind, StepPlan,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads the f32 tensors of a safetensors file.
fn read_tensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.to_string(), (view.shape().to_vec(), data))
        })
        .collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-12);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Every deterministic sampler of the fixture manifest, from diffusers' starting noise, on the
/// GPU: final sample within the case's tolerance (1e-3 relative to max|x|; the clipped 50-step
/// DDIM case amplifies f32 rounding and carries its own measured tolerance).
#[test]
fn deterministic_samplers_match_diffusers() {
    let ctx = common::ctx();
    let dir = root().join("tests/fixtures/sampling");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json"),
    )
    .expect("manifest JSON");
    let cases = manifest["cases"].as_array().expect("cases");
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut pipelines: std::collections::HashMap<String, Pipeline> = Default::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let model = case["model"].as_str().expect("model");
        let model_dir = root().join("tests/fixtures").join(model);
        if !pipelines.contains_key(model) {
            let p = Pipeline::load_with(&ctx, &model_dir)
                .unwrap_or_else(|e| panic!("{name}: loading {}: {e}", model_dir.display()));
            pipelines.insert(model.to_string(), p);
        }
        let pipeline = pipelines.get_mut(model).expect("pipeline");
        let config_text = serde_json::to_string(&case["scheduler_config"]).expect("config");
        pipeline.scheduler_config =
            SchedulerConfig::from_json_str(&config_text, Path::new(name)).expect("config");
        pipeline.classes.null = case["null_label"].as_u64().map(|v| v as usize);
        let tensors = read_tensors(&dir.join(case["file"].as_str().expect("file")));
        let (shape, noise) = &tensors["noise"];
        let (_, expected) = &tensors["sample"];
        let options = SampleOptions {
            scheduler: Some(
                SchedulerKind::from_cli_name(case["cli_scheduler"].as_str().expect("sampler"))
                    .expect("sampler"),
            ),
            steps: case["steps"].as_u64().expect("steps") as usize,
            eta: case["eta"].as_f64().unwrap_or(0.0),
            num_images: shape[0],
            init_noise: Some(noise.clone()),
            class_labels: case["class_labels"].as_array().map(|l| {
                l.iter()
                    .map(|v| v.as_u64().expect("label") as usize)
                    .collect()
            }),
            guidance_scale: case["guidance_scale"].as_f64(),
            ..SampleOptions::default()
        };
        let samples = pipeline
            .sample(&options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(samples.shape.to_vec(), *shape, "{name}");
        let evals = case["num_model_evals"].as_u64().expect("evals") as usize;
        assert_eq!(
            samples.model_evaluations, evals,
            "{name}: model evaluations"
        );
        let err = max_rel(&samples.data, expected);
        let tol = case["suggested_rel_tol"].as_f64().unwrap_or(1e-3).max(1e-3);
        report.push(format!("{name}: {err:.2e} (tol {tol:.0e})"));
        if !(err <= tol) {
            failures.push(format!("{name}: max rel error {err:.3e} > {tol:.0e}"));
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A plan with every sampler's default config plus a few variants (clipping, v-prediction,
/// Karras σ, DDIM η > 0).
fn analytic_cases() -> Vec<(&'static str, SamplerSettings, usize, f64)> {
    let mut cases = Vec::new();
    for kind in SchedulerKind::ALL {
        let mut s = SamplerSettings::defaults(kind);
        if kind == SchedulerKind::Heun {
            // Same betas as the others (Heun's class default is Stable Diffusion's).
            s.beta_start = 1e-4;
            s.beta_end = 0.02;
        }
        cases.push((kind.cli_name(), s, 12, 0.0));
    }
    let mut ddim_eta = SamplerSettings::defaults(SchedulerKind::Ddim);
    ddim_eta.clip_sample = false;
    cases.push(("ddim eta=1", ddim_eta, 12, 1.0));
    let mut euler_karras = SamplerSettings::defaults(SchedulerKind::Euler);
    euler_karras.use_karras_sigmas = true;
    cases.push(("euler karras", euler_karras, 12, 0.0));
    let mut dpm_karras = SamplerSettings::defaults(SchedulerKind::DpmSolverMultistep);
    dpm_karras.use_karras_sigmas = true;
    cases.push(("dpm++2m karras", dpm_karras, 12, 0.0));
    // PNDM's default is the Runge–Kutta warm-up (above); Stable Diffusion folders use PLMS only.
    let mut plms = SamplerSettings::defaults(SchedulerKind::Pndm);
    plms.skip_prk_steps = true;
    cases.push(("pndm plms", plms.clone(), 12, 0.0));
    cases.push(("pndm plms 2 steps", plms.clone(), 2, 0.0));
    plms.set_alpha_to_one = true;
    cases.push(("pndm plms set_alpha_to_one", plms, 5, 0.0));
    cases
}

const SHAPE: [usize; 4] = [6, 1, 8, 8];

/// Runs `plan` on the GPU with the Gaussian model; returns the final sample.
fn gpu_run(
    ctx: &wgpu_diffusion::GpuContext,
    model: &GaussianModel,
    plan: &StepPlan,
    seed: u64,
    shape: [usize; 4],
) -> Vec<f32> {
    let denoiser = GaussianDenoiser::new(ctx, model, shape).expect("denoiser");
    let stages: Vec<RunStage> = plan
        .steps
        .iter()
        .enumerate()
        .flat_map(|(step, r)| r.stages.iter().map(move |&stage| RunStage { step, stage }))
        .collect();
    let job = ChunkJob {
        stages: &stages,
        init: InitRule {
            image_coef: 0.0,
            noise_coef: plan.init_noise_sigma,
        },
        init_noise: InitNoise::Seeded,
        init_image: None,
        seed,
        first_image: 0,
        images: shape[0],
        guidance: None,
        trajectory_steps: &[],
    };
    run_chunk(ctx, &denoiser, &job, &mut |_| {})
        .expect("run")
        .sample
}

/// The GPU loop equals the CPU f64 loop over the same plan, model and Philox noise, for every
/// sampler (stochastic ones included: the per-step noise keys are shared).
#[test]
fn gpu_loop_matches_cpu_reference_for_every_sampler() {
    let ctx = common::ctx();
    let seed = 99;
    let per_image: usize = SHAPE[1..].iter().product();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (name, settings, steps, eta) in analytic_cases() {
        let plan = StepPlan::from_settings(
            &settings,
            steps,
            &PlanOptions {
                eta,
                ..PlanOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let model = GaussianModel {
            mean: 0.3,
            std: 0.2,
            param: Parametrization::for_settings(&settings).expect("param"),
        };
        let gpu = gpu_run(&ctx, &model, &plan, seed, SHAPE);
        // CPU: image by image, the same noise keys.
        let mut cpu = Vec::new();
        for i in 0..SHAPE[0] {
            let z = normal_image(seed, i as u32, 0, STREAM_INIT, per_image);
            let x_t: Vec<f64> = z.iter().map(|v| v * plan.init_noise_sigma).collect();
            let out = sample_reference(
                &plan,
                |x, t| x.iter().map(|&v| model.eval(v, t)).collect(),
                &x_t,
                |step| normal_image(seed, i as u32, step as u32, STREAM_STEP, per_image),
            )
            .expect("reference");
            cpu.extend(out.into_iter().map(|v| v as f32));
        }
        let err = max_rel(&gpu, &cpu);
        report.push(format!("{name}: {err:.2e}"));
        if !(err <= 1e-4) {
            failures.push(format!("{name}: GPU vs CPU max rel error {err:.3e} > 1e-4"));
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Stochastic and deterministic samplers with the exact denoiser of N(μ, s²) data end on
/// N(μ, s²): sample mean and standard deviation over 8 192 values within tolerance. A sampler
/// whose noise were mis-scaled, correlated across images or missing would miss the variance.
#[test]
fn samplers_reproduce_the_gaussian_data_distribution() {
    let ctx = common::ctx();
    // s = 0.6: the distribution contracts from N(0, 1) over a wide range of noise levels, so a
    // moderate step count resolves it (with s = 0.2 first-order solvers need hundreds of steps).
    let (mu, sd) = (0.3, 0.6);
    let shape = [32, 1, 16, 16];
    let mut failures = Vec::new();
    let mut report = Vec::new();
    // The ancestral samplers run all 1000 steps: with exact ε their only error is then the
    // sampling error (at 200 steps DDPM's fixed_small variance, optimal for point-mass data,
    // still leaves the std 4 % low for this Gaussian; that bias shrinks with the stride).
    let cases: Vec<(&str, SchedulerKind, usize, f64)> = vec![
        ("ddpm 1000 steps", SchedulerKind::Ddpm, 1000, 0.0),
        ("ddim eta=1 1000 steps", SchedulerKind::Ddim, 1000, 1.0),
        (
            "euler-ancestral 1000 steps",
            SchedulerKind::EulerAncestral,
            1000,
            0.0,
        ),
        ("sde-vp 200 steps", SchedulerKind::ScoreSdeVp, 200, 0.0),
        ("ddim 50 steps", SchedulerKind::Ddim, 50, 0.0),
        ("euler 100 steps", SchedulerKind::Euler, 100, 0.0),
        ("heun 25 steps", SchedulerKind::Heun, 25, 0.0),
        (
            "dpm++2m 20 steps",
            SchedulerKind::DpmSolverMultistep,
            20,
            0.0,
        ),
        (
            "flow-euler 50 steps",
            SchedulerKind::FlowMatchEuler,
            50,
            0.0,
        ),
        ("pndm 50 steps", SchedulerKind::Pndm, 50, 0.0),
        ("pndm plms 50 steps", SchedulerKind::Pndm, 50, 0.0),
    ];
    for (name, kind, steps, eta) in cases {
        let mut settings = SamplerSettings::defaults(kind);
        if kind == SchedulerKind::Heun {
            settings.beta_start = 1e-4;
            settings.beta_end = 0.02;
        }
        // Clipping x̂₀ to [−1, 1] deliberately biases the tails of N(0.3, 0.6²).
        settings.clip_sample = false;
        settings.skip_prk_steps = name.contains("plms");
        let plan = StepPlan::from_settings(
            &settings,
            steps,
            &PlanOptions {
                eta,
                ..PlanOptions::default()
            },
        )
        .expect("plan");
        let model = GaussianModel {
            mean: mu,
            std: sd,
            param: Parametrization::for_settings(&settings).expect("param"),
        };
        let out = gpu_run(&ctx, &model, &plan, 7, shape);
        let n = out.len() as f64;
        let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = out
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let std = var.sqrt();
        report.push(format!(
            "{name}: mean {mean:.4} (μ {mu}), std {std:.4} (s {sd})"
        ));
        // Standard error of the mean is s/√n ≈ 0.0066; of the std ≈ 0.0047 (images are
        // independent, elements within one image too). Discretisation adds a little.
        if (mean - mu).abs() > 0.025 || (std - sd).abs() > 0.03 {
            failures.push(format!(
                "{name}: mean {mean:.4} vs {mu}, std {std:.4} vs {sd}"
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn fixture_pipeline(ctx: &std::sync::Arc<wgpu_diffusion::GpuContext>) -> Pipeline {
    Pipeline::load_with(ctx, &root().join("tests/fixtures/google_flags")).expect("pipeline")
}

/// The same seed gives the same images whatever the number of images or the batch split; a
/// different seed gives different images. Checked with a stochastic sampler (DDPM), whose
/// per-step noise must be keyed by image, not by batch position.
#[test]
fn seeds_reproduce_across_image_counts_and_batch_splits() {
    let ctx = common::ctx();
    let pipeline = fixture_pipeline(&ctx);
    let base = SampleOptions {
        scheduler: Some(SchedulerKind::Ddpm),
        steps: 8,
        seed: 1234,
        num_images: 5,
        ..SampleOptions::default()
    };
    let all = pipeline.sample(&base).expect("5 images");
    let again = pipeline.sample(&base).expect("again");
    assert_eq!(all.data, again.data, "same seed, same call");
    let split = pipeline
        .sample(&SampleOptions {
            batch_size: Some(2),
            ..base.clone()
        })
        .expect("split");
    assert_eq!(
        all.data, split.data,
        "batch split 2+2+1 must not change the images"
    );
    let fewer = pipeline
        .sample(&SampleOptions {
            num_images: 3,
            ..base.clone()
        })
        .expect("3 images");
    assert_eq!(
        &all.data[..fewer.data.len()],
        &fewer.data[..],
        "first 3 images of 5"
    );
    let other = pipeline
        .sample(&SampleOptions {
            seed: 1235,
            ..base.clone()
        })
        .expect("other seed");
    assert_ne!(
        all.data, other.data,
        "a different seed must change the images"
    );
    // The starting noise is the CPU Philox reference's: a 1-step DDIM from seed s with no clip
    // equals the same loop from --init-noise holding reference::rng noise.
    let per_image = all.image_len();
    let noise: Vec<f32> = (0..2)
        .flat_map(|i| normal_image(1234, i, 0, STREAM_INIT, per_image))
        .map(|v| v as f32)
        .collect();
    let seeded = pipeline
        .sample(&SampleOptions {
            scheduler: Some(SchedulerKind::Ddim),
            steps: 3,
            seed: 1234,
            num_images: 2,
            ..SampleOptions::default()
        })
        .expect("seeded");
    let given = pipeline
        .sample(&SampleOptions {
            scheduler: Some(SchedulerKind::Ddim),
            steps: 3,
            seed: 999,
            num_images: 2,
            init_noise: Some(noise),
            ..SampleOptions::default()
        })
        .expect("given noise");
    let err = max_rel(&seeded.data, &given.data);
    assert!(err < 1e-5, "seeded vs reference noise: {err:.3e}");
}

/// Trajectory snapshots: the last one is the final sample, x̂₀ is reported, and an
/// image-to-image run at strength 1 from any image equals the plain run (the image is fully
/// noised away only in the limit, so strength 1 keeps ᾱ_T's tiny image weight: compare loosely).
#[test]
fn trajectory_and_image_to_image() {
    let ctx = common::ctx();
    let pipeline = fixture_pipeline(&ctx);
    let opts = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 10,
        seed: 3,
        num_images: 2,
        trajectory_every: Some(3),
        ..SampleOptions::default()
    };
    let s = pipeline.sample(&opts).expect("sample");
    assert_eq!(s.trajectory_steps, vec![0, 3, 6, 9]);
    assert_eq!(s.trajectory.len(), 4);
    assert_eq!(s.trajectory[3].0, s.data, "last snapshot = final sample");
    // Image-to-image at strength 0.5: 5 of 10 steps run.
    let img = vec![0.25f32; 3 * 16 * 16];
    let i2i = pipeline
        .sample(&SampleOptions {
            trajectory_every: None,
            init_image: Some(wgpu_diffusion::sampling::InitImage {
                image: img.clone(),
                strength: 0.5,
            }),
            ..opts.clone()
        })
        .expect("img2img");
    assert_eq!(i2i.first_step, 5);
    assert_eq!(i2i.model_evaluations, 5);
    assert!(i2i.data.iter().all(|v| v.is_finite()));
    // Strength too small to run a step is an error, not a silent no-op.
    let err = pipeline
        .sample(&SampleOptions {
            trajectory_every: None,
            init_image: Some(wgpu_diffusion::sampling::InitImage {
                image: img,
                strength: 0.01,
            }),
            ..opts
        })
        .expect_err("strength 0.01 of 10 steps");
    assert!(err.to_string().contains("--strength"), "{err}");
}

/// Without `batch_size` the run picks the largest batch whose weights, planned activations and
/// sampler buffers fit the memory budget; the images are those of any explicit batch size.
#[test]
fn automatic_batch_fits_the_budget_and_keeps_the_images() {
    let ctx = common::ctx();
    let pipeline = fixture_pipeline(&ctx);
    let base = SampleOptions {
        scheduler: Some(SchedulerKind::Ddpm),
        steps: 4,
        seed: 99,
        num_images: 5,
        trajectory_every: Some(2),
        ..SampleOptions::default()
    };
    let spec = pipeline.prepare(&base).expect("spec");
    let [_, _, h, w] = spec.shape;
    // Exactly what two images need: the automatic batch must be 2 (3 would not fit).
    let unet = pipeline.unet().expect("U-Net");
    let two = unet.parameters() as u64 * 4
        + unet.plan_memory(2, h, w, 0).expect("plan").planned_bytes
        + spec.sampler_bytes(2);
    let budgeted = SampleOptions {
        memory_budget: Some(two),
        ..base.clone()
    };
    let spec2 = pipeline.prepare(&budgeted).expect("spec");
    assert_eq!(pipeline.batch_for(&spec2).expect("batch"), 2);
    let unlimited = SampleOptions {
        memory_budget: Some(u64::MAX),
        ..base.clone()
    };
    assert_eq!(
        pipeline
            .batch_for(&pipeline.prepare(&unlimited).expect("spec"))
            .expect("batch"),
        5
    );
    let auto = pipeline.sample(&budgeted).expect("auto batch 2");
    for explicit in [1, 5] {
        let fixed = pipeline
            .sample(&SampleOptions {
                batch_size: Some(explicit),
                ..base.clone()
            })
            .expect("explicit batch");
        assert_eq!(auto.data, fixed.data, "batch {explicit} vs automatic");
        assert_eq!(
            auto.trajectory, fixed.trajectory,
            "trajectory, batch {explicit}"
        );
    }
    // Not even one image fits: an error naming the field and the numbers.
    let tiny = SampleOptions {
        memory_budget: Some(1024),
        ..base
    };
    let err = pipeline
        .sample(&tiny)
        .expect_err("1 KiB budget")
        .to_string();
    assert!(
        err.contains("memory_budget") && err.contains("1024 bytes"),
        "{err}"
    );
}
