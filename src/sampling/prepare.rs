//! The pure half of a sampling run: [`RunSpec::prepare`] turns a model's configs (U-Net, scheduler,
//! class names) and [`SampleOptions`] into everything the GPU run ([`Pipeline::run`](super::Pipeline::run)) needs — the
//! resolution, each image's label, classifier-free guidance, the image-to-image start, the stage
//! list, the starting noise, the trajectory steps and the GPU batches. No GPU is touched, so the
//! CLI validates its arguments here before opening one, and the unit tests below run without one.
//!
//! Errors about the caller's options are [`Error::InvalidOption`] naming the `SampleOptions`
//! field (`num_images`, `init_image.strength`, …).

use std::path::Path;

use crate::error::{Error, Result};
use crate::sampling::unet::UNetConfig;
use crate::schedule::{NoiseLevels, PlanOptions, SchedulerConfig, SchedulerKind, StepPlan};

use super::engine::{InitRule, RunStage};
use super::{ClassNames, SampleOptions, CLASSES_FILE};

impl SampleOptions {
    /// Checks the fields that need no model: counts at least 1, finite numbers in range,
    /// a non-empty label list, finite given noise / image values. [`RunSpec::prepare`] calls it
    /// first; the model-dependent checks (labels in range, guidance, sampler options, lengths)
    /// are [`RunSpec::prepare`]'s.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::option("steps", "must be at least 1, got 0"));
        }
        if self.num_images == 0 {
            return Err(Error::option("num_images", "must be at least 1, got 0"));
        }
        // Noise is keyed by a u32 global image index: the last image must have one.
        let last = self
            .first_image
            .checked_add(self.num_images.saturating_sub(1))
            .filter(|&last| u32::try_from(last).is_ok());
        if last.is_none() {
            return Err(Error::option(
                "first_image",
                format!(
                    "images {first} .. {first} + {n} pass the last image index of the seeded \
                     sequence ({max}); expected first_image + num_images ≤ {end}",
                    first = self.first_image,
                    n = self.num_images,
                    max = u32::MAX,
                    end = u64::from(u32::MAX) + 1
                ),
            ));
        }
        if self.batch_size == Some(0) {
            return Err(Error::option("batch_size", "must be at least 1, got 0"));
        }
        // Checked in f32, the precision the GPU computes in: 1e300 is finite in f64 only.
        if !(self.eta >= 0.0 && fits_f32(self.eta)) {
            return Err(Error::option(
                "eta",
                format!(
                    "must be a finite number ≥ 0 within f32 range (the GPU's precision, up to \
                     {:e}), got {:?}",
                    f32::MAX,
                    self.eta
                ),
            ));
        }
        if self.class_labels.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::option(
                "class_labels",
                "an empty list of labels (use None for the null label)",
            ));
        }
        if let Some(g) = self.guidance_scale {
            if !fits_f32(g) {
                return Err(Error::option(
                    "guidance_scale",
                    format!(
                        "must be a finite number within f32 range (the GPU's precision, up to \
                         {:e}), got {g:?}",
                        f32::MAX
                    ),
                ));
            }
        }
        if let Some(noise) = &self.init_noise {
            if let Some(bad) = noise.iter().position(|v| !v.is_finite()) {
                return Err(Error::option(
                    "init_noise",
                    format!("element {bad} is {}, expected finite values", noise[bad]),
                ));
            }
        }
        if let Some(init) = &self.init_image {
            if !(init.strength > 0.0 && init.strength <= 1.0) {
                return Err(Error::option(
                    "init_image.strength",
                    format!("must lie in (0, 1], got {}", init.strength),
                ));
            }
            if let Some(bad) = init.image.iter().position(|v| !v.is_finite()) {
                return Err(Error::option(
                    "init_image.image",
                    format!(
                        "element {bad} is {}, expected finite values",
                        init.image[bad]
                    ),
                ));
            }
        }
        if self.trajectory_every == Some(0) {
            return Err(Error::option(
                "trajectory_every",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }
}

/// Classifier-free guidance: `m = m_null + scale·(m_class − m_null)`, the null rows labelled
/// `null_label` (class-conditional models) or conditioned on the negative prompts
/// (text-to-image pipelines: `null_label` is `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    pub null_label: Option<usize>,
}

/// One value per image of a run without a vector per image: a list cycled by global image index,
/// image `i` of the run (global index `first_image + i`) taking
/// `list[(first_image + i) % list.len()]` — what `class_labels` and the prompt lists mean. A run
/// of 4 · 10⁹ images holds the list, not 4 · 10⁹ copies (that allocation aborted the process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycled<T> {
    list: Vec<T>,
    first_image: usize,
    len: usize,
}

impl<T: Clone> Cycled<T> {
    /// `len` images from global image `first_image` on; an empty `list` gives no value.
    pub fn new(list: Vec<T>, first_image: usize, len: usize) -> Self {
        let len = if list.is_empty() { 0 } else { len };
        Cycled {
            list,
            first_image,
            len,
        }
    }

    /// Images covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no image has a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of the run's image `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let k = (self.first_image % self.list.len() + i % self.list.len()) % self.list.len();
        self.list.get(k)
    }

    /// The values of images `range` (clamped to the run).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Vec<T> {
        (range.start..range.end.min(self.len))
            .filter_map(|i| self.get(i).cloned())
            .collect()
    }

    /// The values of the first `min(len, list.len())` images: every value the run uses, and
    /// image `i`'s is `period()[i % period().len()]`.
    pub fn period(&self) -> Vec<T> {
        self.slice(0..self.list.len())
    }

    /// Every image's value (for tests and for outputs that hold every image anyway).
    pub fn to_vec(&self) -> Vec<T> {
        self.slice(0..self.len)
    }
}

/// The prompts of a text-to-image run, per image (cycled by global image index).
#[derive(Debug, Clone, PartialEq)]
pub struct TextRun {
    /// Each image's prompt.
    pub prompts: Cycled<String>,
    /// Each image's negative prompt (empty without guidance).
    pub negative_prompts: Cycled<String>,
}

/// What a latent pipeline's decoder makes of the latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderShape {
    /// Image pixels per latent pixel along each axis (the VAE factor).
    pub upscale: usize,
    /// Channels of the image.
    pub channels: usize,
}

/// diffusers' default guidance scale of Stable Diffusion pipelines.
pub const TEXT_GUIDANCE_DEFAULT: f64 = 7.5;

/// Where the starting noise z comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseSource<'a> {
    /// Philox, keyed by the seed and the global image index.
    Seeded,
    /// Given standard-normal values, [num_images, C, H, W] flattened.
    Given(&'a [f32]),
}

/// One GPU batch of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the batch's first image within the run (its global index is
    /// [`RunSpec::first_image`] plus this).
    pub first_image: usize,
    /// Images in the batch.
    pub images: usize,
}

/// Everything a sampling run does, decided on the CPU: built by [`RunSpec::prepare`] (or
/// [`Pipeline::prepare`](super::Pipeline::prepare)), executed by
/// [`Pipeline::run`](super::Pipeline::run). It borrows the given noise and image from the
/// options it was prepared from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunSpec<'a> {
    /// [num_images, C, H, W] of the result.
    pub shape: [usize; 4],
    /// Global index of the run's first image (`SampleOptions::first_image`): noise keys and
    /// class cycling use `first_image + i` for the run's image `i`.
    pub first_image: usize,
    /// The class label of each of the run's images (`class_labels` cycled by global image
    /// index, or the null label), `None`
    /// for an unconditional model.
    pub labels: Option<Cycled<usize>>,
    /// `None` without guidance, and also for w = 1 or an all-null batch (plain sampling).
    pub guidance: Option<Guidance>,
    /// A text-to-image run's prompts; `None` for other models.
    pub text: Option<TextRun>,
    /// The whole plan (an image-to-image run starts at `first_step`).
    pub plan: StepPlan,
    pub first_step: usize,
    /// How x starts: `image_coef · init_image + noise_coef · z`.
    pub init: InitRule,
    /// The image-to-image start [C, H, W], if any (a latent pipeline's is the image, which the
    /// run encodes into the latents it starts from).
    pub init_image: Option<&'a [f32]>,
    /// The stages executed, from `first_step` on.
    pub stages: Vec<RunStage>,
    pub init_noise: NoiseSource<'a>,
    /// Key of the seeded starting noise and of every step's noise.
    pub seed: u64,
    /// Inference-step indices after which x and x̂₀ are kept.
    pub trajectory_steps: Vec<usize>,
    /// Images per GPU batch as asked (`SampleOptions::batch_size`); `None`: the run picks the
    /// largest batch that fits the adapter ([`crate::sampling::Pipeline::batch_for`]).
    pub batch_size: Option<usize>,
    /// Bytes the run may plan for when it picks the batch (`None`: the adapter's default).
    pub memory_budget: Option<u64>,
    /// A latent pipeline's decode binding limit (`SampleOptions::decode_binding_limit`).
    pub decode_binding_limit: Option<u64>,
}

impl<'a> RunSpec<'a> {
    /// Validates `options` against the model's configs and resolves everything the GPU run
    /// needs. Reads no file and touches no GPU.
    pub fn prepare(
        unet: &UNetConfig,
        scheduler: &SchedulerConfig,
        classes: &ClassNames,
        options: &'a SampleOptions,
    ) -> Result<Self> {
        Self::prepare_latent(unet, scheduler, classes, options, None)
    }

    /// [`RunSpec::prepare`] for a latent pipeline whose decoder makes `decoder.channels`-channel
    /// images `decoder.upscale`× the latents: the options' height and width are then the
    /// image's, multiples of `upscale` (diffusers' `height`/`width` of Stable Diffusion
    /// pipelines), and an init image is an image of that size (the run encodes it); the spec's
    /// shape is the latents'.
    pub fn prepare_latent(
        unet: &UNetConfig,
        scheduler: &SchedulerConfig,
        classes: &ClassNames,
        options: &'a SampleOptions,
        decoder: Option<DecoderShape>,
    ) -> Result<Self> {
        options.validate()?;
        let upscale = decoder.map_or(1, |d| d.upscale);
        let n = options.num_images;
        if unet.in_channels() != unet.out_channels() {
            return Err(Error::Config {
                path: unet.source().to_path_buf(),
                key: "out_channels".into(),
                message: format!(
                    "the model maps {} channels to {}; sampling needs out_channels = in_channels",
                    unet.in_channels(),
                    unet.out_channels()
                ),
            });
        }
        let (h, w) = latent_resolution(unet, options, upscale)?;
        let c = unet.in_channels();
        // A huge sample_size (or --height/--width) must not overflow the element count; a
        // count that fits is checked against the adapter and the machine's memory later.
        let chw = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| Error::Resolution {
                height: h.saturating_mul(upscale),
                width: w.saturating_mul(upscale),
                message: format!(
                    "{c} channel(s) of {h}x{w} overflow the element count of an image; lower \
                     the height and width (or sample_size in {})",
                    unet.source().display()
                ),
            })?;

        let (labels, guidance, text) = match unet {
            UNetConfig::Text(_) => {
                let (guidance, text) = text_run(unet, options)?;
                (None, guidance, Some(text))
            }
            UNetConfig::Plain(_) => {
                if options.prompts.is_some() || options.negative_prompts.is_some() {
                    let field = if options.prompts.is_some() {
                        "prompts"
                    } else {
                        "negative_prompts"
                    };
                    return Err(Error::option(
                        field,
                        format!(
                            "the model in {} has no text encoder (it is not a text-to-image                              pipeline); prompts need a StableDiffusionPipeline folder",
                            model_dir(unet)
                        ),
                    ));
                }
                let labels = image_labels(unet, classes, options)?;
                let guidance = guidance(unet, classes, labels.as_ref(), options.guidance_scale)?;
                (labels, guidance, None)
            }
        };
        let plan = plan(scheduler, options)?;
        let image_shape = match decoder {
            Some(d) => [
                d.channels,
                h.saturating_mul(d.upscale),
                w.saturating_mul(d.upscale),
            ],
            None => [c, h, w],
        };
        let (first_step, init, init_image) = image_start(&plan, options, image_shape)?;
        let stages = run_stages(&plan, first_step)?;

        let init_noise = match &options.init_noise {
            None => NoiseSource::Seeded,
            Some(noise) if Some(noise.len()) == n.checked_mul(chw) => NoiseSource::Given(noise),
            Some(noise) => {
                return Err(Error::option(
                    "init_noise",
                    format!(
                        "{} values, expected [{n}, {c}, {h}, {w}] = {}",
                        noise.len(),
                        n as u128 * chw as u128
                    ),
                ))
            }
        };
        let trajectory_steps = match options.trajectory_every {
            None => Vec::new(),
            Some(every) => trajectory_steps(first_step, plan.steps.len(), every),
        };
        Ok(RunSpec {
            shape: [n, c, h, w],
            first_image: options.first_image,
            labels,
            guidance,
            text,
            plan,
            first_step,
            init,
            init_image,
            stages,
            init_noise,
            seed: options.seed,
            trajectory_steps,
            batch_size: options.batch_size,
            memory_budget: options.memory_budget,
            decode_binding_limit: options.decode_binding_limit,
        })
    }

    /// Elements of one image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Rows of the model batch for `chunk`: its images, twice with guidance.
    pub fn model_rows(&self, chunk: &Chunk) -> usize {
        if self.guidance.is_some() {
            2 * chunk.images
        } else {
            chunk.images
        }
    }

    /// The labels of `chunk`'s model rows: its images' labels, then as many null labels with
    /// guidance. `None` for an unconditional model.
    pub fn model_labels(&self, chunk: &Chunk) -> Option<Vec<usize>> {
        let all = self.labels.as_ref()?;
        let mut rows = all.slice(chunk.first_image..chunk.first_image + chunk.images);
        if let Some(null) = self.guidance.and_then(|g| g.null_label) {
            rows.extend(std::iter::repeat_n(null, chunk.images));
        }
        Some(rows)
    }

    /// The starting noise of `chunk`'s images.
    pub fn chunk_noise(&self, chunk: &Chunk) -> Result<NoiseSource<'a>> {
        match self.init_noise {
            NoiseSource::Seeded => Ok(NoiseSource::Seeded),
            NoiseSource::Given(all) => {
                let len = self.image_len();
                all.get(chunk.first_image * len..(chunk.first_image + chunk.images) * len)
                    .map(NoiseSource::Given)
                    .ok_or_else(|| {
                        Error::invalid(
                            "RunSpec::chunk_noise",
                            format!(
                                "images {}..{} lie past the {} given noise values",
                                chunk.first_image,
                                chunk.first_image + chunk.images,
                                all.len()
                            ),
                        )
                    })
            }
        }
    }

    /// Global index of `chunk`'s first image (the key of its noise).
    pub fn global_first_image(&self, chunk: &Chunk) -> Result<usize> {
        self.first_image
            .checked_add(chunk.first_image)
            .ok_or_else(|| {
                Error::invalid(
                    "RunSpec::global_first_image",
                    format!(
                        "first image {} + chunk offset {} overflows",
                        self.first_image, chunk.first_image
                    ),
                )
            })
    }

    /// Inference steps each chunk runs.
    pub fn steps_per_chunk(&self) -> usize {
        self.plan.steps.len() - self.first_step
    }

    /// The GPU batches of `batch` images each, in image order (the last one smaller).
    pub fn chunks(&self, batch: usize) -> Vec<Chunk> {
        split_chunks(self.shape[0], batch.min(self.shape[0]))
    }

    /// Inference steps over all chunks of `batch` images (the progress total).
    pub fn steps_total(&self, batch: usize) -> usize {
        self.steps_per_chunk() * self.chunks(batch).len()
    }

    /// Bytes of the sampler's own buffers for `images` images: x, x̂₀, the history and the
    /// noise, plus the trajectory snapshots (read back at the end).
    pub fn sampler_bytes(&self, images: usize) -> u64 {
        let image = (self.image_len() as u64)
            .saturating_mul(4)
            .saturating_mul(images as u64);
        image
            .saturating_mul(4)
            .saturating_add(self.trajectory_bytes(images))
    }

    /// Bytes of the trajectory buffer for `images` images (one buffer: bounded by the
    /// adapter's largest buffer).
    pub fn trajectory_bytes(&self, images: usize) -> u64 {
        (2 * self.trajectory_steps.len() as u64)
            .saturating_mul(self.image_len() as u64)
            .saturating_mul(4)
            .saturating_mul(images as u64)
    }

    /// Model evaluations per image (a guided evaluation counts once).
    pub fn model_evaluations(&self) -> usize {
        self.stages.len()
    }
}

/// `num_images` in batches of `chunk` (the last one smaller).
pub fn split_chunks(num_images: usize, chunk: usize) -> Vec<Chunk> {
    let chunk = chunk.max(1);
    (0..num_images)
        .step_by(chunk)
        .map(|first_image| Chunk {
            first_image,
            images: chunk.min(num_images - first_image),
        })
        .collect()
}

/// The directory a config was read from, for messages.
fn model_dir(unet: &UNetConfig) -> String {
    match unet.source().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.display().to_string(),
        _ => "the model directory".into(),
    }
}

/// Whether `v` is finite in f32, the precision the GPU computes in.
fn fits_f32(v: f64) -> bool {
    (v as f32).is_finite()
}

/// Checks that `label` is a class of the model.
pub fn check_label(unet: &UNetConfig, label: usize) -> Result<()> {
    match unet.num_class_embeds() {
        None => Err(Error::option(
            "class_labels",
            format!(
                "the model in {} is not class-conditional (no num_class_embeds{})",
                model_dir(unet),
                if unet.context_dim().is_some() {
                    "; it is text-to-image: give prompts"
                } else {
                    ""
                }
            ),
        )),
        Some(num) if label >= num => Err(Error::option(
            "class_labels",
            format!(
                "label {label} is out of range: the model has num_class_embeds = {num} (labels 0..={})",
                num - 1
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The label for a class name (case-insensitive, from classes.json) or a decimal label.
pub fn resolve_class(unet: &UNetConfig, classes: &ClassNames, name: &str) -> Result<usize> {
    let label = match name.trim().parse::<usize>() {
        Ok(label) => label,
        Err(_) => match classes.names.get(&name.trim().to_lowercase()) {
            Some(&label) => label,
            None => {
                let known: Vec<&str> = classes.names.keys().map(String::as_str).collect();
                return Err(Error::option(
                    "class_labels",
                    if known.is_empty() {
                        format!(
                            "{name:?} is not a number and {} has no {CLASSES_FILE}",
                            model_dir(unet)
                        )
                    } else {
                        format!("unknown class {name:?}; known: {}", known.join(", "))
                    },
                ));
            }
        },
    };
    check_label(unet, label)?;
    Ok(label)
}

/// Each image's label: `class_labels` cycled, the null label of a class-conditional model
/// without them, `None` for an unconditional model.
fn image_labels(
    unet: &UNetConfig,
    classes: &ClassNames,
    options: &SampleOptions,
) -> Result<Option<Cycled<usize>>> {
    let n = options.num_images;
    match (&options.class_labels, unet.num_class_embeds()) {
        (Some(list), _) => {
            for &label in list {
                check_label(unet, label)?;
            }
            Ok(Some(Cycled::new(list.clone(), options.first_image, n)))
        }
        (None, Some(_)) => match classes.null {
            Some(null) => Ok(Some(Cycled::new(vec![null], 0, n))),
            None => Err(Error::option(
                "class_labels",
                format!(
                    "the model is class-conditional and {} names no null label (\"null\" in {CLASSES_FILE}); choose a class",
                    model_dir(unet)
                ),
            )),
        },
        (None, None) => Ok(None),
    }
}

/// Guidance of `scale` over `labels`; w = 1 and an all-null batch are plain sampling (`None`).
fn guidance(
    unet: &UNetConfig,
    classes: &ClassNames,
    labels: Option<&Cycled<usize>>,
    scale: Option<f64>,
) -> Result<Option<Guidance>> {
    let Some(scale) = scale else {
        return Ok(None);
    };
    let null_label = match (unet.num_class_embeds(), classes.null) {
        (None, _) => {
            return Err(Error::option(
                "guidance_scale",
                format!(
                    "classifier-free guidance needs a class-conditional model; {} has no num_class_embeds",
                    model_dir(unet)
                ),
            ))
        }
        (Some(_), None) => {
            return Err(Error::option(
                "guidance_scale",
                format!(
                    "classifier-free guidance needs a null label (\"null\" in {}/{CLASSES_FILE})",
                    model_dir(unet)
                ),
            ))
        }
        (Some(_), Some(null)) => null,
    };
    let all_null = labels.is_some_and(|l| l.period().iter().all(|&x| x == null_label));
    Ok(if scale == 1.0 || all_null {
        None
    } else {
        Some(Guidance {
            scale,
            null_label: Some(null_label),
        })
    })
}

/// The U-Net's sample resolution: the options' height / width divided by the decoder's
/// `upscale` (each a multiple of it), else the config's `sample_size`; checked against the
/// U-Net's down path, in image pixels when there is a decoder.
fn latent_resolution(
    unet: &UNetConfig,
    options: &SampleOptions,
    upscale: usize,
) -> Result<(usize, usize)> {
    let f = upscale.max(1);
    let mut latent = [None, None];
    for (slot, (field, v)) in latent
        .iter_mut()
        .zip([("height", options.height), ("width", options.width)])
    {
        if let Some(v) = v {
            if v == 0 || !v.is_multiple_of(f) {
                return Err(Error::option(
                    field,
                    format!(
                        "{v} is not a positive multiple of {f}: the decoder upsamples the latents                          {f}× (the VAE factor), so the image's {field} must be a multiple of it"
                    ),
                ));
            }
            *slot = Some(v / f);
        }
    }
    let (h, w) = unet.resolution(latent[0], latent[1]);
    if f == 1 {
        unet.check_resolution(h, w)?;
        return Ok((h, w));
    }
    let m = unet.downscale() * f;
    if unet.check_resolution(h, w).is_err() {
        return Err(Error::Resolution {
            height: h.saturating_mul(f),
            width: w.saturating_mul(f),
            message: format!(
                "the image's height and width must be positive multiples of {m}: the VAE factor                  {f} times the U-Net's {} (it halves the {}x{} latents {} time(s))",
                unet.downscale(),
                h,
                w,
                unet.downscale().trailing_zeros()
            ),
        });
    }
    Ok((h, w))
}

/// The guidance and per-image prompts of a text-to-image run: prompts required, guidance 7.5
/// unless given, off at ≤ 1 (diffusers' `do_classifier_free_guidance = guidance_scale > 1`),
/// negative prompts empty unless given.
fn text_run(unet: &UNetConfig, options: &SampleOptions) -> Result<(Option<Guidance>, TextRun)> {
    if options.class_labels.is_some() {
        return Err(Error::option(
            "class_labels",
            format!(
                "the model in {} is text-to-image: it takes prompts, not class labels",
                model_dir(unet)
            ),
        ));
    }
    let cycle =
        |list: &[String]| Cycled::new(list.to_vec(), options.first_image, options.num_images);
    let prompts = match &options.prompts {
        Some(list) if !list.is_empty() => cycle(list),
        _ => {
            return Err(Error::option(
                "prompts",
                format!(
                    "the model in {} is text-to-image: give at least one prompt (the empty                      prompt \"\" samples unconditionally)",
                    model_dir(unet)
                ),
            ))
        }
    };
    let scale = options.guidance_scale.unwrap_or(TEXT_GUIDANCE_DEFAULT);
    if !fits_f32(scale) {
        return Err(Error::option(
            "guidance_scale",
            format!("must be a finite number, got {scale}"),
        ));
    }
    let guidance = (scale > 1.0).then_some(Guidance {
        scale,
        null_label: None,
    });
    let negative_prompts = match (&options.negative_prompts, guidance) {
        (_, None) => Cycled::new(Vec::new(), 0, 0),
        (Some(list), Some(_)) if !list.is_empty() => cycle(list),
        (Some(_), Some(_)) => {
            return Err(Error::option(
                "negative_prompts",
                "is an empty list; give at least one (\"\" is the default)",
            ))
        }
        (None, Some(_)) => Cycled::new(vec![String::new()], 0, options.num_images),
    };
    Ok((
        guidance,
        TextRun {
            prompts,
            negative_prompts,
        },
    ))
}

/// The sampler used when none is chosen: the scheduler config's class, except that a
/// `DDPMScheduler` config samples with DDIM (η = 0), whose 20-step results are far better
/// than 20 ancestral DDPM steps; pass `ddpm` explicitly for ancestral sampling.
pub fn default_scheduler(scheduler: &SchedulerConfig) -> Result<SchedulerKind> {
    match scheduler.class_kind()? {
        SchedulerKind::Ddpm => Ok(SchedulerKind::Ddim),
        kind => Ok(kind),
    }
}

/// The step plan `options` ask for from `scheduler` (before any image-to-image truncation).
pub fn plan(scheduler: &SchedulerConfig, options: &SampleOptions) -> Result<StepPlan> {
    let kind = match options.scheduler {
        Some(kind) => kind,
        None => default_scheduler(scheduler)?,
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
        return Err(Error::option(
            "overrides.use_karras_sigmas",
            format!("the {kind} sampler has no Karras σ option (euler, heun, dpm++2m and flow-euler do)"),
        ));
    }
    if o.clip_sample.is_some()
        && !matches!(
            kind,
            SchedulerKind::Ddpm | SchedulerKind::Ddim | SchedulerKind::Heun
        )
    {
        return Err(Error::option(
            "overrides.clip_sample",
            format!("the {kind} sampler does not clip x̂₀ (ddpm, ddim and heun do)"),
        ));
    }
    if options.eta != 0.0 && kind != SchedulerKind::Ddim {
        return Err(Error::option(
            "eta",
            format!("η applies to the ddim sampler only, not {kind}"),
        ));
    }
    let mut config = scheduler.clone();
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
    let train_steps = config.settings(kind)?.num_train_timesteps;
    if options.steps > train_steps {
        return Err(Error::option(
            "steps",
            format!(
                "must lie between 1 and num_train_timesteps ({train_steps}) of {}, got {}",
                source_name(&config.source),
                options.steps
            ),
        ));
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

fn source_name(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "the scheduler config".into()
    } else {
        path.display().to_string()
    }
}

/// The image-to-image start: the first executed step, how x starts and the image. Without an
/// init image: step 0 from `init_noise_sigma · z`.
fn image_start<'a>(
    plan: &StepPlan,
    options: &'a SampleOptions,
    [c, h, w]: [usize; 3],
) -> Result<(usize, InitRule, Option<&'a [f32]>)> {
    let Some(init) = &options.init_image else {
        let rule = InitRule {
            image_coef: 0.0,
            noise_coef: plan.init_noise_sigma,
        };
        return Ok((0, rule, None));
    };
    let chw = c as u128 * h as u128 * w as u128;
    if init.image.len() as u128 != chw {
        return Err(Error::option(
            "init_image.image",
            format!("{} values, expected {c}×{h}×{w} = {chw}", init.image.len()),
        ));
    }
    let steps = plan.steps.len();
    let init_steps = ((steps as f64 * init.strength) as usize).min(steps);
    if init_steps == 0 {
        // The CLI's name for the strength is in the message too: the caller's test names it.
        return Err(Error::option(
            "init_image.strength",
            format!(
                "{} × {steps} steps rounds down to 0 steps; raise the strength (the CLI's --strength) or the steps",
                init.strength
            ),
        ));
    }
    let first = steps - init_steps;
    Ok((
        first,
        noising_rule(plan, first)?,
        Some(init.image.as_slice()),
    ))
}

/// The plan's stages from `first_step` on. A multistep solver's first executed step has no
/// previous x̂₀: it runs first order, the second-order update with the history term folded
/// into x̂₀. PNDM restarts its PLMS warm-up there, as diffusers' image-to-image pipeline does
/// ([`StepPlan::stages_from`]).
fn run_stages(plan: &StepPlan, first_step: usize) -> Result<Vec<RunStage>> {
    let mut stages: Vec<RunStage> = plan
        .stages_from(first_step)?
        .into_iter()
        .map(|(step, stage)| RunStage { step, stage })
        .collect();
    if first_step > 0 && plan.kind == SchedulerKind::DpmSolverMultistep {
        if let Some(first) = stages.first_mut() {
            first.stage.coef_x0 += first.stage.coef_history[0];
            first.stage.coef_history[0] = 0.0;
        }
    }
    Ok(stages)
}

/// Snapshot steps: every `every` steps from `first_step`, and the last step.
fn trajectory_steps(first_step: usize, num_steps: usize, every: usize) -> Vec<usize> {
    let Some(last) = num_steps.checked_sub(1) else {
        return Vec::new();
    };
    let every = every.max(1);
    (first_step..=last)
        .filter(|s| (s - first_step).is_multiple_of(every) || *s == last)
        .collect()
}

/// `x = a·image + b·z` at the noise level of plan step `step` (each sampler's `add_noise`).
fn noising_rule(plan: &StepPlan, step: usize) -> Result<InitRule> {
    let Some(rec) = plan.steps.get(step) else {
        return Err(Error::invalid(
            "noising_rule",
            format!("step {step} is past the plan's {} steps", plan.steps.len()),
        ));
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::unet_2d::config::UNet2DConfig;
    use crate::sampling::InitImage;

    const UNET_JSON: &str = r#"{
        "block_out_channels": [8, 16],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "norm_num_groups": 4,
        "sample_size": 16
    }"#;

    fn unet(num_class_embeds: Option<usize>) -> UNetConfig {
        let mut value: serde_json::Value = serde_json::from_str(UNET_JSON).unwrap();
        if let Some(num) = num_class_embeds {
            value["num_class_embeds"] = num.into();
        }
        UNetConfig::Plain(
            UNet2DConfig::from_json_str(&value.to_string(), Path::new("model/config.json"))
                .unwrap(),
        )
    }

    fn scheduler() -> SchedulerConfig {
        SchedulerConfig::from_json_str(
            r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}"#,
            Path::new("model/scheduler_config.json"),
        )
        .unwrap()
    }

    /// cat = 0, dog = 1, null = 10 (of 11 class embeddings).
    fn classes(null: Option<usize>) -> ClassNames {
        let names: BTreeMap<String, usize> = [("cat".to_owned(), 0), ("dog".to_owned(), 1)].into();
        ClassNames { names, null }
    }

    fn options(num_images: usize) -> SampleOptions {
        SampleOptions {
            scheduler: Some(SchedulerKind::Ddim),
            steps: 10,
            num_images,
            ..SampleOptions::default()
        }
    }

    fn conditional(options: &SampleOptions) -> Result<RunSpec<'_>> {
        RunSpec::prepare(&unet(Some(11)), &scheduler(), &classes(Some(10)), options)
    }

    fn unconditional(options: &SampleOptions) -> Result<RunSpec<'_>> {
        RunSpec::prepare(&unet(None), &scheduler(), &ClassNames::default(), options)
    }

    /// The field an `InvalidOption` names (panics on any other error or on success).
    fn field<T: std::fmt::Debug>(result: Result<T>) -> &'static str {
        match result {
            Err(Error::InvalidOption { field, .. }) => field,
            other => panic!("expected Error::InvalidOption, got {other:?}"),
        }
    }

    fn message<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    #[test]
    fn shape_comes_from_the_config_or_the_options() {
        let spec_options = options(3);
        let spec = unconditional(&spec_options).unwrap();
        assert_eq!(spec.shape, [3, 3, 16, 16]);
        assert_eq!(spec.image_len(), 3 * 16 * 16);
        let wide = SampleOptions {
            width: Some(32),
            ..options(1)
        };
        assert_eq!(unconditional(&wide).unwrap().shape, [1, 3, 16, 32]);
        let odd = SampleOptions {
            height: Some(17),
            ..options(1)
        };
        assert!(matches!(
            unconditional(&odd),
            Err(Error::Resolution { height: 17, .. })
        ));
    }

    #[test]
    fn cycled_values_follow_the_global_image_index_without_a_vector_per_image() {
        let c = Cycled::new(vec![7, 8, 9], 4, 5);
        assert_eq!(c.to_vec(), vec![8, 9, 7, 8, 9]);
        assert_eq!(c.period(), vec![8, 9, 7]);
        assert_eq!(c.slice(3..10), vec![8, 9]);
        assert_eq!(c.get(5), None);
        // Far indices, no overflow, and nothing allocated per image.
        let far = Cycled::new(vec![1, 2], usize::MAX, usize::MAX);
        assert_eq!(far.get(usize::MAX - 1), Some(&2));
        assert_eq!(far.period(), vec![2, 1]);
        assert!(Cycled::<usize>::new(Vec::new(), 0, 9).is_empty());
    }

    #[test]
    fn labels_cycle_over_the_images_and_default_to_the_null_label() {
        let cycled = SampleOptions {
            class_labels: Some(vec![1, 2]),
            ..options(5)
        };
        let spec = conditional(&cycled).unwrap();
        assert_eq!(
            spec.labels.as_ref().map(Cycled::to_vec),
            Some(vec![1, 2, 1, 2, 1])
        );
        assert_eq!(spec.guidance, None);

        let spec_options = options(3);
        let spec = conditional(&spec_options).unwrap();
        assert_eq!(
            spec.labels.as_ref().map(Cycled::to_vec),
            Some(vec![10, 10, 10]),
            "the null label"
        );

        let no_null = RunSpec::prepare(&unet(Some(11)), &scheduler(), &classes(None), &cycled);
        assert_eq!(spec.labels.as_ref().map(Cycled::len), Some(3));
        assert_eq!(
            no_null.unwrap().labels.as_ref().map(Cycled::to_vec),
            Some(vec![1, 2, 1, 2, 1])
        );
        let err_options = options(1);
        let err = RunSpec::prepare(&unet(Some(11)), &scheduler(), &classes(None), &err_options);
        assert!(message(err).contains("null"));

        let out_of_range = SampleOptions {
            class_labels: Some(vec![0, 11]),
            ..options(2)
        };
        let err = conditional(&out_of_range);
        assert!(message(conditional(&out_of_range)).contains("num_class_embeds = 11"));
        assert_eq!(field(err), "class_labels");
        let unconditional_label = SampleOptions {
            class_labels: Some(vec![0]),
            ..options(1)
        };
        let err = unconditional(&unconditional_label);
        assert!(message(unconditional(&unconditional_label)).contains("not class-conditional"));
        assert_eq!(field(err), "class_labels");
        let empty = SampleOptions {
            class_labels: Some(Vec::new()),
            ..options(1)
        };
        assert_eq!(field(conditional(&empty)), "class_labels");
        assert_eq!(unconditional(&options(2)).unwrap().labels, None);
    }

    #[test]
    fn guidance_doubles_the_model_rows_with_null_labels() {
        let guided = SampleOptions {
            class_labels: Some(vec![0, 1]),
            guidance_scale: Some(3.0),
            batch_size: Some(2),
            ..options(3)
        };
        let spec = conditional(&guided).unwrap();
        assert_eq!(
            spec.guidance,
            Some(Guidance {
                scale: 3.0,
                null_label: Some(10)
            })
        );
        let chunks = spec.chunks(2);
        assert_eq!(chunks.len(), 2);
        assert_eq!(spec.model_rows(&chunks[0]), 4);
        assert_eq!(spec.model_labels(&chunks[0]), Some(vec![0, 1, 10, 10]));
        assert_eq!(spec.model_rows(&chunks[1]), 2);
        assert_eq!(spec.model_labels(&chunks[1]), Some(vec![0, 10]));
        // Guidance counts one model evaluation per stage.
        assert_eq!(spec.model_evaluations(), 10);
    }

    #[test]
    fn unit_guidance_and_all_null_batches_are_plain_sampling() {
        let unit = SampleOptions {
            class_labels: Some(vec![0, 1]),
            guidance_scale: Some(1.0),
            ..options(2)
        };
        let spec = conditional(&unit).unwrap();
        assert_eq!(spec.guidance, None);
        assert_eq!(spec.model_rows(&spec.chunks(2)[0]), 2);
        assert_eq!(spec.model_labels(&spec.chunks(2)[0]), Some(vec![0, 1]));

        for labels in [None, Some(vec![10])] {
            let all_null = SampleOptions {
                class_labels: labels,
                guidance_scale: Some(4.0),
                ..options(2)
            };
            let spec = conditional(&all_null).unwrap();
            assert_eq!(spec.guidance, None, "{:?}", all_null.class_labels);
            assert_eq!(spec.model_labels(&spec.chunks(2)[0]), Some(vec![10, 10]));
        }
    }

    #[test]
    fn guidance_needs_a_class_conditional_model_with_a_null_label() {
        let guided = SampleOptions {
            class_labels: Some(vec![0]),
            guidance_scale: Some(2.0),
            ..options(1)
        };
        let no_null = RunSpec::prepare(&unet(Some(11)), &scheduler(), &classes(None), &guided);
        assert!(message(no_null).contains("null label"));
        let no_null = RunSpec::prepare(&unet(Some(11)), &scheduler(), &classes(None), &guided);
        assert_eq!(field(no_null), "guidance_scale");
        let unconditional_guided = SampleOptions {
            class_labels: None,
            ..guided.clone()
        };
        assert!(message(unconditional(&unconditional_guided)).contains("class-conditional"));
        assert_eq!(
            field(unconditional(&unconditional_guided)),
            "guidance_scale"
        );
        let nan = SampleOptions {
            guidance_scale: Some(f64::NAN),
            ..guided
        };
        assert_eq!(field(conditional(&nan)), "guidance_scale");
    }

    fn img2img(strength: f64, scheduler_kind: SchedulerKind) -> SampleOptions {
        SampleOptions {
            scheduler: Some(scheduler_kind),
            init_image: Some(InitImage {
                image: vec![0.25; 3 * 16 * 16],
                strength,
            }),
            ..options(2)
        }
    }

    #[test]
    fn image_to_image_starts_strength_of_the_way_into_the_plan() {
        let half = img2img(0.5, SchedulerKind::Ddim);
        let spec = unconditional(&half).unwrap();
        assert_eq!(spec.first_step, 5);
        assert_eq!(spec.stages.len(), 5);
        assert_eq!(spec.stages[0].step, 5);
        assert_eq!(spec.steps_per_chunk(), 5);
        let NoiseLevels::Discrete { alpha_cumprod, .. } = spec.plan.steps[5].levels else {
            panic!("DDIM has discrete levels");
        };
        assert_eq!(spec.init.image_coef, alpha_cumprod.sqrt());
        assert_eq!(spec.init.noise_coef, (1.0 - alpha_cumprod).sqrt());
        assert_eq!(spec.init_image.map(<[f32]>::len), Some(3 * 16 * 16));

        let full_options = img2img(1.0, SchedulerKind::Ddim);
        let full = unconditional(&full_options).unwrap();
        assert_eq!(full.first_step, 0);
        assert_eq!(full.stages.len(), 10);

        let plain_options = options(1);
        let plain = unconditional(&plain_options).unwrap();
        assert_eq!(plain.first_step, 0);
        assert_eq!(plain.init.image_coef, 0.0);
        assert_eq!(plain.init.noise_coef, plain.plan.init_noise_sigma);
        assert_eq!(plain.init_image, None);
    }

    #[test]
    fn image_to_image_rejects_a_strength_that_runs_no_step() {
        let tiny = img2img(0.01, SchedulerKind::Ddim);
        assert!(message(unconditional(&tiny)).contains("rounds down to 0 steps"));
        assert_eq!(field(unconditional(&tiny)), "init_image.strength");
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let options = img2img(bad, SchedulerKind::Ddim);
            assert_eq!(
                field(unconditional(&options)),
                "init_image.strength",
                "{bad}"
            );
        }
        let mut wrong_size = img2img(0.5, SchedulerKind::Ddim);
        if let Some(init) = &mut wrong_size.init_image {
            init.image.pop();
        }
        assert!(message(unconditional(&wrong_size)).contains("3×16×16 = 768"));
        assert_eq!(field(unconditional(&wrong_size)), "init_image.image");
    }

    #[test]
    fn dpm_solver_folds_the_history_of_its_first_image_to_image_step() {
        let spec_options = img2img(0.5, SchedulerKind::DpmSolverMultistep);
        let spec = unconditional(&spec_options).unwrap();
        assert_eq!(spec.first_step, 5);
        let planned = spec.plan.steps[5].stages[0];
        assert!(planned.coef_history[0] != 0.0, "step 5 is second order");
        let first = spec.stages[0].stage;
        assert_eq!(first.coef_history[0], 0.0);
        assert_eq!(first.coef_x0, planned.coef_x0 + planned.coef_history[0]);
        assert_eq!(first.coef_sample, planned.coef_sample);
        // Later steps keep their history term, and a full run is the plan unchanged.
        assert_eq!(spec.stages[1].stage, spec.plan.steps[6].stages[0]);
        let plain = SampleOptions {
            scheduler: Some(SchedulerKind::DpmSolverMultistep),
            ..options(1)
        };
        let spec = unconditional(&plain).unwrap();
        let planned: Vec<_> = spec.plan.stages().map(|(_, s)| *s).collect();
        let run: Vec<_> = spec.stages.iter().map(|s| s.stage).collect();
        assert_eq!(run, planned);
        // Other samplers start image-to-image with the plan's own stage.
        let ddim_options = img2img(0.5, SchedulerKind::Ddim);
        let ddim = unconditional(&ddim_options).unwrap();
        assert_eq!(ddim.stages[0].stage, ddim.plan.steps[5].stages[0]);
    }

    #[test]
    fn trajectory_steps_every_k_and_the_last() {
        let every = |k: usize, strength: Option<f64>| {
            let options = SampleOptions {
                trajectory_every: Some(k),
                ..match strength {
                    Some(s) => img2img(s, SchedulerKind::Ddim),
                    None => options(1),
                }
            };
            unconditional(&options).map(|spec| spec.trajectory_steps)
        };
        assert_eq!(every(3, None).unwrap(), vec![0, 3, 6, 9]);
        assert_eq!(every(4, None).unwrap(), vec![0, 4, 8, 9]);
        assert_eq!(every(1, None).unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(every(20, None).unwrap(), vec![0, 9]);
        assert_eq!(every(2, Some(0.5)).unwrap(), vec![5, 7, 9]);
        assert_eq!(field(every(0, None)), "trajectory_every");
        assert!(unconditional(&options(1))
            .unwrap()
            .trajectory_steps
            .is_empty());
    }

    #[test]
    fn given_noise_must_cover_every_image() {
        let n = 3;
        let len = 3 * 16 * 16;
        let noise: Vec<f32> = (0..n * len).map(|i| i as f32).collect();
        let given = SampleOptions {
            init_noise: Some(noise),
            batch_size: Some(2),
            ..options(n)
        };
        let spec = unconditional(&given).unwrap();
        let Ok(NoiseSource::Given(second)) = spec.chunk_noise(&spec.chunks(2)[1]) else {
            panic!("given noise");
        };
        assert_eq!(second.len(), len);
        assert_eq!(second[0], (2 * len) as f32, "chunk 2 starts at image 2");

        let short = SampleOptions {
            init_noise: Some(vec![0.0; 2 * len]),
            ..options(n)
        };
        assert!(message(unconditional(&short)).contains("expected [3, 3, 16, 16] = 2304"));
        assert_eq!(field(unconditional(&short)), "init_noise");
        let nan = SampleOptions {
            init_noise: Some(vec![f32::NAN; n * len]),
            ..options(n)
        };
        assert_eq!(field(unconditional(&nan)), "init_noise");
        let seeded_options = options(n);
        let seeded = unconditional(&seeded_options).unwrap();
        assert_eq!(seeded.init_noise, NoiseSource::Seeded);
        assert_eq!(
            seeded.chunk_noise(&seeded.chunks(n)[0]).ok(),
            Some(NoiseSource::Seeded)
        );
    }

    #[test]
    fn images_split_into_batch_size_chunks() {
        let chunks = |num_images: usize, batch_size: Option<usize>| {
            let options = SampleOptions {
                batch_size,
                ..options(num_images)
            };
            unconditional(&options).map(|spec| {
                assert_eq!(spec.batch_size, batch_size);
                // No batch size: the run picks one; these are the chunks of the largest.
                let batch = spec.batch_size.unwrap_or(num_images);
                assert_eq!(spec.steps_total(batch), 10 * spec.chunks(batch).len());
                spec.chunks(batch)
                    .iter()
                    .map(|c| (c.first_image, c.images))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(chunks(5, Some(2)).unwrap(), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(chunks(5, None).unwrap(), vec![(0, 5)]);
        assert_eq!(chunks(5, Some(9)).unwrap(), vec![(0, 5)]);
        assert_eq!(chunks(4, Some(2)).unwrap(), vec![(0, 2), (2, 2)]);
        assert_eq!(chunks(1, Some(1)).unwrap(), vec![(0, 1)]);
        assert_eq!(field(chunks(5, Some(0))), "batch_size");
        assert_eq!(split_chunks(0, 3), Vec::new());
    }

    #[test]
    fn option_errors_name_the_field_not_a_flag() {
        let cases: Vec<(SampleOptions, &str)> = vec![
            (options(0), "num_images"),
            (
                SampleOptions {
                    steps: 0,
                    ..options(1)
                },
                "steps",
            ),
            (
                SampleOptions {
                    steps: 5000,
                    ..options(1)
                },
                "steps",
            ),
            (
                SampleOptions {
                    eta: -1.0,
                    ..options(1)
                },
                "eta",
            ),
            (
                SampleOptions {
                    eta: 0.5,
                    scheduler: Some(SchedulerKind::Euler),
                    ..options(1)
                },
                "eta",
            ),
            (
                SampleOptions {
                    overrides: crate::sampling::ScheduleOverrides {
                        use_karras_sigmas: Some(true),
                        ..Default::default()
                    },
                    ..options(1)
                },
                "overrides.use_karras_sigmas",
            ),
            (
                SampleOptions {
                    scheduler: Some(SchedulerKind::Euler),
                    overrides: crate::sampling::ScheduleOverrides {
                        clip_sample: Some(true),
                        ..Default::default()
                    },
                    ..options(1)
                },
                "overrides.clip_sample",
            ),
        ];
        for (options, want) in &cases {
            let err = unconditional(options).expect_err(want);
            assert!(err.is_user_error() && !err.is_internal(), "{err}");
            let text = err.to_string();
            assert!(text.starts_with(&format!("{want}: ")), "{text}");
            assert!(!text.contains("--"), "a CLI flag in {text:?}");
            assert_eq!(field::<()>(Err(err)), *want);
        }
        let too_many = SampleOptions {
            steps: 5000,
            ..options(1)
        };
        let text = message(unconditional(&too_many));
        assert!(
            text.contains("num_train_timesteps (1000)") && text.contains("5000"),
            "{text}"
        );
        // Field-only checks need no model.
        assert_eq!(field(options(0).validate()), "num_images");
        assert!(options(1).validate().is_ok());
    }

    #[test]
    fn a_model_with_other_output_channels_cannot_sample() {
        let mut value: serde_json::Value = serde_json::from_str(UNET_JSON).unwrap();
        value["out_channels"] = 6.into();
        let cfg = UNetConfig::Plain(
            UNet2DConfig::from_json_str(&value.to_string(), Path::new("m/config.json")).unwrap(),
        );
        let err_options = options(1);
        let err = RunSpec::prepare(&cfg, &scheduler(), &ClassNames::default(), &err_options);
        assert!(
            matches!(&err, Err(Error::Config { key, .. }) if key == "out_channels"),
            "{err:?}"
        );
    }

    #[test]
    fn class_names_resolve_case_insensitively() {
        let cfg = unet(Some(11));
        let names = classes(Some(10));
        assert_eq!(resolve_class(&cfg, &names, "Dog").unwrap(), 1);
        assert_eq!(resolve_class(&cfg, &names, " 7 ").unwrap(), 7);
        let unknown = resolve_class(&cfg, &names, "bird");
        assert!(message(resolve_class(&cfg, &names, "bird")).contains("known: cat, dog"));
        assert_eq!(field(unknown), "class_labels");
        assert_eq!(field(resolve_class(&cfg, &names, "11")), "class_labels");
        assert_eq!(
            field(resolve_class(&unet(None), &names, "0")),
            "class_labels"
        );
    }

    #[test]
    fn a_slice_cycles_classes_by_global_index_and_keys_chunks_globally() {
        let slice = SampleOptions {
            class_labels: Some(vec![0, 1, 2]),
            first_image: 4,
            batch_size: Some(2),
            ..options(4)
        };
        let spec = conditional(&slice).unwrap();
        assert_eq!(spec.first_image, 4);
        // Global images 4..8 of the cycle 0, 1, 2.
        assert_eq!(
            spec.labels.as_ref().map(Cycled::to_vec),
            Some(vec![1, 2, 0, 1])
        );
        let chunks = spec.chunks(2);
        assert_eq!(spec.model_labels(&chunks[1]), Some(vec![0, 1]));
        assert_eq!(spec.global_first_image(&chunks[0]).unwrap(), 4);
        assert_eq!(spec.global_first_image(&chunks[1]).unwrap(), 6);
        let whole = SampleOptions {
            first_image: 0,
            num_images: 8,
            ..slice.clone()
        };
        let whole_labels = conditional(&whole).unwrap().labels.unwrap().to_vec();
        assert_eq!(spec.labels.unwrap().to_vec(), whole_labels[4..8]);
    }

    #[test]
    fn a_slice_past_the_u32_image_index_is_named() {
        let last = SampleOptions {
            first_image: u32::MAX as usize,
            ..options(1)
        };
        assert!(unconditional(&last).is_ok());
        for (first, n) in [(u32::MAX as usize, 2), (usize::MAX, 2), (usize::MAX - 1, 3)] {
            let bad = SampleOptions {
                first_image: first,
                ..options(n)
            };
            let text = message(unconditional(&bad));
            assert!(text.contains(&first.to_string()), "{text}");
            assert_eq!(field(unconditional(&bad)), "first_image");
        }
    }

    #[test]
    fn the_default_sampler_of_a_ddpm_config_is_ddim() {
        let default_sampler = SampleOptions {
            scheduler: None,
            ..options(1)
        };
        let spec = unconditional(&default_sampler).unwrap();
        assert_eq!(spec.plan.kind, SchedulerKind::Ddim);
        assert_eq!(spec.seed, 0);
    }
}
