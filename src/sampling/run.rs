//! The GPU half of a sampling run: [`Pipeline::run`] executes a [`RunSpec`] chunk by chunk —
//! one U-Net graph per model batch size, the chunk's labels written, [`engine::run_chunk`]
//! recording, submitting and reading back — and gathers the samples and trajectory.

use crate::error::{Error, Result};
use crate::model::unet_2d::UNetGraph;

use super::engine::{self, ChunkJob, InitNoise};
use super::{NoiseSource, Pipeline, Progress, RunSpec, Samples};

impl Pipeline {
    /// Runs a prepared [`RunSpec`] (from [`Pipeline::prepare`], or [`super::PipelineConfig::prepare`]
    /// on the same model directory) on the GPU; `progress` is called as inference steps complete.
    pub fn run(&self, spec: &RunSpec<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Samples> {
        self.check_spec(spec)?;
        let [n, _, h, w] = spec.shape;
        let steps_per_chunk = spec.steps_per_chunk();
        let steps_total = spec.steps_total();
        let mut data = Vec::with_capacity(n * spec.image_len());
        let mut trajectory: Vec<(Vec<f32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); spec.trajectory_steps.len()];
        // One graph per model batch size (the last chunk may be smaller).
        let mut graphs: Vec<(usize, UNetGraph)> = Vec::new();
        for (k, chunk) in spec.chunks.iter().enumerate() {
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
                first_image: chunk.first_image,
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
            data.extend_from_slice(&result.sample);
            for (slot, (x, x0)) in trajectory.iter_mut().zip(result.trajectory) {
                slot.0.extend_from_slice(&x);
                slot.1.extend_from_slice(&x0);
            }
        }
        Ok(Samples {
            data,
            shape: spec.shape,
            trajectory_steps: spec.trajectory_steps.clone(),
            trajectory,
            plan: spec.plan.clone(),
            first_step: spec.first_step,
            model_evaluations: spec.model_evaluations(),
        })
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
        let covered: usize = spec.chunks.iter().map(|c| c.images).sum();
        if covered != spec.shape[0] {
            return Err(Error::invalid(
                OP,
                format!(
                    "the run spec's chunks hold {covered} images, expected {}",
                    spec.shape[0]
                ),
            ));
        }
        Ok(())
    }
}
