//! The GPU half of a sampling run: [`Pipeline::run`] executes a [`RunSpec`] chunk by chunk —
//! one U-Net graph per model batch size, the chunk's labels written, [`engine::run_chunk`]
//! recording, submitting and reading back — and gathers the samples and trajectory.

use crate::error::{Error, Result};
use crate::gpu::planner::{default_memory_budget, largest_fitting};
use crate::model::autoencoder::{AutoencoderGraph, DecodeOptions};
use crate::model::clip_text::PromptEncoder;
use crate::ops::non_finite::NonFiniteReport;

use super::engine::{self, ChunkJob, InitNoise};
use super::memory::{Offload, Phase, PhaseMemory, PipelineMemory};
use super::unet::AnyGraph;
use super::{Chunk, NoiseSource, Pipeline, Progress, RunSpec, Samples, TextRun};

/// Under [`Offload::Parts`], the latents sampled before the decoder takes the GPU: bounds the
/// CPU memory of a group while the U-Net is uploaded once per group.
pub const LATENTS_PER_GROUP: u64 = 256 << 20;

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
        let (shape, latents) = match &self.decoder_config {
            None => (spec.shape, None),
            Some(decoder) => {
                let f = decoder.upscale();
                (
                    [n, decoder.out_channels(), h * f, w * f],
                    Some((latents, spec.shape)),
                )
            }
        };
        Ok(self.samples(spec, data, shape, trajectory, latents))
    }

    /// Runs `spec` like [`Pipeline::run`] but hands each GPU batch to `on_batch` as soon as it
    /// is read back — its [`Chunk`] (which images of the run) and its [`Samples`] (shape
    /// `[chunk.images, …]`) — and keeps nothing: memory stays that of one batch however many
    /// images the run makes. An error from `on_batch` stops the run.
    ///
    /// Phases: the prompts are encoded, an image-to-image start encoded, then batches are
    /// sampled and decoded. With every part resident each batch is decoded as soon as it is
    /// sampled; under [`Offload::Parts`] a group of batches is sampled (their latents kept on
    /// the CPU, at most [`LATENTS_PER_GROUP`] bytes) with only the U-Net on the GPU, then
    /// decoded with only the decoder there, so each phase holds its own part alone.
    pub fn run_each(
        &self,
        spec: &RunSpec<'_>,
        progress: &mut dyn FnMut(Progress),
        on_batch: &mut dyn FnMut(Chunk, Samples) -> Result<()>,
    ) -> Result<()> {
        let result = self.run_phases(spec, progress, on_batch);
        self.release_parts();
        result
    }

    fn run_phases(
        &self,
        spec: &RunSpec<'_>,
        progress: &mut dyn FnMut(Progress),
        on_batch: &mut dyn FnMut(Chunk, Samples) -> Result<()>,
    ) -> Result<()> {
        self.check_spec(spec)?;
        let parts = self.offload == Offload::Parts;
        let [_, _, h, w] = spec.shape;
        let prompts = match &spec.text {
            Some(text) => Some((text, self.encode_prompts(spec, text)?)),
            None => None,
        };
        // A latent pipeline's init image starts from its encoded latents.
        let decoder = match spec.init_image {
            Some(_) => self.decoder()?,
            None => None,
        };
        let encoded = match (decoder, spec.init_image) {
            (Some(decoder), Some(image)) => {
                let f = decoder.upscale();
                let latents = decoder.encode(image, h * f, w * f)?;
                if parts {
                    self.decoder.release();
                }
                Some(latents)
            }
            _ => None,
        };
        let init_image = encoded.as_deref().or(spec.init_image);
        let batch = match spec.batch_size {
            Some(b) => b,
            None => self.batch_for(spec)?,
        };
        let chunks = spec.chunks(batch);
        let steps_per_chunk = spec.steps_per_chunk();
        let steps_total = spec.steps_total(batch);
        let decode_options = DecodeOptions {
            binding_limit: spec.decode_binding_limit,
        };
        let tokens = self.context_tokens();
        // Resident: a group is one batch. Offloaded: as many batches as LATENTS_PER_GROUP holds.
        let group_len = if parts && self.decoder_config.is_some() {
            let per_chunk = (spec.image_len() * 4 * batch) as u64;
            usize::try_from(LATENTS_PER_GROUP / per_chunk.max(1))
                .unwrap_or(usize::MAX)
                .max(1)
        } else {
            1
        };
        // One U-Net graph per model batch size (the last chunk may be smaller), and one decode
        // graph per batch size; kept across groups while the parts stay resident.
        let mut graphs: Vec<(usize, AnyGraph)> = Vec::new();
        let mut decoders: Vec<(usize, AutoencoderGraph)> = Vec::new();
        for (g, group) in chunks.chunks(group_len).enumerate() {
            let mut sampled = Vec::with_capacity(group.len());
            let unet = self.unet()?;
            for (i, chunk) in group.iter().enumerate() {
                let rows = spec.model_rows(chunk);
                let graph = match graphs.iter().position(|(b, _)| *b == rows) {
                    Some(i) => &graphs[i].1,
                    None => {
                        graphs.push((rows, unet.graph(rows, h, w, tokens)?));
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
                let base = (g * group_len + i) * steps_per_chunk;
                let result = engine::run_chunk(&self.ctx, graph, &job, &mut |done| {
                    progress(Progress {
                        steps_done: base + done,
                        steps_total,
                    })
                })?;
                let what = if self.decoder_config.is_some() {
                    "final latents"
                } else {
                    "final samples"
                };
                check_final(what, &result.non_finite, spec, chunk)?;
                if self.decoder_config.is_some() {
                    sampled.push((*chunk, result));
                } else {
                    let shape = [chunk.images, spec.shape[1], h, w];
                    on_batch(
                        *chunk,
                        self.samples(spec, result.sample, shape, result.trajectory, None),
                    )?;
                }
            }
            drop(unet);
            // Only the decoder needs the U-Net's memory (a pixel-space model keeps it).
            if parts && self.decoder_config.is_some() {
                graphs.clear();
                self.unet.release();
            }
            let Some(decoder) = self.decoder()? else {
                continue;
            };
            for (chunk, result) in sampled {
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
                check_decoded(&decoded, spec, &chunk)?;
                let f = decoder.upscale();
                let latent_shape = [chunk.images, spec.shape[1], h, w];
                let shape = [chunk.images, decoder.out_channels(), h * f, w * f];
                on_batch(
                    chunk,
                    self.samples(
                        spec,
                        decoded,
                        shape,
                        result.trajectory,
                        Some((result.sample, latent_shape)),
                    ),
                )?;
            }
            drop(decoder);
            if parts {
                decoders.clear();
                self.decoder.release();
            }
        }
        Ok(())
    }

    /// One batch's [`Samples`].
    fn samples(
        &self,
        spec: &RunSpec<'_>,
        data: Vec<f32>,
        shape: [usize; 4],
        trajectory: Vec<(Vec<f32>, Vec<f32>)>,
        latents: Option<(Vec<f32>, [usize; 4])>,
    ) -> Samples {
        Samples {
            data,
            shape,
            trajectory_steps: spec.trajectory_steps.clone(),
            trajectory,
            plan: spec.plan.clone(),
            first_step: spec.first_step,
            model_evaluations: spec.model_evaluations(),
            latents,
        }
    }

    /// The prompt phase: every distinct prompt encoded once (the text encoder freed afterwards
    /// under [`Offload::Parts`]), after checking the phase fits the memory budget.
    fn encode_prompts(&self, spec: &RunSpec<'_>, text: &TextRun) -> Result<PromptTable> {
        let encoder = self.prompt_encoder()?.ok_or_else(|| {
            Error::invalid(
                "Pipeline::run",
                "a text-to-image run on a model without a text encoder",
            )
        })?;
        if self.offload == Offload::Parts && spec.batch_size.is_none() {
            let phase = self.text_phase(&encoder)?;
            let budget = self.budget(spec);
            if phase.total() > budget {
                return Err(over_budget(
                    &PipelineMemory {
                        phases: vec![phase],
                    },
                    self.offload,
                    budget,
                ));
            }
        }
        let table = PromptTable::encode(&encoder, text)?;
        drop(encoder);
        if self.offload == Offload::Parts {
            self.prompt_encoder.release();
        }
        Ok(table)
    }

    /// The prompt phase's memory: the text encoder's weights and one launch's activations.
    pub(super) fn text_phase(&self, encoder: &PromptEncoder) -> Result<PhaseMemory> {
        Ok(PhaseMemory {
            phase: Phase::TextEncode,
            weights: encoder.text_encoder.parameters as u64 * 4,
            activations: encoder
                .text_encoder
                .plan_memory(PROMPTS_PER_ENCODE, encoder.tokenizer.model_max_length())?
                .planned_bytes,
        })
    }

    /// The memory budget a run of `spec` plans against.
    fn budget(&self, spec: &RunSpec<'_>) -> u64 {
        spec.memory_budget
            .unwrap_or_else(|| default_memory_budget(&self.ctx.adapter))
    }

    /// The memory plan of a run of `spec` at `images` per batch, phase by phase (the text
    /// encoder's at one launch of [`PROMPTS_PER_ENCODE`] prompts). Loads the parts it plans
    /// (each freed again under [`Offload::Parts`]); `Ok(None)` when a buffer of that batch
    /// would pass the binding limit.
    pub fn memory(&self, spec: &RunSpec<'_>, images: usize) -> Result<Option<PipelineMemory>> {
        let text = match self.prompt_encoder()? {
            Some(encoder) => Some(self.text_phase(&encoder)?),
            None => None,
        };
        if self.offload == Offload::Parts {
            self.prompt_encoder.release();
        }
        let plan = self.plan_phases(spec, images, text);
        if self.offload == Offload::Parts {
            self.decoder.release();
        }
        plan
    }

    /// [`Pipeline::memory`] with the text phase given (it does not depend on the batch).
    fn plan_phases(
        &self,
        spec: &RunSpec<'_>,
        images: usize,
        text: Option<PhaseMemory>,
    ) -> Result<Option<PipelineMemory>> {
        let [_, _, h, w] = spec.shape;
        let rows_per_image = if spec.guidance.is_some() { 2 } else { 1 };
        let unet = self.unet()?;
        let activations =
            match unet.plan_memory(images * rows_per_image, h, w, self.context_tokens()) {
                Ok(memory) => memory.planned_bytes,
                Err(Error::BufferTooLarge { .. }) if images > 1 => return Ok(None),
                Err(e) => return Err(e),
            };
        let mut phases: Vec<PhaseMemory> = text.into_iter().collect();
        phases.push(PhaseMemory {
            phase: Phase::Sampling,
            weights: unet.parameters() as u64 * 4,
            activations: activations + spec.sampler_bytes(images),
        });
        if let Some(decoder) = self.decoder()? {
            let decode_options = DecodeOptions {
                binding_limit: spec.decode_binding_limit,
            };
            let plan = match decoder.decode_plan(images, h, w, &decode_options) {
                Ok(plan) => plan,
                Err(Error::BufferTooLarge { .. }) if images > 1 => return Ok(None),
                Err(e) => return Err(e),
            };
            phases.push(PhaseMemory {
                phase: Phase::Decode,
                weights: decoder.parameters() as u64 * 4,
                activations: plan.memory.planned_bytes,
            });
        }
        Ok(Some(PipelineMemory { phases }))
    }

    /// The batch a run of `spec` uses when none is given: the largest (up to every image)
    /// whose buffers plan within the adapter's binding limit, whose trajectory buffer fits its
    /// largest buffer, and whose [`PipelineMemory`] peak — every part resident, or the largest
    /// phase under [`Offload::Parts`] — fits the memory budget. The images do not depend on it
    /// (noise is keyed by image index).
    pub fn batch_for(&self, spec: &RunSpec<'_>) -> Result<usize> {
        let [n, _, h, w] = spec.shape;
        let budget = self.budget(spec);
        let max_buffer = self.ctx.adapter.limits.max_buffer_size;
        let text = match self.prompt_encoder.loaded() {
            Some(encoder) => Some(self.text_phase(&encoder)?),
            // Offloaded and not loaded: the prompt phase was checked on its own.
            None if self.offload == Offload::Parts => None,
            None => match self.prompt_encoder()? {
                Some(encoder) => Some(self.text_phase(&encoder)?),
                None => None,
            },
        };
        let mut smallest: Option<PipelineMemory> = None;
        let fits = |images: usize| -> Result<bool> {
            let Some(plan) = self.plan_phases(spec, images, text)? else {
                return Ok(false);
            };
            let ok =
                spec.trajectory_bytes(images) <= max_buffer && plan.peak(self.offload) <= budget;
            if images == 1 {
                smallest = Some(plan);
            }
            Ok(ok)
        };
        let batch = largest_fitting(n, fits);
        if self.offload == Offload::Parts {
            self.decoder.release();
        }
        match batch? {
            0 => {
                let plan = smallest.unwrap_or_default();
                let mut err = over_budget(&plan, self.offload, budget);
                if let Error::InvalidOption { message, .. } = &mut err {
                    message.insert_str(0, &format!("one {h}x{w} image: "));
                    if !spec.trajectory_steps.is_empty() {
                        message.push_str(" (the trajectory's snapshots included)");
                    }
                }
                Err(err)
            }
            batch => Ok(batch),
        }
    }

    /// A spec prepared for another model (channels, conditioning) is misuse, caught before any
    /// GPU work.
    fn check_spec(&self, spec: &RunSpec<'_>) -> Result<()> {
        const OP: &str = "Pipeline::run";
        let cfg = &self.unet_config;
        if spec.text.is_some() != self.text_config.is_some() {
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
    pub fn context_tokens(&self) -> usize {
        self.text_config.as_ref().map_or(0, |t| t.tokens)
    }
}

/// The error of a plan over the budget: what each phase needs, and the offload mode that
/// would fit when there is one.
fn over_budget(plan: &PipelineMemory, offload: Offload, budget: u64) -> Error {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    let phases: Vec<String> = plan
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {} + {}",
                p.phase.name(),
                mib(p.weights),
                mib(p.activations)
            )
        })
        .collect();
    let (parts_peak, _) = plan.parts_peak();
    let hint = if offload != Offload::Parts && plan.phases.len() > 1 && parts_peak <= budget {
        format!(
            "; one part at a time (offload parts) it needs {}, which fits",
            mib(parts_peak)
        )
    } else {
        String::new()
    };
    Error::option(
        "memory_budget",
        format!(
            "needs {} with {} (weights + activations per phase: {}), over the budget of {} \
             ({budget} bytes){hint}",
            mib(plan.peak(offload)),
            if offload == Offload::Parts {
                "one part at a time"
            } else {
                "every part resident"
            },
            phases.join(", "),
            mib(budget)
        ),
    )
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
