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
//! A run has two halves: [`Pipeline::prepare`] ([`RunSpec::prepare`], pure CPU: options and
//! configs → a [`RunSpec`]) and [`Pipeline::run`] (the GPU: record, submit, read back).
//! [`PipelineConfig`] reads a model directory's config files without a GPU, so a front end can
//! validate its arguments before opening one. Errors about options name the [`SampleOptions`]
//! field ([`Error::InvalidOption`]).
//!
//! Reproducibility: image `i` of a run starts from Philox noise keyed by `(seed, i)` and draws
//! its per-step noise keyed by `(seed, i, step)`, so it does not depend on `num_images` or the
//! batch split, and matches across adapters up to float rounding.

// Not public API (exempt from semver, hidden from the docs): the GPU loop and the known-answer
// test model, reached by tests/sampling.rs and the bench.
#[doc(hidden)]
pub mod analytic;
#[doc(hidden)]
pub mod engine;
pub mod folder;
pub mod io;
pub mod latent;
pub mod memory;
pub mod prepare;
mod run;
pub mod unet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::planner::default_memory_budget;
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::autoencoder::DecodeOptions;
use crate::model::clip_text::tokenizer::ClipTokenizer;
use crate::model::clip_text::{CLIPTextConfig, PromptEncoder};
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::unet_2d::{UNet2DModel, CONFIG_FILE};
use crate::model::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::schedule::{
    BetaSchedule, PredictionType, SchedulerConfig, SchedulerKind, StepPlan, TimestepSpacing,
};
use memory::Slot;

pub use folder::FolderLayout;
pub use latent::{DecoderConfig, LatentDecoder};
pub use memory::{Offload, Phase, PhaseMemory, PipelineMemory};
pub use prepare::{Chunk, Cycled, DecoderShape, Guidance, NoiseSource, RunSpec, TextRun};
pub use run::LATENTS_PER_GROUP;
pub use unet::{UNet, UNetConfig};

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
    /// Global index of the run's first image: the run produces images `first_image ..
    /// first_image + num_images` of the seeded sequence (their noise keys and cycled class
    /// labels), so a job splits into slices that equal one run bit for bit. Default 0.
    pub first_image: usize,
    /// Images per GPU batch (memory cap); results do not depend on it. `None`: the largest
    /// batch whose buffers fit the adapter's binding and buffer limits and `memory_budget`.
    pub batch_size: Option<usize>,
    /// Bytes the automatic batch may plan for (weights, activations, sampler state). `None`:
    /// [`crate::gpu::planner::default_memory_budget`] of the adapter.
    pub memory_budget: Option<u64>,
    /// Class labels, cycled over the images (`None`: the null label of a class-conditional
    /// model; unconditional models take none).
    pub class_labels: Option<Vec<usize>>,
    /// Classifier-free guidance scale w (m = m_null + w·(m_class − m_null)). Class-conditional
    /// models: `None` or 1 = none. Text-to-image pipelines: `None` = 7.5 (diffusers' default for
    /// them), ≤ 1 = none (as diffusers: `guidance_scale > 1` turns it on).
    pub guidance_scale: Option<f64>,
    /// Prompts of a text-to-image pipeline, cycled over the images by global image index
    /// (required there; an error for models without a text encoder).
    pub prompts: Option<Vec<String>>,
    /// Negative prompts (the guidance's unconditional side), cycled the same way; `None`: the
    /// empty prompt, as diffusers.
    pub negative_prompts: Option<Vec<String>>,
    /// Standard-normal starting noise [num_images, C, H, W] instead of the seeded noise.
    pub init_noise: Option<Vec<f32>>,
    pub init_image: Option<InitImage>,
    pub overrides: ScheduleOverrides,
    /// Keep x_t and x̂₀ every this many steps (and after the last) for a trajectory strip.
    pub trajectory_every: Option<usize>,
    /// Resolution (`None`: the model's sample_size).
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// A latent pipeline's decode: the most bytes one activation may take (`None`: the
    /// adapter's binding limit). A decode past it runs in exact row bands; a lower value
    /// makes any adapter take that path (tests). Ignored by pixel-space pipelines.
    pub decode_binding_limit: Option<u64>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            scheduler: None,
            steps: 20,
            eta: 0.0,
            seed: 0,
            num_images: 1,
            first_image: 0,
            batch_size: None,
            memory_budget: None,
            class_labels: None,
            guidance_scale: None,
            prompts: None,
            negative_prompts: None,
            init_noise: None,
            init_image: None,
            overrides: ScheduleOverrides::default(),
            trajectory_every: None,
            height: None,
            width: None,
            decode_binding_limit: None,
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
    /// A latent pipeline's final latents [N, C, h, w] (before the division by
    /// `scaling_factor`); `data` is then their decoded image. `None` for pixel-space sampling.
    pub latents: Option<(Vec<f32>, [usize; 4])>,
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
    /// Reads a `classes.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses `classes.json` text; `path` names it in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let map: BTreeMap<String, usize> =
            serde_json::from_str(text).map_err(|e| Error::Config {
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

/// The scheduler config of `dir` (DDPM defaults when it has none) and whether the file exists.
fn read_scheduler_config(dir: &Path) -> Result<(SchedulerConfig, bool)> {
    let path = dir.join(SCHEDULER_FILE);
    if path.exists() {
        return Ok((SchedulerConfig::from_file(&path)?, true));
    }
    let defaults = SchedulerConfig {
        source: path,
        class_name: Some(SchedulerKind::Ddpm.class_name().to_owned()),
        ..SchedulerConfig::default()
    };
    Ok((defaults, false))
}

/// Options a latent pipeline cannot honour yet: a trajectory (its snapshots are latents, not
/// images).
fn check_latent_options(latent: bool, options: &SampleOptions) -> Result<()> {
    if latent && options.trajectory_every.is_some() {
        return Err(Error::option(
            "trajectory_every",
            "a latent pipeline's trajectory would show latents; not supported yet",
        ));
    }
    Ok(())
}

/// The class names of `dir` (none without classes.json); the null label must be a class.
fn read_classes(dir: &Path, num_class_embeds: Option<usize>) -> Result<ClassNames> {
    let path = dir.join(CLASSES_FILE);
    if !path.exists() {
        return Ok(ClassNames::default());
    }
    let classes = ClassNames::from_file(&path)?;
    check_classes(&path, &classes, num_class_embeds)?;
    Ok(classes)
}

/// Every label of `classes` (read from `path`), the null label's included, must be a class
/// of a model with `num_class_embeds` classes.
pub fn check_classes(
    path: &Path,
    classes: &ClassNames,
    num_class_embeds: Option<usize>,
) -> Result<()> {
    if let (Some(num), Some(null)) = (num_class_embeds, classes.null) {
        if null >= num {
            return Err(Error::Config {
                path: path.to_path_buf(),
                key: "null".into(),
                message: format!("label {null} is out of range for num_class_embeds = {num}"),
            });
        }
    }
    // Every name's label, so a bad entry is blamed on this file, not on the flag that used it.
    if let Some(num) = num_class_embeds {
        if let Some((name, label)) = classes.names.iter().find(|(_, &l)| l >= num) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                key: name.clone(),
                message: match num.checked_sub(1) {
                    Some(last) => format!(
                        "label {label} is out of range for num_class_embeds = {num} in \
                         config.json (labels 0..={last})"
                    ),
                    None => format!(
                        "label {label} is out of range: num_class_embeds = 0 in config.json \
                         leaves no label"
                    ),
                },
            });
        }
    }
    Ok(())
}

/// The text side of a text-to-image pipeline, read without a GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// `text_encoder/config.json`.
    pub encoder: CLIPTextConfig,
    /// Tokens per prompt (the tokenizer's `model_max_length`, 77 for CLIP).
    pub tokens: usize,
}

impl TextConfig {
    /// Reads `tokenizer/` and `text_encoder/config.json` of `root` and checks the encoder's
    /// width against the U-Net's `cross_attention_dim`.
    fn read(root: &Path, unet: &UNet2DConditionConfig) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_folder(&root.join("tokenizer"))?;
        let encoder = CLIPTextConfig::from_file(&root.join("text_encoder").join(CONFIG_FILE))?;
        check_text_width(&encoder, unet)?;
        Ok(TextConfig {
            encoder,
            tokens: tokenizer.model_max_length(),
        })
    }
}

/// The text encoder's `hidden_size` must be the U-Net's `cross_attention_dim`.
fn check_text_width(encoder: &CLIPTextConfig, unet: &UNet2DConditionConfig) -> Result<()> {
    if encoder.hidden_size != unet.context_dim() {
        return Err(Error::Config {
            path: encoder.source.clone(),
            key: "hidden_size".into(),
            message: format!(
                "the text encoder writes {}-wide embeddings but the U-Net ({}) attends to                  cross_attention_dim = {}; the parts are not from the same model",
                encoder.hidden_size,
                unet.source.display(),
                unet.context_dim()
            ),
        });
    }
    Ok(())
}

/// Reads the U-Net config of a layout: a `UNet2DConditionModel` in text-to-image pipelines.
fn read_unet_config(layout: &FolderLayout) -> Result<UNetConfig> {
    let path = layout.unet.join(CONFIG_FILE);
    Ok(if layout.text_conditioned {
        UNetConfig::Text(UNet2DConditionConfig::from_file(&path)?)
    } else {
        UNetConfig::Plain(UNet2DConfig::from_file(&path)?)
    })
}

/// A model directory's config files (config.json, scheduler_config.json, classes.json) without
/// its weights or a GPU: enough to validate options and prepare a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub dir: PathBuf,
    pub unet: UNetConfig,
    pub scheduler_config: SchedulerConfig,
    /// Whether `scheduler_config.json` exists (else DDPM defaults are assumed).
    pub has_scheduler_file: bool,
    pub classes: ClassNames,
    /// A latent pipeline's decoder config (its latents checked against the U-Net's channels).
    pub decoder: Option<DecoderConfig>,
    /// A text-to-image pipeline's tokenizer and text encoder settings.
    pub text: Option<TextConfig>,
}

impl PipelineConfig {
    /// Reads `dir`'s config files (the same ones [`Pipeline::load_with`] reads).
    pub fn load(dir: &Path) -> Result<Self> {
        let layout = FolderLayout::resolve(dir)?;
        let unet = read_unet_config(&layout)?;
        let (scheduler_config, has_scheduler_file) = read_scheduler_config(&layout.scheduler)?;
        let classes = read_classes(&layout.classes, unet.num_class_embeds())?;
        let decoder = match &layout.decoder {
            Some(part) => Some(DecoderConfig::read(part, &unet)?),
            None => None,
        };
        let text = match &unet {
            UNetConfig::Text(c) => Some(TextConfig::read(&layout.root, c)?),
            UNetConfig::Plain(_) => None,
        };
        Ok(PipelineConfig {
            dir: dir.to_path_buf(),
            unet,
            scheduler_config,
            has_scheduler_file,
            classes,
            decoder,
            text,
        })
    }

    /// See [`Pipeline::default_scheduler`].
    pub fn default_scheduler(&self) -> Result<SchedulerKind> {
        prepare::default_scheduler(&self.scheduler_config)
    }

    /// See [`Pipeline::resolve_class`].
    pub fn resolve_class(&self, name: &str) -> Result<usize> {
        prepare::resolve_class(&self.unet, &self.classes, name)
    }

    /// See [`Pipeline::plan`].
    pub fn plan(&self, options: &SampleOptions) -> Result<StepPlan> {
        prepare::plan(&self.scheduler_config, options)
    }

    /// Validates `options` and prepares the run [`Pipeline::run`] executes on a pipeline
    /// loaded from the same directory.
    pub fn prepare<'a>(&self, options: &'a SampleOptions) -> Result<RunSpec<'a>> {
        check_latent_options(self.decoder.is_some(), options)?;
        RunSpec::prepare_latent(
            &self.unet,
            &self.scheduler_config,
            &self.classes,
            options,
            self.decoder.as_ref().map(|d| DecoderShape {
                upscale: d.upscale(),
                channels: d.out_channels(),
            }),
        )
    }

    /// The shape of the images `spec` produces: its samples, or their decoded image in a latent
    /// pipeline.
    pub fn output_shape(&self, spec: &RunSpec<'_>) -> [usize; 4] {
        let [n, c, h, w] = spec.shape;
        match &self.decoder {
            None => [n, c, h, w],
            Some(d) => [n, d.out_channels(), h * d.upscale(), w * d.upscale()],
        }
    }
}

/// How [`Pipeline::load_with_options`] places the parts on the GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Every part resident, or one at a time ([`Offload`]); `Auto` decides at load.
    pub offload: Offload,
    /// Bytes `Auto` judges the all-resident plan against (`None`: the adapter's
    /// [`crate::gpu::planner::default_memory_budget`]).
    pub memory_budget: Option<u64>,
}

/// A model directory ready to sample: its configs, and its parts — the U-Net, and the decoder
/// and prompt encoder of latent and text-to-image pipelines — on the GPU, all of them for the
/// pipeline's lifetime or one at a time ([`Offload`]).
pub struct Pipeline {
    ctx: Arc<GpuContext>,
    /// The U-Net's config (what [`RunSpec::prepare`] checks options against).
    pub unet_config: UNetConfig,
    pub dir: PathBuf,
    pub scheduler_config: SchedulerConfig,
    /// Whether `scheduler_config.json` exists (else DDPM defaults are assumed).
    pub has_scheduler_file: bool,
    pub classes: ClassNames,
    /// A latent pipeline's decoder config: the U-Net samples latents, the decoder turns them
    /// into images.
    pub decoder_config: Option<DecoderConfig>,
    /// A text-to-image pipeline's tokenizer and text encoder settings.
    pub text_config: Option<TextConfig>,
    /// Resolved at load: [`Offload::Off`] or [`Offload::Parts`].
    offload: Offload,
    layout: FolderLayout,
    unet: Slot<UNet>,
    decoder: Slot<LatentDecoder>,
    prompt_encoder: Slot<PromptEncoder>,
}

impl Pipeline {
    /// Loads `dir` on the adapter chosen by the `WGPU_*` environment variables.
    pub fn load(dir: &Path) -> Result<Self> {
        let ctx = GpuContext::new(&GpuOptions::from_env())?;
        Self::load_with(&ctx, dir)
    }

    /// Loads `dir` onto `ctx` with [`LoadOptions::default`]: a model folder (config.json,
    /// diffusion_pytorch_model.safetensors, and when present scheduler_config.json and
    /// classes.json) or a diffusers pipeline folder (`model_index.json` with `unet/` and
    /// `scheduler/`, and `vqvae/` or `vae/`, `text_encoder/` and `tokenizer/` in latent and
    /// text-to-image pipelines; see [`FolderLayout`]).
    pub fn load_with(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        Self::load_with_options(ctx, dir, &LoadOptions::default())
    }

    /// [`Pipeline::load_with`] placing the parts as `options` say. Every config is read and
    /// checked against the others, and every weights file's header parsed, before any weights
    /// are uploaded; the U-Net loads at once (every run needs it), the other parts too unless
    /// they are offloaded.
    pub fn load_with_options(
        ctx: &Arc<GpuContext>,
        dir: &Path,
        options: &LoadOptions,
    ) -> Result<Self> {
        let layout = FolderLayout::resolve(dir)?;
        let unet_config = read_unet_config(&layout)?;
        let text_config = match &unet_config {
            UNetConfig::Text(c) => Some(TextConfig::read(&layout.root, c)?),
            UNetConfig::Plain(_) => None,
        };
        let decoder_config = match &layout.decoder {
            Some(part) => Some(DecoderConfig::read(part, &unet_config)?),
            None => None,
        };
        let (scheduler_config, has_scheduler_file) = read_scheduler_config(&layout.scheduler)?;
        let classes = read_classes(&layout.classes, unet_config.num_class_embeds())?;
        let mut pipeline = Pipeline {
            ctx: Arc::clone(ctx),
            unet_config,
            dir: dir.to_path_buf(),
            scheduler_config,
            has_scheduler_file,
            classes,
            decoder_config,
            text_config,
            offload: Offload::Off,
            layout,
            unet: Slot::default(),
            decoder: Slot::default(),
            prompt_encoder: Slot::default(),
        };
        let budget = options
            .memory_budget
            .unwrap_or_else(|| default_memory_budget(&ctx.adapter));
        // Parts load in run order (the prompt encoder's weights are checked before the
        // U-Net's are read). `Auto` plans each as it comes — one image at the model's default
        // size, with guidance rows in a text-to-image pipeline — and turns to `Parts` once the
        // parts loaded so far are over the budget, so loading never holds more than the
        // budget plus one part.
        pipeline.offload = options.offload;
        let mut phases = Vec::new();
        let mut check = |pipeline: &mut Pipeline, phase: Option<PhaseMemory>| {
            phases.extend(phase);
            let resident = PipelineMemory {
                phases: phases.clone(),
            }
            .resident_peak();
            if pipeline.offload == Offload::Auto && resident > budget {
                pipeline.offload = Offload::Parts;
                pipeline.release_parts();
            }
        };
        if pipeline.offload == Offload::Parts {
            if pipeline.text_config.is_some() {
                // The text encoder's weights file: present and its header sound.
                PromptEncoder::weight_bytes(&pipeline.layout.root)?;
            }
        } else {
            let phase = match pipeline.prompt_encoder()? {
                Some(encoder) => Some(pipeline.text_phase(&encoder)?),
                None => None,
            };
            check(&mut pipeline, phase);
        }
        let (h, w) = pipeline.unet_config.resolution(None, None);
        let unet = pipeline.unet()?;
        let rows = if pipeline.text_config.is_some() { 2 } else { 1 };
        let latents = (pipeline.unet_config.in_channels() * h * w * 4) as u64;
        let phase = PhaseMemory {
            phase: Phase::Sampling,
            weights: unet.parameters() as u64 * 4,
            // As RunSpec::sampler_bytes counts one image without a trajectory.
            activations: unet
                .plan_memory(rows, h, w, pipeline.context_tokens())?
                .planned_bytes
                + 4 * latents,
        };
        drop(unet);
        check(&mut pipeline, Some(phase));
        if pipeline.offload == Offload::Parts {
            // Checks the decoder's weights like the others', then frees them.
            pipeline.decoder()?;
        } else if let Some(decoder) = pipeline.decoder()? {
            let phase = PhaseMemory {
                phase: Phase::Decode,
                weights: decoder.parameters() as u64 * 4,
                activations: decoder
                    .decode_plan(1, h, w, &DecodeOptions::default())?
                    .memory
                    .planned_bytes,
            };
            drop(decoder);
            check(&mut pipeline, Some(phase));
        }
        if pipeline.offload == Offload::Auto {
            pipeline.offload = Offload::Off;
        }
        pipeline.release_parts();
        Ok(pipeline)
    }

    /// Whether the parts stay resident ([`Offload::Off`]) or come one at a time
    /// ([`Offload::Parts`]), as resolved at load.
    pub fn offload(&self) -> Offload {
        self.offload
    }

    /// The U-Net, uploaded if it is not on the GPU.
    pub fn unet(&self) -> Result<Arc<UNet>> {
        self.unet.get_or_load(|| {
            Ok(match &self.unet_config {
                UNetConfig::Plain(_) => {
                    UNet::Plain(UNet2DModel::load(&self.ctx, &self.layout.unet)?)
                }
                UNetConfig::Text(_) => {
                    UNet::Text(UNet2DConditionModel::load(&self.ctx, &self.layout.unet)?)
                }
            })
        })
    }

    /// A latent pipeline's decoder (and encoder), uploaded if it is not on the GPU.
    pub fn decoder(&self) -> Result<Option<Arc<LatentDecoder>>> {
        match &self.layout.decoder {
            None => Ok(None),
            Some(part) => self
                .decoder
                .get_or_load(|| LatentDecoder::load(&self.ctx, part))
                .map(Some),
        }
    }

    /// A text-to-image pipeline's tokenizer and text encoder, uploaded if not on the GPU.
    pub fn prompt_encoder(&self) -> Result<Option<Arc<PromptEncoder>>> {
        match &self.unet_config {
            UNetConfig::Plain(_) => Ok(None),
            UNetConfig::Text(c) => self
                .prompt_encoder
                .get_or_load(|| {
                    let encoder = PromptEncoder::load(&self.ctx, &self.layout.root)?;
                    check_text_width(&encoder.text_encoder.config, c)?;
                    Ok(encoder)
                })
                .map(Some),
        }
    }

    /// Under [`Offload::Parts`], frees every part's weights (those a running phase holds go
    /// when it ends); resident parts stay.
    pub fn release_parts(&self) {
        if self.offload == Offload::Parts {
            self.unet.release();
            self.decoder.release();
            self.prompt_encoder.release();
        }
    }

    /// Image pixels per latent pixel (1 for pixel-space models).
    pub fn upscale(&self) -> usize {
        self.decoder_config
            .as_ref()
            .map_or(1, DecoderConfig::upscale)
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The sampler used when none is chosen: the scheduler config's class, except that a
    /// `DDPMScheduler` config samples with DDIM (η = 0), whose 20-step results are far better
    /// than 20 ancestral DDPM steps; pass `ddpm` explicitly for ancestral sampling.
    pub fn default_scheduler(&self) -> Result<SchedulerKind> {
        prepare::default_scheduler(&self.scheduler_config)
    }

    /// The label for a class name (case-insensitive, from classes.json) or a decimal label.
    pub fn resolve_class(&self, name: &str) -> Result<usize> {
        prepare::resolve_class(&self.unet_config, &self.classes, name)
    }

    /// The step plan `options` ask for (before any image-to-image truncation).
    pub fn plan(&self, options: &SampleOptions) -> Result<StepPlan> {
        prepare::plan(&self.scheduler_config, options)
    }

    /// Validates `options` against this model and prepares the run (no GPU work).
    pub fn prepare<'a>(&self, options: &'a SampleOptions) -> Result<RunSpec<'a>> {
        check_latent_options(self.decoder_config.is_some(), options)?;
        RunSpec::prepare_latent(
            &self.unet_config,
            &self.scheduler_config,
            &self.classes,
            options,
            self.decoder_config.as_ref().map(|d| DecoderShape {
                upscale: d.upscale(),
                channels: d.out_channels(),
            }),
        )
    }

    /// Samples `options.num_images` images; see [`Pipeline::sample_with_progress`].
    pub fn sample(&self, options: &SampleOptions) -> Result<Samples> {
        self.sample_with_progress(options, &mut |_| {})
    }

    /// Samples with a progress callback, called as inference steps complete on the GPU:
    /// [`Pipeline::prepare`] then [`Pipeline::run`].
    pub fn sample_with_progress(
        &self,
        options: &SampleOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Samples> {
        let spec = self.prepare(options)?;
        self.run(&spec, progress)
    }
}
