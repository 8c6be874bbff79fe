//! `wgpu-diffusion sample`: generate images with a model directory's U-Net and scheduler.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use wgpu_diffusion::gpu::planner::available_memory;
use wgpu_diffusion::gpu::{GpuContext, GpuOptions};
use wgpu_diffusion::sampling::io::{self, AtomicFile, CaptionSource, GridStyle, ImageFormat};
use wgpu_diffusion::sampling::{
    InitImage, LoadOptions, Offload, Pipeline, PipelineConfig, Progress, RunSpec, SampleOptions,
    Samples, ScheduleOverrides,
};
use wgpu_diffusion::schedule::{BetaSchedule, PredictionType, SchedulerKind, TimestepSpacing};
use wgpu_diffusion::Error;

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
    /// Sampler: ddpm, ddim, euler, heun, euler-ancestral, dpm++2m, sde-vp, flow-euler, pndm.
    /// Default: the scheduler config's class (a DDPMScheduler config samples with ddim; a
    /// PNDMScheduler config, as Stable Diffusion folders have, with pndm).
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
    /// Images to generate. Default: the image count of --init-noise when given, else 16.
    #[arg(long)]
    pub num_images: Option<usize>,
    /// Global index of the first image: the run produces images K .. K+N−1 of the seeded
    /// sequence (noise, class cycling, --out-dir file names), bit-identical to those images of
    /// one run from 0, so a job splits into slices (see scripts/ray_sample.py). Default 0.
    #[arg(long, value_name = "K")]
    pub first_image: Option<usize>,
    /// Images per GPU batch (a memory cap; the images do not change). Default: the largest
    /// batch that fits the adapter's limits and --memory-budget.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Memory the automatic batch may plan for, in MiB (weights, activations, sampler buffers;
    /// default: half the available RAM on a CPU adapter, 4 GiB on a discrete GPU, 1 GiB else).
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<u64>,
    /// Where a pipeline's parts live on the GPU: `auto` (every part resident when one
    /// default-size image plans within the memory budget that way, else `parts`), `off` (text
    /// encoder, U-Net and decoder resident from load to exit), `parts` (one part at a time:
    /// each phase — prompt encode, sampling, decode — uploads its part and frees it after).
    #[arg(long, default_value = "auto", value_name = "auto|off|parts")]
    pub offload: Offload,
    /// A latent pipeline's decode: the most bytes one activation may take (default: the
    /// adapter's binding limit). Past it the decode runs in exact row bands; lower it to test
    /// that path on any adapter.
    #[arg(
        long,
        value_name = "BYTES",
        env = "WGPU_DIFFUSION_DECODE_BINDING_LIMIT"
    )]
    pub decode_binding_limit: Option<u64>,
    /// Write a grid of all images to this file (default samples.png when no other output is
    /// given); the extension picks the format: .png, .jpg / .jpeg or .webp (lossless).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write one PNG per image into this directory (created, if missing, once the images are
    /// ready to write).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Write the final samples in f32, before clamping and quantising, as tensor `sample`.
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
    /// Write a strip of x_t (upper row) and x̂₀ (lower row) every --trajectory-every steps.
    #[arg(long)]
    pub trajectory: Option<PathBuf>,
    /// Steps between trajectory snapshots (default: a tenth of the steps).
    #[arg(long, requires = "trajectory")]
    pub trajectory_every: Option<usize>,
    /// Upscale the tiles of the grid and the trajectory strip K times (nearest neighbour, 1 to
    /// 32). Default: the smallest K that makes a tile's larger side 128 px (28 px → 5, 64 px →
    /// 2), so 1 from 128 px up. --out-dir PNGs and --save-tensor keep the model's resolution.
    #[arg(long, value_name = "K")]
    pub scale: Option<usize>,
    /// Grid columns (default: ⌈√n⌉, near square).
    #[arg(long, value_name = "N")]
    pub cols: Option<usize>,
    /// A caption under each grid tile (class name, or prompt, and image index), a step / t or σ
    /// header over the strip's columns and x_t / x̂₀ labels on its rows. The default.
    #[arg(long, overrides_with = "no_captions")]
    pub captions: bool,
    /// No captions, strip header or row labels.
    #[arg(long, overrides_with = "captions")]
    pub no_captions: bool,
    /// Class by name (classes.json) or number; a comma list cycles over the images;
    /// `all` cycles over every named class.
    #[arg(long, value_delimiter = ',')]
    pub class: Option<Vec<String>>,
    /// Class label (integer); a comma list cycles over the images.
    #[arg(long, value_delimiter = ',', conflicts_with = "class")]
    pub class_label: Option<Vec<usize>>,
    /// Classifier-free guidance scale (class-conditional models: 1 = plain conditional
    /// sampling; text-to-image pipelines: default 7.5, ≤ 1 turns guidance off as diffusers).
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Prompt of a text-to-image (Stable Diffusion) pipeline; repeat the flag to cycle several
    /// prompts over the images.
    #[arg(long = "prompt", value_name = "TEXT")]
    pub prompts: Option<Vec<String>>,
    /// Negative prompt (what guidance steers away from; default empty); repeat to cycle.
    #[arg(long = "negative-prompt", value_name = "TEXT")]
    pub negative_prompts: Option<Vec<String>>,
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

/// `SampleOptions` field → the flag that sets it, for the library's [`Error::InvalidOption`]
/// messages (which name fields, not flags).
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("scheduler", "--scheduler"),
    ("steps", "--steps"),
    ("eta", "--eta"),
    ("seed", "--seed"),
    ("num_images", "--num-images"),
    ("first_image", "--first-image"),
    ("batch_size", "--batch-size"),
    ("memory_budget", "--memory-budget"),
    ("decode_binding_limit", "--decode-binding-limit"),
    ("class_labels", "--class-label"),
    ("guidance_scale", "--guidance-scale"),
    ("prompts", "--prompt"),
    ("negative_prompts", "--negative-prompt"),
    ("init_noise", "--init-noise"),
    ("init_image.image", "--init-image"),
    ("init_image.strength", "--strength"),
    ("overrides.prediction_type", "--prediction-type"),
    ("overrides.timestep_spacing", "--timestep-spacing"),
    ("overrides.beta_schedule", "--beta-schedule"),
    ("overrides.clip_sample", "--clip-sample"),
    ("overrides.use_karras_sigmas", "--karras"),
    ("trajectory_every", "--trajectory-every"),
    ("grid.scale", "--scale"),
    ("grid.cols", "--cols"),
    ("height", "--height"),
    ("width", "--width"),
];

/// The flag of `field` as this invocation spelled it (`--class` sets `class_labels` too).
fn flag_for(field: &str, a: &SampleArgs) -> String {
    if field == "class_labels" && a.class.is_some() {
        return "--class".into();
    }
    FIELD_FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or_else(|| field.to_owned(), |(_, flag)| (*flag).to_owned())
}

/// The library's error, with an option field renamed to its flag.
fn flag_error(e: Error, a: &SampleArgs) -> anyhow::Error {
    match e {
        Error::InvalidOption { field, message } => {
            anyhow::anyhow!("{}: {message}", flag_for(field, a))
        }
        other => other.into(),
    }
}

/// The library's options from the arguments: class names resolved and input files read
/// against the model's config (no GPU).
fn sample_options(a: &SampleArgs, config: &PipelineConfig) -> Result<SampleOptions> {
    let class_labels = match (&a.class, &a.class_label) {
        (Some(names), _) if names.len() == 1 && names[0].eq_ignore_ascii_case("all") => {
            let mut labels: Vec<usize> = config
                .classes
                .names
                .values()
                .copied()
                .filter(|l| Some(*l) != config.classes.null)
                .collect();
            labels.sort_unstable();
            labels.dedup();
            if labels.is_empty() {
                bail!(
                    "--class all: {} has no classes.json with class names",
                    config.dir.display()
                );
            }
            Some(labels)
        }
        (Some(names), _) => Some(
            names
                .iter()
                .map(|n| config.resolve_class(n).map_err(|e| flag_error(e, a)))
                .collect::<Result<Vec<_>>>()?,
        ),
        (None, Some(labels)) => Some(labels.clone()),
        (None, None) => None,
    };
    // A latent pipeline's --height/--width are the image's; the noise is the latents'.
    let f = config.decoder.as_ref().map_or(1, |d| d.upscale());
    let (h, w) = config
        .unet
        .resolution(a.height.map(|v| v / f), a.width.map(|v| v / f));
    let c = config.unet.in_channels();
    let mut num_images = a.num_images.unwrap_or(DEFAULT_NUM_IMAGES);
    let init_noise = match &a.init_noise {
        Some(path) => {
            let tensor = io::read_single_tensor(path).context("--init-noise")?;
            // The file's own shape; the library sees the flat values. Without --num-images the
            // tensor says how many images there are.
            if let (None, [n, ..]) = (a.num_images, tensor.shape.as_slice()) {
                num_images = *n;
            }
            let want = [num_images, c, h, w];
            if tensor.shape != want {
                let count = if a.num_images.is_some() {
                    "--num-images"
                } else {
                    "N"
                };
                bail!(
                    "--init-noise {}: tensor shape {:?}, expected {want:?} ([{count}, C, H, W])",
                    path.display(),
                    tensor.shape
                );
            }
            check_noise_images(a, path, &tensor.metadata)?;
            Some(tensor.values)
        }
        None => None,
    };
    // A latent pipeline's init image is an image (the run encodes it).
    let (ic, ih, iw) = match &config.decoder {
        Some(d) => (d.out_channels(), h * f, w * f),
        None => (c, h, w),
    };
    let init_image = match &a.init_image {
        Some(path) => Some(InitImage {
            image: io::read_image(path, ic, ih, iw).map_err(|e| flag_error(e, a))?,
            strength: a.strength,
        }),
        None => None,
    };
    Ok(SampleOptions {
        scheduler: a.scheduler,
        steps: a.steps,
        eta: a.eta,
        seed: a.seed,
        num_images,
        first_image: a.first_image.unwrap_or(0),
        batch_size: a.batch_size,
        memory_budget: a.memory_budget.map(|mib| mib.saturating_mul(1 << 20)),
        decode_binding_limit: a.decode_binding_limit,
        class_labels,
        guidance_scale: a.guidance_scale,
        prompts: a.prompts.clone(),
        negative_prompts: a.negative_prompts.clone(),
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
    })
}

/// Images a run makes without --num-images or --init-noise.
const DEFAULT_NUM_IMAGES: usize = 16;

/// The `__metadata__` key of a tensor file naming the global index of its first image.
const FIRST_IMAGE_KEY: &str = "first_image";

/// Given noise holds images 0.. unless its metadata says otherwise; with `--first-image` it
/// must say which images it holds, and they must be the run's.
fn check_noise_images(
    a: &SampleArgs,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let held = metadata.get(FIRST_IMAGE_KEY);
    match (a.first_image, held) {
        (None, None) => Ok(()),
        (Some(k), None) => bail!(
            "--init-noise {} with --first-image {k}: the noise tensor does not say which images it \
             holds (no \"{FIRST_IMAGE_KEY}\" in its safetensors __metadata__); expected \
             \"{FIRST_IMAGE_KEY}\": \"{k}\"",
            path.display()
        ),
        (k, Some(held)) => {
            let k = k.unwrap_or(0);
            if held.trim().parse::<usize>().ok() != Some(k) {
                bail!(
                    "--init-noise {}: its __metadata__ says it holds images from \
                     \"{FIRST_IMAGE_KEY}\" = {held:?}, but --first-image is {k}; expected {k}",
                    path.display()
                );
            }
            Ok(())
        }
    }
}

/// The `--out-dir` file name of global image `index` in a run whose last image is `last`:
/// zero-padded to 5 digits, or to as many as `last` has, so a run's names sort in order.
fn image_file_name(index: usize, last: usize) -> String {
    let width = last.to_string().len().max(5);
    format!("{index:0width$}.png")
}

/// What the run keeps on the CPU until its outputs are written must fit the machine's
/// available memory: every image when `keep_all` (-o, --save-tensor), and the strip's
/// trajectory. Checked before the GPU is opened; --out-dir alone streams and keeps nothing.
fn check_held_memory(
    a: &SampleArgs,
    config: &PipelineConfig,
    spec: &RunSpec,
    keep_all: bool,
) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let [n, c, h, w] = config.output_shape(spec);
    let mut per_image = 0u64;
    if keep_all {
        per_image = (c as u64).saturating_mul(h as u64 * w as u64) * 4;
        if a.save_tensor.is_some() && config.decoder.is_some() {
            let [_, lc, lh, lw] = spec.shape;
            per_image = per_image.saturating_add(lc as u64 * lh as u64 * lw as u64 * 4);
        }
    }
    let bytes = per_image
        .saturating_mul(n as u64)
        .saturating_add(spec.trajectory_bytes(n.min(STRIP_IMAGES)));
    if bytes > available {
        bail!(
            "--num-images {n} at {c}x{h}x{w}: -o and --save-tensor keep every image in memory \
             until they are written ({bytes} bytes), but the machine has {available} bytes \
             available; write --out-dir alone (streamed batch by batch), or make fewer or \
             smaller images per run (--first-image slices a job)"
        );
    }
    Ok(())
}

/// Writes a batch's images into `dir` as PNGs at the model's resolution (whatever --scale
/// says), one file open at a time; `first` is the global index of the batch's first image.
fn write_out_dir_images(
    dir: &Path,
    batch: &Samples,
    first: usize,
    last: usize,
) -> std::result::Result<(), Error> {
    let [n, c, h, w] = batch.shape;
    for i in 0..n {
        let path = dir.join(image_file_name(first + i, last));
        let bytes = io::image(batch.image(i), c, h, w).encode_png()?;
        AtomicFile::create(&path)?.commit(&bytes)?;
    }
    Ok(())
}

/// Adds a batch to what the run keeps: every image when `keep_all` (a grid or --save-tensor
/// needs them), and the trajectory of the first [`STRIP_IMAGES`] images (all a strip shows).
fn gather(kept: &mut Option<Samples>, batch: Samples, keep_all: bool, first_image: usize) {
    let strip_images = STRIP_IMAGES.saturating_sub(first_image).min(batch.shape[0]);
    // Trajectory snapshots are [images, C, H, W] of the model's space.
    let per_image = batch
        .trajectory
        .first()
        .map_or(0, |(x, _)| x.len() / batch.shape[0].max(1));
    let strip_len = strip_images * per_image;
    let Some(kept) = kept else {
        let mut batch = batch;
        if !keep_all {
            // Freed, not just emptied: the run may be far larger than memory.
            batch.data = Vec::new();
            batch.latents = None;
        }
        for (x, x0) in &mut batch.trajectory {
            x.truncate(strip_len);
            x0.truncate(strip_len);
        }
        *kept = Some(batch);
        return;
    };
    kept.shape[0] += batch.shape[0];
    if keep_all {
        kept.data.extend_from_slice(&batch.data);
        if let (Some((all, shape)), Some((more, more_shape))) = (&mut kept.latents, &batch.latents)
        {
            all.extend_from_slice(more);
            shape[0] += more_shape[0];
        }
    }
    for ((x, x0), (bx, bx0)) in kept.trajectory.iter_mut().zip(&batch.trajectory) {
        x.extend_from_slice(&bx[..strip_len.min(bx.len())]);
        x0.extend_from_slice(&bx0[..strip_len.min(bx0.len())]);
    }
}

/// The look of the grid and strip from the arguments.
fn grid_style(a: &SampleArgs) -> GridStyle {
    GridStyle {
        scale: a.scale,
        cols: a.cols,
        captions: !a.no_captions,
    }
}

/// Images a trajectory strip shows.
const STRIP_IMAGES: usize = 8;

/// Each label's name in captions: the names typed with `--class` as typed, other labels
/// (and those typed as numbers) their longest name in `classes.json`.
fn caption_names(a: &SampleArgs, config: &PipelineConfig) -> BTreeMap<usize, String> {
    let mut names = io::class_display_names(&config.classes);
    let typed = a
        .class
        .iter()
        .flatten()
        .filter(|n| n.parse::<usize>().is_err());
    for name in typed {
        if let Ok(label) = config.resolve_class(name) {
            names.insert(label, name.clone());
        }
    }
    names
}

/// Checks `style` and the grid and strip sizes this run would write (before any GPU work).
fn check_pictures(
    a: &SampleArgs,
    config: &PipelineConfig,
    spec: &RunSpec,
    style: &GridStyle,
    grid: bool,
) -> Result<()> {
    let [n, c, h, w] = config.output_shape(spec);
    if grid {
        io::grid_dimensions(n, [c, h, w], style).map_err(|e| flag_error(e, a))?;
    }
    if a.trajectory.is_some() {
        let columns = spec.trajectory_steps.len();
        io::strip_dimensions(columns, n.min(STRIP_IMAGES), [c, h, w], style)
            .map_err(|e| flag_error(e, a))?;
    }
    Ok(())
}

/// What the outputs' paths decided, checked before any GPU work.
struct Outputs {
    /// The grid's encoder, from `-o`'s extension.
    grid_format: ImageFormat,
    /// The trajectory strip's encoder, from `--trajectory`'s extension.
    strip_format: ImageFormat,
}

impl Outputs {
    /// Checks every output path of the run: each file path can be a file (not a directory, not
    /// spelled `dir/`, in a directory that exists), pictures have an extension we can encode, no
    /// two outputs name the same file (nor an `--out-dir` image), and `--out-dir` can be made.
    fn check(a: &SampleArgs, grid: Option<&Path>, spec: &RunSpec) -> Result<Self> {
        let mut files: Vec<(&str, &Path)> = Vec::new();
        if let Some(p) = grid {
            files.push(("-o", p));
        }
        if let Some(p) = &a.save_tensor {
            files.push(("--save-tensor", p));
        }
        if let Some(p) = &a.trajectory {
            files.push(("--trajectory", p));
        }
        for (flag, path) in &files {
            io::check_output_path(path).with_context(|| flag.to_string())?;
        }
        let grid_format = grid
            .map(ImageFormat::from_path)
            .transpose()
            .context("-o")?
            .unwrap_or(ImageFormat::Png);
        let strip_format = a
            .trajectory
            .as_deref()
            .map(ImageFormat::from_path)
            .transpose()
            .context("--trajectory")?
            .unwrap_or(ImageFormat::Png);
        let normalized: Vec<(&str, &Path, PathBuf)> = files
            .iter()
            .map(|(flag, path)| (*flag, *path, io::normalized_path(path)))
            .collect();
        for (i, (flag, path, real)) in normalized.iter().enumerate() {
            if let Some((other, other_path, _)) = normalized[..i].iter().find(|(_, _, r)| r == real)
            {
                bail!(
                    "{other} {} and {flag} {} are the same file; give each output its own path",
                    other_path.display(),
                    path.display()
                );
            }
        }
        if let Some(dir) = &a.out_dir {
            io::check_output_dir(dir).context("--out-dir")?;
            let real_dir = io::normalized_path(dir);
            let first = spec.first_image;
            let last = first + (spec.shape[0] - 1);
            for (flag, path, real) in &normalized {
                if *real == real_dir {
                    bail!(
                        "{flag} {} is the --out-dir {}; give the file another path",
                        path.display(),
                        dir.display()
                    );
                }
                let in_dir = real.parent() == Some(real_dir.as_path());
                let index = real
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".png"))
                    .and_then(|n| n.parse::<usize>().ok());
                if let (true, Some(i)) = (in_dir, index) {
                    if (first..=last).contains(&i)
                        && real.file_name().and_then(|n| n.to_str())
                            == Some(image_file_name(i, last).as_str())
                    {
                        bail!(
                            "{flag} {} is also the --out-dir file of image {i}; give the file \
                             another path",
                            path.display()
                        );
                    }
                }
            }
        }
        Ok(Outputs {
            grid_format,
            strip_format,
        })
    }
}

pub fn run(a: &SampleArgs, gpu: &GpuOptions) -> Result<ExitCode> {
    // Everything that needs no GPU first: the model's config files, the input files and the
    // library's checks of the options (the run spec). Bad arguments fail here, with no output
    // file created and no GPU opened.
    let dir = a.model.clone().unwrap_or_else(bundled_model);
    let config =
        PipelineConfig::load(&dir).with_context(|| format!("loading model {}", dir.display()))?;
    let options = sample_options(a, &config)?;
    let spec = config.prepare(&options).map_err(|e| flag_error(e, a))?;
    let grid_path = match (&a.output, &a.out_dir, &a.save_tensor) {
        (None, None, None) => Some(PathBuf::from("samples.png")),
        (o, _, _) => o.clone(),
    };
    let style = grid_style(a);
    check_pictures(a, &config, &spec, &style, grid_path.is_some())?;

    // Check every output next: clashing, impossible or unwritable paths fail now, with nothing
    // written. The file outputs' temp files are created now; --out-dir only when writing.
    let outputs = Outputs::check(a, grid_path.as_deref(), &spec)?;
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
    check_held_memory(
        a,
        &config,
        &spec,
        grid_file.is_some() || tensor_file.is_some(),
    )?;
    let first = spec.first_image;
    let last = first + (spec.shape[0] - 1);

    let t_load = Instant::now();
    let ctx: Arc<GpuContext> = GpuContext::new(gpu)?;
    let load = LoadOptions {
        offload: a.offload,
        memory_budget: a.memory_budget.map(|mib| mib.saturating_mul(1 << 20)),
    };
    let pipeline = Pipeline::load_with_options(&ctx, &dir, &load)
        .with_context(|| format!("loading model {}", dir.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();
    if let Some(warning) = ctx.pipeline_cache_status().warning() {
        eprintln!("warning: {warning}");
    }

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
    // Batch by batch: --out-dir images are written as each batch comes back, and only what the
    // grid, --save-tensor and the strip need is kept, so a long --out-dir run holds one batch.
    let keep_all = grid_file.is_some() || tensor_file.is_some();
    let mut samples: Option<Samples> = None;
    let mut out_dir_made = false;
    pipeline.run_each(
        &spec,
        &mut |p: Progress| {
            bar.set_length(p.steps_total as u64);
            bar.set_position(p.steps_done as u64);
        },
        &mut |chunk, batch| {
            if let Some(dir) = &a.out_dir {
                if !out_dir_made {
                    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                        path: dir.clone(),
                        error: e,
                    })?;
                    out_dir_made = true;
                }
                write_out_dir_images(dir, &batch, first + chunk.first_image, last)?;
            }
            gather(&mut samples, batch, keep_all, chunk.first_image);
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    let run_s = t_run.elapsed().as_secs_f64();
    // Every pipeline of the run exists now: the next run's driver compile can come from disk.
    if let Err(e) = ctx.save_pipeline_cache() {
        eprintln!("warning: pipeline cache not saved: {e}");
    }
    let samples = samples.context("the run produced no images")?;

    let [_, c, h, w] = samples.shape;
    let n = spec.shape[0];
    let mut written = Vec::new();
    if let Some(f) = grid_file {
        let names = caption_names(a, &config);
        // Captions cycle over one period of the labels / prompts.
        let labels = spec.labels.as_ref().map(|l| l.period());
        let prompts = spec.text.as_ref().map(|t| t.prompts.period());
        let source = match (&labels, &prompts) {
            (Some(labels), _) => CaptionSource::Class {
                labels,
                names: &names,
            },
            (None, Some(prompts)) => CaptionSource::Prompt(prompts),
            (None, None) => CaptionSource::None,
        };
        // Captions carry the global image index.
        let mut captions = source.captions(n);
        for caption in &mut captions {
            caption.index += first;
        }
        let bytes = io::grid(&samples.data, n, [c, h, w], &style, &captions)?
            .encode(outputs.grid_format)?;
        written.push(f.target().display().to_string());
        f.commit(&bytes)?;
    }
    if let Some(dir) = &a.out_dir {
        written.push(format!("{}/ ({n} PNGs)", dir.display()));
    }
    if let Some(f) = tensor_file {
        // A latent pipeline also writes its final latents (before / scaling_factor).
        let mut tensors = vec![("sample", &samples.shape[..], samples.data.as_slice())];
        if let Some((latents, shape)) = &samples.latents {
            tensors.push(("latents", &shape[..], latents.as_slice()));
        }
        // The slice's place in the seeded sequence, so slices can be merged and checked. One
        // key only: safetensors writes the metadata map in hash order, and the file's bytes
        // must not change from run to run (nor with a seed that decides nothing).
        let metadata = [(FIRST_IMAGE_KEY, first.to_string())];
        let bytes = io::tensor_file(&tensors, &metadata)?;
        written.push(f.target().display().to_string());
        f.commit(&bytes)?;
    }
    if let Some(f) = strip_file {
        let headers = io::strip_headers(&samples.plan, &samples.trajectory_steps);
        let bytes = io::trajectory_strip(
            &samples.trajectory,
            n.min(STRIP_IMAGES),
            [c, h, w],
            &headers,
            &style,
        )?
        .encode(outputs.strip_format)?;
        written.push(f.target().display().to_string());
        f.commit(&bytes)?;
    }
    if !a.quiet {
        let evals = samples.model_evaluations;
        eprintln!(
            "{n} images {h}x{w} with {} ({} steps, {evals} model evaluations per image) on {}: {:.2} s ({:.2} images/s, {:.1} image-steps/s); load {:.2} s",
            spec.plan.kind,
            spec.steps_per_chunk(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag the field table names is a `sample` flag, and no field is listed twice.
    #[test]
    fn field_table_names_real_flags() {
        let command = SampleArgs::augment_args(clap::Command::new("sample"));
        let longs: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .map(|long| format!("--{long}"))
            .collect();
        for (field, flag) in FIELD_FLAGS {
            assert!(
                longs.iter().any(|l| l == flag),
                "{field} -> {flag}: no such flag"
            );
            let count = FIELD_FLAGS.iter().filter(|(f, _)| f == field).count();
            assert_eq!(count, 1, "{field} is listed {count} times");
        }
    }

    /// A library option error comes out under the flag the user typed.
    #[test]
    fn option_errors_are_renamed_to_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: SampleArgs,
        }
        let error = |field: &'static str, argv: &[&str]| {
            let a = Wrapper::parse_from(std::iter::once("sample").chain(argv.iter().copied())).args;
            let e = Error::InvalidOption {
                field,
                message: "must be at least 1, got 0".into(),
            };
            flag_error(e, &a).to_string()
        };
        assert_eq!(
            error("num_images", &[]),
            "--num-images: must be at least 1, got 0"
        );
        assert!(error("init_image.strength", &[]).starts_with("--strength: "));
        assert!(error("overrides.use_karras_sigmas", &[]).starts_with("--karras: "));
        assert!(error("class_labels", &["--class-label", "3"]).starts_with("--class-label: "));
        assert!(error("class_labels", &["--class", "cat"]).starts_with("--class: "));
        let other = flag_error(
            Error::Resolution {
                height: 17,
                width: 16,
                message: "odd".into(),
            },
            &Wrapper::parse_from(["sample"]).args,
        );
        assert_eq!(other.to_string(), "resolution 17x16: odd");
    }
}
