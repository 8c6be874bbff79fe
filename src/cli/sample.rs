//! `wgpu-diffusion sample`: generate images with a model directory's U-Net and scheduler.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use wgpu_diffusion::gpu::{GpuContext, GpuOptions};
use wgpu_diffusion::sampling::io::{self, AtomicFile};
use wgpu_diffusion::sampling::{InitImage, Pipeline, Progress, SampleOptions, ScheduleOverrides};
use wgpu_diffusion::schedule::{BetaSchedule, PredictionType, SchedulerKind, TimestepSpacing};

/// The model `sample` uses without `--model`: the bundled Fashion-MNIST DDPM.
pub fn bundled_model() -> PathBuf {
    let local = PathBuf::from("weights/fashion-ddpm");
    if local.join("config.json").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm")
}

fn parse_scheduler(s: &str) -> Result<SchedulerKind, String> {
    SchedulerKind::from_cli_name(s).map_err(|e| e.to_string())
}

fn parse_prediction(s: &str) -> Result<PredictionType, String> {
    PredictionType::parse(s)
}

fn parse_spacing(s: &str) -> Result<TimestepSpacing, String> {
    TimestepSpacing::parse(s)
}

fn parse_beta_schedule(s: &str) -> Result<BetaSchedule, String> {
    BetaSchedule::parse(s)
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Model directory (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json,
    /// optional classes.json). Default: the bundled weights/fashion-ddpm.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Sampler: ddpm, ddim, euler, heun, euler-ancestral, dpm++2m, sde-vp, flow-euler.
    /// Default: the scheduler config's class (a DDPMScheduler config samples with ddim).
    #[arg(long, value_parser = parse_scheduler)]
    pub scheduler: Option<SchedulerKind>,
    /// Inference steps (1 to num_train_timesteps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// DDIM η (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub num_images: usize,
    /// Images per GPU batch (a memory cap; the images do not change).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Write a grid of all images to this PNG (default samples.png when no other output is given).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write one PNG per image into this directory (created if missing).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Write the final samples in f32, before clamping and quantising, as tensor `sample`.
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
    /// Write a strip of x_t (upper row) and x̂₀ (lower row) every --trajectory-every steps.
    #[arg(long)]
    pub trajectory: Option<PathBuf>,
    /// Steps between trajectory snapshots (default: a tenth of the steps).
    #[arg(long)]
    pub trajectory_every: Option<usize>,
    /// Class by name (classes.json) or number; a comma list cycles over the images;
    /// `all` cycles over every named class.
    #[arg(long, value_delimiter = ',')]
    pub class: Option<Vec<String>>,
    /// Class label (integer); a comma list cycles over the images.
    #[arg(long, value_delimiter = ',', conflicts_with = "class")]
    pub class_label: Option<Vec<usize>>,
    /// Classifier-free guidance scale (1 = plain conditional sampling).
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Start from this standard-normal noise ([N, C, H, W] f32, one tensor) instead of the seed.
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Image-to-image: noise this image to --strength and denoise it (SDEdit).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// Fraction of the schedule an --init-image is noised to (0 < s ≤ 1).
    #[arg(long, default_value_t = 0.6)]
    pub strength: f64,
    /// Override the config's prediction_type: epsilon, sample, v_prediction.
    #[arg(long, value_parser = parse_prediction)]
    pub prediction_type: Option<PredictionType>,
    /// Override timestep_spacing: leading, trailing, linspace.
    #[arg(long, value_parser = parse_spacing)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Override beta_schedule: linear, scaled_linear, squaredcos_cap_v2.
    #[arg(long, value_parser = parse_beta_schedule)]
    pub beta_schedule: Option<BetaSchedule>,
    /// Override clip_sample (ddpm, ddim, heun).
    #[arg(long)]
    pub clip_sample: Option<bool>,
    /// Karras σ spacing (euler, heun, dpm++2m, flow-euler).
    #[arg(long)]
    pub karras: bool,
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub width: Option<usize>,
    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Checks the arguments that need no model, before the GPU is touched.
fn check_args(a: &SampleArgs) -> Result<()> {
    if a.steps == 0 {
        bail!("--steps must be at least 1, got 0");
    }
    if a.num_images == 0 {
        bail!("--num-images must be at least 1, got 0");
    }
    if a.batch_size == Some(0) {
        bail!("--batch-size must be at least 1, got 0");
    }
    if !(a.eta >= 0.0 && a.eta.is_finite()) {
        bail!("--eta must be a finite number ≥ 0, got {}", a.eta);
    }
    if a.trajectory_every == Some(0) {
        bail!("--trajectory-every must be at least 1");
    }
    if a.init_image.is_some() && !(a.strength > 0.0 && a.strength <= 1.0) {
        bail!("--strength must lie in (0, 1], got {}", a.strength);
    }
    if let Some(g) = a.guidance_scale {
        if !g.is_finite() {
            bail!("--guidance-scale must be a finite number, got {g}");
        }
    }
    Ok(())
}

pub fn run(a: &SampleArgs, gpu: &GpuOptions) -> Result<ExitCode> {
    check_args(a)?;
    // Open every output first: an unwritable path fails now, with nothing written.
    let grid_path = match (&a.output, &a.out_dir, &a.save_tensor) {
        (None, None, None) => Some(PathBuf::from("samples.png")),
        (o, _, _) => o.clone(),
    };
    let grid_file = grid_path.as_deref().map(AtomicFile::create).transpose()?;
    let tensor_file = a
        .save_tensor
        .as_deref()
        .map(AtomicFile::create)
        .transpose()?;
    let strip_file = a
        .trajectory
        .as_deref()
        .map(AtomicFile::create)
        .transpose()?;
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --out-dir {}", dir.display()))?;
    }
    let per_image: Vec<AtomicFile> = match &a.out_dir {
        Some(dir) => (0..a.num_images)
            .map(|i| AtomicFile::create(&dir.join(format!("{i:05}.png"))))
            .collect::<std::result::Result<_, _>>()?,
        None => Vec::new(),
    };

    let dir = a.model.clone().unwrap_or_else(bundled_model);
    let t_load = Instant::now();
    let ctx: Arc<GpuContext> = GpuContext::new(gpu)?;
    let pipeline = Pipeline::load_with(&ctx, &dir)
        .with_context(|| format!("loading model {}", dir.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();
    let cfg = &pipeline.model.config;

    let class_labels = match (&a.class, &a.class_label) {
        (Some(names), _) if names.len() == 1 && names[0].eq_ignore_ascii_case("all") => {
            let mut labels: Vec<usize> = pipeline
                .classes
                .names
                .values()
                .copied()
                .filter(|l| Some(*l) != pipeline.classes.null)
                .collect();
            labels.sort_unstable();
            labels.dedup();
            if labels.is_empty() {
                bail!(
                    "--class all: {} has no classes.json with class names",
                    dir.display()
                );
            }
            Some(labels)
        }
        (Some(names), _) => Some(
            names
                .iter()
                .map(|n| pipeline.resolve_class(n))
                .collect::<std::result::Result<Vec<_>, _>>()?,
        ),
        (None, Some(labels)) => Some(labels.clone()),
        (None, None) => None,
    };
    let (h, w) = cfg.resolution(a.height, a.width);
    let c = cfg.in_channels;
    let init_noise = match &a.init_noise {
        Some(path) => {
            let (shape, values) = io::read_single_tensor(path).context("--init-noise")?;
            let want = [a.num_images, c, h, w];
            if shape != want {
                bail!(
                    "--init-noise {}: tensor shape {shape:?}, expected {want:?} ([--num-images, C, H, W])",
                    path.display()
                );
            }
            Some(values)
        }
        None => None,
    };
    let init_image = match &a.init_image {
        Some(path) => Some(InitImage {
            image: io::read_image(path, c, h, w)?,
            strength: a.strength,
        }),
        None => None,
    };
    let options = SampleOptions {
        scheduler: a.scheduler,
        steps: a.steps,
        eta: a.eta,
        seed: a.seed,
        num_images: a.num_images,
        batch_size: a.batch_size,
        class_labels,
        guidance_scale: a.guidance_scale,
        init_noise,
        init_image,
        overrides: ScheduleOverrides {
            prediction_type: a.prediction_type,
            timestep_spacing: a.timestep_spacing,
            beta_schedule: a.beta_schedule,
            clip_sample: a.clip_sample,
            use_karras_sigmas: a.karras.then_some(true),
        },
        trajectory_every: match (&a.trajectory, a.trajectory_every) {
            (None, _) => None,
            (Some(_), Some(k)) => Some(k),
            (Some(_), None) => Some((a.steps / 10).max(1)),
        },
        height: a.height,
        width: a.width,
    };
    // Fail on plan errors before the progress bar appears.
    let plan = pipeline.plan(&options)?;

    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let t_run = Instant::now();
    let samples = pipeline.sample_with_progress(&options, &mut |p: Progress| {
        bar.set_length(p.steps_total as u64);
        bar.set_position(p.steps_done as u64);
    })?;
    bar.finish_and_clear();
    let run_s = t_run.elapsed().as_secs_f64();

    let [n, c, h, w] = samples.shape;
    let mut written = Vec::new();
    if let Some(f) = grid_file {
        let bytes = io::grid(&samples.data, n, c, h, w).encode_png()?;
        written.push(f.target().display().to_string());
        f.commit(&bytes)?;
    }
    for (i, f) in per_image.into_iter().enumerate() {
        let bytes = io::grid(samples.image(i), 1, c, h, w).encode_png()?;
        f.commit(&bytes)?;
    }
    if let Some(dir) = &a.out_dir {
        written.push(format!("{}/ ({n} PNGs)", dir.display()));
    }
    if let Some(f) = tensor_file {
        let bytes = io::tensor_file("sample", &samples.shape, &samples.data)?;
        written.push(f.target().display().to_string());
        f.commit(&bytes)?;
    }
    if let Some(f) = strip_file {
        let bytes = io::trajectory_strip(&samples.trajectory, n.min(8), c, h, w).encode_png()?;
        written.push(f.target().display().to_string());
        f.commit(&bytes)?;
    }
    if !a.quiet {
        let evals = samples.model_evaluations;
        eprintln!(
            "{n} images {h}x{w} with {} ({} steps, {evals} model evaluations per image) on {}: {:.2} s ({:.2} images/s, {:.1} image-steps/s); load {:.2} s",
            plan.kind,
            plan.steps.len() - samples.first_step,
            ctx.adapter.info.name,
            run_s,
            n as f64 / run_s,
            (n * evals) as f64 / run_s,
            load_s
        );
        eprintln!("wrote {}", written.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
