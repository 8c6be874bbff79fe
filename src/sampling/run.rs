//! The GPU half of a sampling run: [`Pipeline::run`] executes a [`RunSpec`] chunk by chunk —
//! one U-Net graph per model batch size, the chunk's labels written, [`engine::run_chunk`]
//! recording, submitting and reading back — and gathers the samples and trajectory.

use crate::error::{Error, Result};
use crate::gpu::planner::{default_memory_budget, largest_fitting};
use crate::model::autoencoder::{AutoencoderGraph, DecodeOptions};
use crate::model::clip_text::PromptEncoder;
use crate::ops::non_finite::NonFiniteReport;

use super::engine::{self, ChunkJob, InitNoise};
use super::unet::{AnyGraph, UNet};
use super::{Chunk, NoiseSource, Pipeline, Progress, RunSpec, Samples, TextRun};

/// Prompts encoded per text-encoder launch: bounds its activations whatever the prompt count.
const PROMPTS_PER_ENCODE: usize = 8;

/// The text embeddings of every distinct prompt of a run, encoded once.
struct PromptTable {
    prompts: Vec<String>,
    /// `[prompts, tokens, width]`.
    embeds: Vec<f32>,
    row: usize,
}

impl PromptTable {
    fn encode(encoder: &PromptEncoder, text: &TextRun) -> Result<Self> {
        let mut prompts: Vec<String> = Vec::new();
        for p in text
            .prompts
            .period()
            .iter()
            .chain(&text.negative_prompts.period())
        {
            if !prompts.contains(p) {
                prompts.push(p.clone());
            }
        }
        let mut embeds = Vec::new();
        let mut row = 0;
        for group in prompts.chunks(PROMPTS_PER_ENCODE) {
            let encoded = encoder.encode(group)?;
            row = encoded.seq_len * encoded.hidden_size;
            embeds.extend(encoded.embeds);
        }
        Ok(PromptTable {
            prompts,
            embeds,
            row,
        })
    }

    /// The context rows of `chunk`: its images' prompts, then (with guidance) their negative
    /// prompts — the order of the model batch.
    fn rows(&self, text: &TextRun, chunk: &Chunk) -> Result<Vec<f32>> {
        let images = chunk.first_image..chunk.first_image + chunk.images;
        let mut out = Vec::new();
        for list in [&text.prompts, &text.negative_prompts] {
            if list.is_empty() {
                continue;
            }
            if images.end > list.len() {
                return Err(Error::invalid(
                    "Pipeline::run",
                    "the run spec has fewer prompts than images",
                ));
            }
            for p in &list.slice(images.clone()) {
                let i =
                    self.prompts.iter().position(|q| q == p).ok_or_else(|| {
                        Error::invalid("Pipeline::run", "a prompt was not encoded")
                    })?;
                out.extend_from_slice(&self.embeds[i * self.row..(i + 1) * self.row]);
            }
        }
        Ok(out)
    }
}

impl Pipeline {
    /// Runs a prepared [`RunSpec`] (from [`Pipeline::prepare`], or [`super::PipelineConfig::prepare`]
    /// on the same model directory) on the GPU; `progress` is called as inference steps complete.
    /// Every image is held in memory until the end: see [`Pipeline::run_each`] to stream.
    pub fn run(&self, spec: &RunSpec<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Samples> {
        let [n, _, h, w] = spec.shape;
        let mut data = Vec::new();
        let mut latents = Vec::new();
        let mut trajectory: Vec<(Vec<f32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); spec.trajectory_steps.len()];
        self.run_each(spec, progress, &mut |_, batch| {
            data.extend_from_slice(&batch.data);
            if let Some((l, _)) = &batch.latents {
                latents.extend_from_slice(l);
            }
            for (slot, (x, x0)) in trajectory.iter_mut().zip(batch.trajectory) {
                slot.0.extend_from_slice(&x);
                slot.1.extend_from_slice(&x0);
            }
            Ok(())
        })?;
        let (shape, latents) = match &self.decoder {
            None => (spec.shape, None),
            Some(decoder) => {
                let f = decoder.upscale();
                (
                    [n, decoder.out_channels(), h * f, w * f],
                    Some((latents, spec.shape)),
                )
            }
        };
        Ok(Samples {
            data,
            shape,
            trajectory_steps: spec.trajectory_steps.clone(),
            trajectory,
            plan: spec.plan.clone(),
            first_step: spec.first_step,
            model_evaluations: spec.model_evaluations(),
            latents,
        })
    }

    /// Runs `spec` like [`Pipeline::run`] but hands each GPU batch to `on_batch` as soon as it
    /// is read back — its [`Chunk`] (which images of the run) and its [`Samples`] (shape
    /// `[chunk.images, …]`) — and keeps nothing: memory stays that of one batch however many
    /// images the run makes. An error from `on_batch` stops the run.
    pub fn run_each(
        &self,
        spec: &RunSpec<'_>,
        progress: &mut dyn FnMut(Progress),
        on_batch: &mut dyn FnMut(Chunk, Samples) -> Result<()>,
    ) -> Result<()> {
        self.check_spec(spec)?;
        let [_, _, h, w] = spec.shape;
        let batch = match spec.batch_size {
            Some(b) => b,
            None => self.batch_for(spec)?,
        };
        let chunks = spec.chunks(batch);
        let steps_per_chunk = spec.steps_per_chunk();
        let steps_total = spec.steps_total(batch);
        // A latent pipeline decodes each chunk with a decode graph per chunk size.
        let mut decoders: Vec<(usize, AutoencoderGraph)> = Vec::new();
        let decode_options = DecodeOptions {
            binding_limit: spec.decode_binding_limit,
        };
        let tokens = self.context_tokens();
        // A latent pipeline's init image starts from its encoded latents.
        let encoded = match (&self.decoder, spec.init_image) {
            (Some(decoder), Some(image)) => {
                let f = decoder.upscale();
                Some(decoder.encode(image, h * f, w * f)?)
            }
            _ => None,
        };
        let init_image = encoded.as_deref().or(spec.init_image);
        let prompts = match (&spec.text, &self.prompt_encoder) {
            (Some(text), Some(encoder)) => Some((text, PromptTable::encode(encoder, text)?)),
            _ => None,
        };
        // One graph per model batch size (the last chunk may be smaller).
        let mut graphs: Vec<(usize, AnyGraph)> = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            let rows = spec.model_rows(chunk);
            let graph = match graphs.iter().position(|(b, _)| *b == rows) {
                Some(i) => &graphs[i].1,
                None => {
                    graphs.push((rows, self.model.graph(rows, h, w, tokens)?));
                    &graphs[graphs.len() - 1].1
                }
            };
            match graph {
                AnyGraph::Plain(g) => {
                    if let Some(labels) = spec.model_labels(chunk) {
                        g.write_class_labels(Some(&labels))?;
                    }
                }
                AnyGraph::Text(g) => {
                    let (text, table) = prompts.as_ref().ok_or_else(|| {
                        Error::invalid("Pipeline::run", "a text-to-image run without prompts")
                    })?;
                    g.write_context(&table.rows(text, chunk)?)?;
                }
            }
            let init_noise = match spec.chunk_noise(chunk)? {
                NoiseSource::Seeded => InitNoise::Seeded,
                NoiseSource::Given(values) => InitNoise::Given(values),
            };
            let job = ChunkJob {
                stages: &spec.stages,
                init: spec.init,
                init_noise,
                init_image,
                seed: spec.seed,
                first_image: spec.global_first_image(chunk)?,
                images: chunk.images,
                guidance: spec.guidance.map(|g| g.scale),
                trajectory_steps: &spec.trajectory_steps,
            };
            let base = k * steps_per_chunk;
            let result = engine::run_chunk(&self.ctx, graph, &job, &mut |done| {
                progress(Progress {
                    steps_done: base + done,
                    steps_total,
                })
            })?;
            let what = if self.decoder.is_some() {
                "final latents"
            } else {
                "final samples"
            };
            check_final(what, &result.non_finite, spec, chunk)?;
            let (data, latents, shape) = match &self.decoder {
                None => (result.sample, None, [chunk.images, spec.shape[1], h, w]),
                Some(decoder) => {
                    let graph = match decoders.iter().position(|(b, _)| *b == chunk.images) {
                        Some(i) => &decoders[i].1,
                        None => {
                            let graph =
                                decoder.decode_graph_with(chunk.images, h, w, &decode_options)?;
                            decoders.push((chunk.images, graph));
                            &decoders[decoders.len() - 1].1
                        }
                    };
                    let decoded = decoder.decode(graph, &result.sample)?;
                    check_decoded(&decoded, spec, chunk)?;
                    let f = decoder.upscale();
                    let latent_shape = [chunk.images, spec.shape[1], h, w];
                    (
                        decoded,
                        Some((result.sample, latent_shape)),
                        [chunk.images, decoder.out_channels(), h * f, w * f],
                    )
                }
            };
            on_batch(
                *chunk,
                Samples {
                    data,
                    shape,
                    trajectory_steps: spec.trajectory_steps.clone(),
                    trajectory: result.trajectory,
                    plan: spec.plan.clone(),
                    first_step: spec.first_step,
                    model_evaluations: spec.model_evaluations(),
                    latents,
                },
            )?;
        }
        Ok(())
    }

    /// The batch a run of `spec` uses when none is given: the largest (up to every image)
    /// whose U-Net graph plans within the adapter's binding limit, whose trajectory buffer fits
    /// its largest buffer, and whose weights + planned activations + sampler buffers fit the
    /// memory budget. The images do not depend on it (noise is keyed by image index).
    pub fn batch_for(&self, spec: &RunSpec<'_>) -> Result<usize> {
        let [n, _, h, w] = spec.shape;
        let budget = spec
            .memory_budget
            .unwrap_or_else(|| default_memory_budget(&self.ctx.adapter));
        let weights = (self.model.parameters()
            + self
                .prompt_encoder
                .as_ref()
                .map_or(0, |p| p.text_encoder.parameters)) as u64
            * 4;
        let tokens = self.context_tokens();
        let max_buffer = self.ctx.adapter.limits.max_buffer_size;
        let rows_per_image = if spec.guidance.is_some() { 2 } else { 1 };
        let mut smallest = 0;
        let decode_options = DecodeOptions {
            binding_limit: spec.decode_binding_limit,
        };
        let fits = |images: usize| -> Result<bool> {
            let memory = match self
                .model
                .plan_memory(images * rows_per_image, h, w, tokens)
            {
                Ok(memory) => memory,
                // Over the binding limit: a smaller batch may still fit.
                Err(Error::BufferTooLarge { .. }) if images > 1 => return Ok(false),
                Err(e) => return Err(e),
            };
            let decode = match &self.decoder {
                None => 0,
                Some(decoder) => match decoder.decode_plan(images, h, w, &decode_options) {
                    Ok(plan) => decoder.parameters() as u64 * 4 + plan.memory.planned_bytes,
                    Err(Error::BufferTooLarge { .. }) if images > 1 => return Ok(false),
                    Err(e) => return Err(e),
                },
            };
            let total = weights + decode + memory.planned_bytes + spec.sampler_bytes(images);
            if images == 1 {
                smallest = total;
            }
            Ok(spec.trajectory_bytes(images) <= max_buffer && total <= budget)
        };
        match largest_fitting(n, fits)? {
            0 => {
                Err(Error::option(
                    "memory_budget",
                    format!(
                    "one {h}x{w} image needs {smallest} bytes (weights, planned activations and \
                     sampler buffers{}), over the budget of {budget} bytes",
                    if spec.trajectory_steps.is_empty() { "" } else { ", trajectory" }
                ),
                ))
            }
            batch => Ok(batch),
        }
    }

    /// A spec prepared for another model (channels, conditioning) is misuse, caught before any
    /// GPU work.
    fn check_spec(&self, spec: &RunSpec<'_>) -> Result<()> {
        const OP: &str = "Pipeline::run";
        let cfg = &self.unet_config;
        if spec.text.is_some() != matches!(self.model, UNet::Text(_)) {
            return Err(Error::invalid(
                OP,
                format!(
                    "the run spec {} prompts but the model in {} is {}text-to-image; prepare it from this model",
                    if spec.text.is_some() { "has" } else { "has no" },
                    self.dir.display(),
                    if spec.text.is_some() { "not " } else { "" }
                ),
            ));
        }
        if spec.shape[1] != cfg.in_channels() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the run spec has {} channels but the model in {} takes {}; prepare it from this model",
                    spec.shape[1],
                    self.dir.display(),
                    cfg.in_channels()
                ),
            ));
        }
        if spec.labels.is_some() != cfg.num_class_embeds().is_some() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the run spec {} class labels but the model in {} is {}class-conditional; prepare it from this model",
                    if spec.labels.is_some() { "has" } else { "has no" },
                    self.dir.display(),
                    if cfg.num_class_embeds().is_some() { "" } else { "not " }
                ),
            ));
        }
        Ok(())
    }

    /// Text tokens per prompt of a text-to-image pipeline (0 otherwise).
    fn context_tokens(&self) -> usize {
        self.prompt_encoder
            .as_ref()
            .map_or(0, |p| p.tokenizer.model_max_length())
    }
}

/// Never a silent black image: the GPU's non-finite check of a chunk's final samples (or
/// latents) must have seen nothing. The error names the first bad image (global index) and the
/// first inference step after which x already held a non-finite value.
fn check_final(
    what: &str,
    report: &NonFiniteReport,
    spec: &RunSpec<'_>,
    chunk: &Chunk,
) -> Result<()> {
    if report.count == 0 {
        return Ok(());
    }
    let [_, c, h, w] = spec.shape;
    let per_image = (c * h * w).max(1);
    let first = report.first_index.unwrap_or(0) as usize;
    let first_step = report.first_step.map_or_else(String::new, |step| {
        format!(
            " (first seen after step {} of {})",
            step as usize + 1,
            spec.plan.steps.len()
        )
    });
    Err(Error::NonFinite {
        what: what.to_owned(),
        count: report.count as usize,
        image: spec.first_image + chunk.first_image + first / per_image,
        first_step,
    })
}

/// The decoded images of a latent pipeline (read back for writing anyway, so this costs one
/// pass over memory and no transfer) must be finite; the error names the first bad image.
fn check_decoded(values: &[f32], spec: &RunSpec<'_>, chunk: &Chunk) -> Result<()> {
    let Some(first) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let count = values.iter().filter(|v| !v.is_finite()).count();
    let per_image = (values.len() / chunk.images.max(1)).max(1);
    Err(Error::NonFinite {
        what: "decoded images".to_owned(),
        count,
        image: spec.first_image + chunk.first_image + first / per_image,
        first_step: String::new(),
    })
}
