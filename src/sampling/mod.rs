//! Image generation: a [`Pipeline`] (U-Net + scheduler config + class names of one model
//! directory) runs a [`StepPlan`] entirely on the GPU ([`engine`]) and returns the final samples.
//!
//! ```no_run
//! use wgpu_diffusion::sampling::{Pipeline, SampleOptions};
//! let pipeline = Pipeline::load("weights/fashion-ddpm".as_ref())?;
//! let samples = pipeline.sample(&SampleOptions { num_images: 4, seed: 7, ..Default::default() })?;
//! let rgba = samples.to_rgba8(0);
//! # Ok::<(), wgpu_diffusion::Error>(())
//! ```
//!
//! Reproducibility: image `i` of a run starts from Philox noise keyed by `(seed, i)` and draws
//! its per-step noise keyed by `(seed, i, step)`, so it does not depend on `num_images` or the
//! batch split, and matches across adapters up to float rounding.

pub mod analytic;
pub mod engine;
pub mod io;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::unet_2d::UNet2DModel;
use crate::schedule::{
    BetaSchedule, NoiseLevels, PlanOptions, PredictionType, SchedulerConfig, SchedulerKind,
    StepPlan, TimestepSpacing,
};

use engine::{ChunkJob, InitNoise, InitRule, RunStage};

/// The scheduler config file of a model directory.
pub const SCHEDULER_FILE: &str = "scheduler_config.json";
/// Class names of a class-conditional model: `{"name": label, ..., "null": label}`.
pub const CLASSES_FILE: &str = "classes.json";

/// Config keys the CLI can override (`None` keeps the file's value or the class default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleOverrides {
    pub prediction_type: Option<PredictionType>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub beta_schedule: Option<BetaSchedule>,
    pub clip_sample: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
}

/// An image-to-image start (SDEdit): `image` ([C, H, W], values in [−1, 1]) is noised to the
/// level of the step `strength` of the way into the schedule and denoised from there.
#[derive(Debug, Clone, PartialEq)]
pub struct InitImage {
    pub image: Vec<f32>,
    pub strength: f64,
}

/// What to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// `None`: the sampler of the model's scheduler config ([`Pipeline::default_scheduler`]).
    pub scheduler: Option<SchedulerKind>,
    /// Inference steps (1 ..= num_train_timesteps).
    pub steps: usize,
    /// DDIM's η.
    pub eta: f64,
    pub seed: u64,
    pub num_images: usize,
    /// Images per GPU batch (memory cap); results do not depend on it. `None`: all at once.
    pub batch_size: Option<usize>,
    /// Class labels, cycled over the images (`None`: the null label of a class-conditional
    /// model; unconditional models take none).
    pub class_labels: Option<Vec<usize>>,
    /// Classifier-free guidance scale w (m = m_null + w·(m_class − m_null)); `None` or 1 = none.
    pub guidance_scale: Option<f64>,
    /// Standard-normal starting noise [num_images, C, H, W] instead of the seeded noise.
    pub init_noise: Option<Vec<f32>>,
    pub init_image: Option<InitImage>,
    pub overrides: ScheduleOverrides,
    /// Keep x_t and x̂₀ every this many steps (and after the last) for a trajectory strip.
    pub trajectory_every: Option<usize>,
    /// Resolution (`None`: the model's sample_size).
    pub height: Option<usize>,
    pub width: Option<usize>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            scheduler: None,
            steps: 20,
            eta: 0.0,
            seed: 0,
            num_images: 1,
            batch_size: None,
            class_labels: None,
            guidance_scale: None,
            init_noise: None,
            init_image: None,
            overrides: ScheduleOverrides::default(),
            trajectory_every: None,
            height: None,
            width: None,
        }
    }
}

/// The result of [`Pipeline::sample`].
#[derive(Debug, Clone)]
pub struct Samples {
    /// [N, C, H, W]: the final samples in f32, before clamping and quantising.
    pub data: Vec<f32>,
    pub shape: [usize; 4],
    /// Inference-step indices of the trajectory snapshots (empty without one).
    pub trajectory_steps: Vec<usize>,
    /// Per snapshot: x after that step and the x̂₀ it used, each [N, C, H, W].
    pub trajectory: Vec<(Vec<f32>, Vec<f32>)>,
    /// The plan that ran (all steps; an image-to-image run starts at `first_step`).
    pub plan: StepPlan,
    pub first_step: usize,
    /// Model evaluations per image (2 with guidance count once).
    pub model_evaluations: usize,
}

impl Samples {
    /// Elements of one image.
    pub fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Image `i` as [C, H, W].
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// Image `i` as 8-bit RGBA (grayscale replicated; values in [−1, 1] mapped to 0..255).
    pub fn to_rgba8(&self, i: usize) -> Vec<u8> {
        io::to_rgba8(self.image(i), self.shape[1], self.shape[2], self.shape[3])
    }
}

/// Progress of a run: inference steps done of the total over all chunks.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub steps_done: usize,
    pub steps_total: usize,
}

/// Class names of a model directory (`classes.json`): lowercase name → label, and the null label
/// (`"null"`) used for unconditional sampling and guidance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassNames {
    pub names: BTreeMap<String, usize>,
    pub null: Option<usize>,
}

impl ClassNames {
    fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let map: BTreeMap<String, usize> =
            serde_json::from_str(&text).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                key: "(file)".into(),
                message: format!("expected a JSON object of class name → integer label: {e}"),
            })?;
        let null = map.get("null").copied();
        let names = map
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        Ok(ClassNames { names, null })
    }
}

/// A model directory ready to sample: the U-Net on the GPU, its scheduler config and classes.
pub struct Pipeline {
    ctx: Arc<GpuContext>,
    pub model: UNet2DModel,
    pub dir: PathBuf,
    pub scheduler_config: SchedulerConfig,
    /// Whether `scheduler_config.json` exists (else DDPM defaults are assumed).
    pub has_scheduler_file: bool,
    pub classes: ClassNames,
}

impl Pipeline {
    /// Loads `dir` on the adapter chosen by the `WGPU_*` environment variables.
    pub fn load(dir: &Path) -> Result<Self> {
        let ctx = GpuContext::new(&GpuOptions::from_env())?;
        Self::load_with(&ctx, dir)
    }

    /// Loads `dir` (config.json, diffusion_pytorch_model.safetensors, and when present
    /// scheduler_config.json and classes.json) onto `ctx`.
    pub fn load_with(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        let model = UNet2DModel::load(ctx, dir)?;
        let sched_path = dir.join(SCHEDULER_FILE);
        let has_scheduler_file = sched_path.exists();
        let scheduler_config = if has_scheduler_file {
            SchedulerConfig::from_file(&sched_path)?
        } else {
            SchedulerConfig {
                source: sched_path,
                class_name: Some(SchedulerKind::Ddpm.class_name().to_owned()),
                ..SchedulerConfig::default()
            }
        };
        let classes_path = dir.join(CLASSES_FILE);
        let classes = if classes_path.exists() {
            ClassNames::from_file(&classes_path)?
        } else {
            ClassNames::default()
        };
        if let (Some(num), Some(null)) = (model.config.num_class_embeds, classes.null) {
            if null >= num {
                return Err(Error::Config {
                    path: classes_path,
                    key: "null".into(),
                    message: format!("label {null} is out of range for num_class_embeds = {num}"),
                });
            }
        }
        Ok(Pipeline {
            ctx: Arc::clone(ctx),
            model,
            dir: dir.to_path_buf(),
            scheduler_config,
            has_scheduler_file,
            classes,
        })
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The sampler used when none is chosen: the scheduler config's class, except that a
    /// `DDPMScheduler` config samples with DDIM (η = 0), whose 20-step results are far better
    /// than 20 ancestral DDPM steps; pass `ddpm` explicitly for ancestral sampling.
    pub fn default_scheduler(&self) -> Result<SchedulerKind> {
        match self.scheduler_config.class_kind()? {
            SchedulerKind::Ddpm => Ok(SchedulerKind::Ddim),
            kind => Ok(kind),
        }
    }

    /// The label for a class name (case-insensitive, from classes.json) or a decimal label.
    pub fn resolve_class(&self, name: &str) -> Result<usize> {
        let label = match name.trim().parse::<usize>() {
            Ok(label) => label,
            Err(_) => match self.classes.names.get(&name.trim().to_lowercase()) {
                Some(&label) => label,
                None => {
                    let known: Vec<&str> = self.classes.names.keys().map(String::as_str).collect();
                    return Err(Error::invalid(
                        "--class",
                        if known.is_empty() {
                            format!(
                                "{name:?} is not a number and {} has no {CLASSES_FILE}",
                                self.dir.display()
                            )
                        } else {
                            format!("unknown class {name:?}; known: {}", known.join(", "))
                        },
                    ));
                }
            },
        };
        self.check_label(label)?;
        Ok(label)
    }

    fn check_label(&self, label: usize) -> Result<()> {
        match self.model.config.num_class_embeds {
            None => Err(Error::invalid(
                "--class-label",
                format!(
                    "the model in {} is not class-conditional (no num_class_embeds)",
                    self.dir.display()
                ),
            )),
            Some(num) if label >= num => Err(Error::invalid(
                "--class-label",
                format!("label {label} is out of range: the model has num_class_embeds = {num} (labels 0..={})", num - 1),
            )),
            Some(_) => Ok(()),
        }
    }

    /// The step plan `options` ask for (before any image-to-image truncation).
    pub fn plan(&self, options: &SampleOptions) -> Result<StepPlan> {
        let kind = match options.scheduler {
            Some(kind) => kind,
            None => self.default_scheduler()?,
        };
        let o = &options.overrides;
        if o.use_karras_sigmas == Some(true)
            && !matches!(
                kind,
                SchedulerKind::Euler
                    | SchedulerKind::Heun
                    | SchedulerKind::DpmSolverMultistep
                    | SchedulerKind::FlowMatchEuler
            )
        {
            return Err(Error::invalid(
                "--karras",
                format!("the {kind} sampler has no Karras σ option (euler, heun, dpm++2m and flow-euler do)"),
            ));
        }
        if o.clip_sample.is_some()
            && !matches!(
                kind,
                SchedulerKind::Ddpm | SchedulerKind::Ddim | SchedulerKind::Heun
            )
        {
            return Err(Error::invalid(
                "--clip-sample",
                format!("the {kind} sampler does not clip x̂₀ (ddpm, ddim and heun do)"),
            ));
        }
        if options.eta != 0.0 && kind != SchedulerKind::Ddim {
            return Err(Error::invalid(
                "--eta",
                format!("η applies to the ddim sampler only, not {kind}"),
            ));
        }
        let mut config = self.scheduler_config.clone();
        if o.prediction_type.is_some() {
            config.prediction_type = o.prediction_type;
        }
        if o.timestep_spacing.is_some() {
            config.timestep_spacing = o.timestep_spacing;
        }
        if o.beta_schedule.is_some() {
            config.beta_schedule = o.beta_schedule;
        }
        if o.clip_sample.is_some() {
            config.clip_sample = o.clip_sample;
        }
        if o.use_karras_sigmas.is_some() {
            config.use_karras_sigmas = o.use_karras_sigmas;
        }
        StepPlan::new(
            &config,
            kind,
            options.steps,
            &PlanOptions {
                eta: options.eta,
                ..PlanOptions::default()
            },
        )
    }

    /// Samples `options.num_images` images; see [`Pipeline::sample_with_progress`].
    pub fn sample(&self, options: &SampleOptions) -> Result<Samples> {
        self.sample_with_progress(options, &mut |_| {})
    }

    /// Samples with a progress callback, called as inference steps complete on the GPU.
    pub fn sample_with_progress(
        &self,
        options: &SampleOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Samples> {
        let cfg = &self.model.config;
        let n = options.num_images;
        if n == 0 {
            return Err(Error::invalid("--num-images", "must be at least 1"));
        }
        if options.batch_size == Some(0) {
            return Err(Error::invalid("--batch-size", "must be at least 1"));
        }
        if cfg.in_channels != cfg.out_channels {
            return Err(Error::invalid(
                "sampler",
                format!(
                    "the model maps {} channels to {}; sampling needs out_channels = in_channels",
                    cfg.in_channels, cfg.out_channels
                ),
            ));
        }
        let (h, w) = cfg.resolution(options.height, options.width);
        cfg.check_resolution(h, w)?;
        let c = cfg.in_channels;
        let chw = c * h * w;

        // Labels per image, and guidance.
        let labels: Option<Vec<usize>> = match (&options.class_labels, cfg.num_class_embeds) {
            (Some(list), _) => {
                if list.is_empty() {
                    return Err(Error::invalid("--class-label", "an empty list of labels"));
                }
                for &l in list {
                    self.check_label(l)?;
                }
                Some((0..n).map(|i| list[i % list.len()]).collect())
            }
            (None, Some(_)) => match self.classes.null {
                Some(null) => Some(vec![null; n]),
                None => {
                    return Err(Error::invalid(
                        "--class-label",
                        format!(
                            "the model is class-conditional and {} names no null label (\"null\" in {CLASSES_FILE}); choose a class",
                            self.dir.display()
                        ),
                    ))
                }
            },
            (None, None) => None,
        };
        let guidance = match options.guidance_scale {
            None => None,
            Some(g) if !g.is_finite() => {
                return Err(Error::invalid(
                    "--guidance-scale",
                    format!("{g} is not a finite number"),
                ))
            }
            Some(g) => {
                let null = match (cfg.num_class_embeds, self.classes.null) {
                    (None, _) => {
                        return Err(Error::invalid(
                            "--guidance-scale",
                            format!(
                                "classifier-free guidance needs a class-conditional model; {} has no num_class_embeds",
                                self.dir.display()
                            ),
                        ))
                    }
                    (Some(_), None) => {
                        return Err(Error::invalid(
                            "--guidance-scale",
                            format!(
                                "classifier-free guidance needs a null label (\"null\" in {}/{CLASSES_FILE})",
                                self.dir.display()
                            ),
                        ))
                    }
                    (Some(_), Some(null)) => null,
                };
                let all_null = labels
                    .as_ref()
                    .is_some_and(|l| l.iter().all(|&x| x == null));
                // w = 1 and an all-null batch are plain conditional / unconditional sampling.
                if g == 1.0 || all_null {
                    None
                } else {
                    Some((g, null))
                }
            }
        };

        let plan = self.plan(options)?;
        // Image-to-image: start `strength` of the way into the schedule.
        let (first_step, init, image) = match &options.init_image {
            None => (
                0,
                InitRule {
                    image_coef: 0.0,
                    noise_coef: plan.init_noise_sigma,
                },
                None,
            ),
            Some(init) => {
                if !(init.strength > 0.0 && init.strength <= 1.0) {
                    return Err(Error::invalid(
                        "--strength",
                        format!("{} must lie in (0, 1]", init.strength),
                    ));
                }
                if init.image.len() != chw {
                    return Err(Error::invalid(
                        "--init-image",
                        format!("{} values, expected {c}×{h}×{w} = {chw}", init.image.len()),
                    ));
                }
                let steps = plan.steps.len();
                let init_steps = ((steps as f64 * init.strength) as usize).min(steps);
                if init_steps == 0 {
                    return Err(Error::invalid(
                        "--strength",
                        format!(
                            "{} × {steps} steps rounds down to 0 steps; raise --strength or --steps",
                            init.strength
                        ),
                    ));
                }
                let first = steps - init_steps;
                (
                    first,
                    noising_rule(&plan, first)?,
                    Some(init.image.as_slice()),
                )
            }
        };
        let mut stages: Vec<RunStage> = plan
            .steps
            .iter()
            .enumerate()
            .skip(first_step)
            .flat_map(|(step, rec)| {
                rec.stages
                    .iter()
                    .map(move |&stage| RunStage { step, stage })
            })
            .collect();
        if first_step > 0 && plan.kind == SchedulerKind::DpmSolverMultistep {
            // A multistep solver's first executed step has no previous x̂₀: first order, which
            // is the second-order update with the history term folded into x̂₀.
            if let Some(first) = stages.first_mut() {
                first.stage.coef_x0 += first.stage.coef_history;
                first.stage.coef_history = 0.0;
            }
        }

        if let Some(noise) = &options.init_noise {
            if noise.len() != n * chw {
                return Err(Error::invalid(
                    "--init-noise",
                    format!(
                        "{} values, expected [{n}, {c}, {h}, {w}] = {}",
                        noise.len(),
                        n * chw
                    ),
                ));
            }
        }
        let trajectory_steps: Vec<usize> = match options.trajectory_every {
            None => Vec::new(),
            Some(0) => return Err(Error::invalid("--trajectory-every", "must be at least 1")),
            Some(k) => {
                let last = plan.steps.len() - 1;
                (first_step..=last)
                    .filter(|s| (s - first_step) % k == 0 || *s == last)
                    .collect()
            }
        };

        let chunk = options.batch_size.unwrap_or(n).min(n);
        let chunks = n.div_ceil(chunk);
        let steps_per_chunk = plan.steps.len() - first_step;
        let steps_total = steps_per_chunk * chunks;
        let mut data = Vec::with_capacity(n * chw);
        let mut trajectory: Vec<(Vec<f32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); trajectory_steps.len()];
        let mut graphs: Vec<(usize, crate::model::unet_2d::UNetGraph)> = Vec::new();
        for k in 0..chunks {
            let start = k * chunk;
            let images = chunk.min(n - start);
            let rows = if guidance.is_some() {
                2 * images
            } else {
                images
            };
            let graph = match graphs.iter().position(|(b, _)| *b == rows) {
                Some(i) => &graphs[i].1,
                None => {
                    graphs.push((rows, self.model.graph(rows, h, w)?));
                    &graphs[graphs.len() - 1].1
                }
            };
            if let Some(all) = &labels {
                let mut model_labels = all[start..start + images].to_vec();
                if let Some((_, null)) = guidance {
                    model_labels.extend(std::iter::repeat_n(null, images));
                }
                graph.write_class_labels(Some(&model_labels))?;
            }
            let init_noise = match &options.init_noise {
                Some(all) => InitNoise::Given(&all[start * chw..(start + images) * chw]),
                None => InitNoise::Seeded,
            };
            let job = ChunkJob {
                stages: &stages,
                init,
                init_noise,
                init_image: image,
                seed: options.seed,
                first_image: start,
                images,
                guidance: guidance.map(|(g, _)| g),
                trajectory_steps: &trajectory_steps,
            };
            let base = k * steps_per_chunk;
            let result = engine::run_chunk(&self.ctx, graph, &job, &mut |done| {
                progress(Progress {
                    steps_done: base + done,
                    steps_total,
                })
            })?;
            data.extend_from_slice(&result.sample);
            for (slot, (x, x0)) in trajectory.iter_mut().zip(result.trajectory) {
                slot.0.extend_from_slice(&x);
                slot.1.extend_from_slice(&x0);
            }
        }
        let model_evaluations = stages.len();
        Ok(Samples {
            data,
            shape: [n, c, h, w],
            trajectory_steps,
            trajectory,
            plan,
            first_step,
            model_evaluations,
        })
    }
}

/// `x = a·image + b·z` at the noise level of plan step `step` (each sampler's `add_noise`).
fn noising_rule(plan: &StepPlan, step: usize) -> Result<InitRule> {
    let Some(rec) = plan.steps.get(step) else {
        return Err(Error::invalid("--strength", "no such step"));
    };
    let (image_coef, noise_coef) = match rec.levels {
        NoiseLevels::Discrete { alpha_cumprod, .. } => {
            (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt())
        }
        NoiseLevels::Sigma { sigma, .. } => {
            if plan.kind == SchedulerKind::DpmSolverMultistep {
                // DPM-Solver works on the variance-preserving sample: α·x₀ + σ_vp·z.
                let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
                (alpha, sigma * alpha)
            } else {
                (1.0, sigma)
            }
        }
        NoiseLevels::Continuous { time, std, .. } => {
            let s = &plan.settings;
            let log_mean =
                -0.25 * time * time * (s.beta_max - s.beta_min) - 0.5 * time * s.beta_min;
            (log_mean.exp(), std)
        }
        NoiseLevels::Flow { sigma, .. } => (1.0 - sigma, sigma),
    };
    Ok(InitRule {
        image_coef,
        noise_coef,
    })
}
