//! The GPU half of a sampling run: [`Pipeline::run`] executes a [`RunSpec`] chunk by chunk —
//! one U-Net graph per model batch size, the chunk's labels written, [`engine::run_chunk`]
//! recording, submitting and reading back — and gathers the samples and trajectory.

use crate::error::{Error, Result};
use crate::gpu::planner::{default_memory_budget, largest_fitting};
use crate::model::autoencoder::{AutoencoderGraph, DecodeOptions};
use crate::model::unet_2d::UNetGraph;

use super::engine::{self, ChunkJob, InitNoise};
use super::{NoiseSource, Pipeline, Progress, RunSpec, Samples};

impl Pipeline {
    /// Runs a prepared [`RunSpec`] (from [`Pipeline::prepare`], or [`super::PipelineConfig::prepare`]
    /// on the same model directory) on the GPU; `progress` is called as inference steps complete.
    pub fn run(&self, spec: &RunSpec<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Samples> {
        self.check_spec(spec)?;
        let [n, _, h, w] = spec.shape;
        let batch = match spec.batch_size {
            Some(b) => b,
            None => self.batch_for(spec)?,
        };
        let chunks = spec.chunks(batch);
        let steps_per_chunk = spec.steps_per_chunk();
        let steps_total = spec.steps_total(batch);
        let mut data = Vec::new();
        let mut latents = Vec::new();
        // A latent pipeline decodes each chunk with a decode graph per chunk size.
        let mut decoders: Vec<(usize, AutoencoderGraph)> = Vec::new();
        let decode_options = DecodeOptions {
            binding_limit: spec.decode_binding_limit,
        };
        let mut trajectory: Vec<(Vec<f32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); spec.trajectory_steps.len()];
        // One graph per model batch size (the last chunk may be smaller).
        let mut graphs: Vec<(usize, UNetGraph)> = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            let rows = spec.model_rows(chunk);
            let graph = match graphs.iter().position(|(b, _)| *b == rows) {
                Some(i) => &graphs[i].1,
                None => {
                    graphs.push((rows, self.model.graph(rows, h, w)?));
                    &graphs[graphs.len() - 1].1
                }
            };
            if let Some(labels) = spec.model_labels(chunk) {
                graph.write_class_labels(Some(&labels))?;
            }
            let init_noise = match spec.chunk_noise(chunk)? {
                NoiseSource::Seeded => InitNoise::Seeded,
                NoiseSource::Given(values) => InitNoise::Given(values),
            };
            let job = ChunkJob {
                stages: &spec.stages,
                init: spec.init,
                init_noise,
                init_image: spec.init_image,
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
            match &self.decoder {
                None => data.extend_from_slice(&result.sample),
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
                    data.extend(decoder.decode(graph, &result.sample)?);
                    latents.extend_from_slice(&result.sample);
                }
            }
            for (slot, (x, x0)) in trajectory.iter_mut().zip(result.trajectory) {
                slot.0.extend_from_slice(&x);
                slot.1.extend_from_slice(&x0);
            }
        }
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

    /// The batch a run of `spec` uses when none is given: the largest (up to every image)
    /// whose U-Net graph plans within the adapter's binding limit, whose trajectory buffer fits
    /// its largest buffer, and whose weights + planned activations + sampler buffers fit the
    /// memory budget. The images do not depend on it (noise is keyed by image index).
    pub fn batch_for(&self, spec: &RunSpec<'_>) -> Result<usize> {
        let [n, _, h, w] = spec.shape;
        let budget = spec
            .memory_budget
            .unwrap_or_else(|| default_memory_budget(&self.ctx.adapter));
        let weights = self.model.parameters as u64 * 4;
        let max_buffer = self.ctx.adapter.limits.max_buffer_size;
        let rows_per_image = if spec.guidance.is_some() { 2 } else { 1 };
        let mut smallest = 0;
        let decode_options = DecodeOptions {
            binding_limit: spec.decode_binding_limit,
        };
        let fits = |images: usize| -> Result<bool> {
            let memory = match self.model.plan_memory(images * rows_per_image, h, w) {
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
        let cfg = &self.model.config;
        if spec.shape[1] != cfg.in_channels {
            return Err(Error::invalid(
                OP,
                format!(
                    "the run spec has {} channels but the model in {} takes {}; prepare it from this model",
                    spec.shape[1],
                    self.dir.display(),
                    cfg.in_channels
                ),
            ));
        }
        if spec.labels.is_some() != cfg.num_class_embeds.is_some() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the run spec {} class labels but the model in {} is {}class-conditional; prepare it from this model",
                    if spec.labels.is_some() { "has" } else { "has no" },
                    self.dir.display(),
                    if cfg.num_class_embeds.is_some() { "" } else { "not " }
                ),
            ));
        }
        Ok(())
    }
}
