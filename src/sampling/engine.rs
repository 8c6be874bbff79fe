//! The GPU sampling loop for one chunk of images: the plan's stages become dispatches
//! (`rng.wgsl` noise where a stage draws it, the U-Net's forward graph, `sampler_step.wgsl`'s
//! update), recorded once, submitted one inference step per command buffer with at most
//! [`IN_FLIGHT`] steps queued, and read back once at the end. Every stage's update parameters
//! share one uniform buffer and one bind group (dynamic offsets), and so do the noise draws:
//! the number of buffers and bind groups a run creates does not depend on its number of steps.
//!
//! The update kernel also writes the network's next input (`model_input_scale · x`, duplicated
//! for classifier-free guidance) and next timesteps, so between two forward passes nothing
//! leaves the GPU and nothing is uploaded.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::unet_2d::UNetGraph;
use crate::ops::elementwise::to_u32;
use crate::ops::non_finite::{
    non_finite_checks, non_finite_status, NonFiniteChecks, NonFiniteReport,
};
use crate::ops::rng::{normal_noise_steps, NoiseKey, NormalNoiseSteps};
use crate::ops::sampler_step::{
    sampler_steps, SamplerState, SamplerSteps, StageUpdate, StepParams, StepShape,
};
use crate::schedule::Stage;

/// Inference steps queued on the GPU before the CPU waits for the oldest (progress reporting
/// without draining the queue).
pub const IN_FLIGHT: usize = 2;

/// Philox stream of the initial noise x_T.
pub const STREAM_INIT: u32 = 0;
/// Philox stream of the per-step noise (keyed by the inference step index).
pub const STREAM_STEP: u32 = 1;

/// A network the sampler drives: a fixed batch, its input / timestep / output tensors and the
/// dispatches of one evaluation (the U-Net's forward graph, or a test model).
pub trait Denoiser {
    /// Rows of the input batch.
    fn batch(&self) -> usize;
    /// Network input [B, C, H, W].
    fn input(&self) -> &Tensor;
    /// Timesteps [B] (f32).
    fn timesteps(&self) -> &Tensor;
    /// Network output [B, C, H, W].
    fn output(&self) -> &Tensor;
    /// The launches of one evaluation, in order.
    fn dispatches(&self) -> &[Dispatch];
}

impl Denoiser for UNetGraph {
    fn batch(&self) -> usize {
        self.batch
    }
    fn input(&self) -> &Tensor {
        &self.sample
    }
    fn timesteps(&self) -> &Tensor {
        &self.timesteps
    }
    fn output(&self) -> &Tensor {
        &self.output
    }
    fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }
}

/// One stage of a run: its inference step index (the noise key) and its update.
#[derive(Debug, Clone, Copy)]
pub struct RunStage {
    pub step: usize,
    pub stage: Stage,
}

/// How x starts: `x = image_coef · image + noise_coef · z`.
#[derive(Debug, Clone, Copy)]
pub struct InitRule {
    pub image_coef: f64,
    pub noise_coef: f64,
}

/// Where the starting noise z comes from.
pub enum InitNoise<'a> {
    /// Philox, stream [`STREAM_INIT`], step 0, keyed by the global image index.
    Seeded,
    /// Given values for this chunk's images ([n, C, H, W] flattened).
    Given(&'a [f32]),
}

/// Everything one chunk's run needs besides the graph.
pub struct ChunkJob<'a> {
    pub stages: &'a [RunStage],
    pub init: InitRule,
    pub init_noise: InitNoise<'a>,
    /// One image [C, H, W] for image-to-image, or `None`.
    pub init_image: Option<&'a [f32]>,
    pub seed: u64,
    /// Global index of the chunk's first image.
    pub first_image: usize,
    /// Images in this chunk.
    pub images: usize,
    /// Classifier-free guidance scale; `Some` doubles the model batch.
    pub guidance: Option<f64>,
    /// Inference-step indices after which x and x̂₀ are kept for a trajectory.
    pub trajectory_steps: &'a [usize],
}

/// One stage's own launches: its noise (when it draws any) and its update; the forward pass
/// runs between them.
struct StageDispatches {
    noise: Option<Dispatch>,
    update: Dispatch,
}

/// What a chunk's run produced.
#[derive(Debug, Clone)]
pub struct ChunkResult {
    /// The final sample [n, C, H, W].
    pub sample: Vec<f32>,
    /// Per trajectory step: (x after the step, x̂₀ of its last stage), each [n, C, H, W].
    pub trajectory: Vec<(Vec<f32>, Vec<f32>)>,
    /// What the GPU's non-finite check saw in x after each inference step (the final count and
    /// first element are the final sample's).
    pub non_finite: NonFiniteReport,
}

/// Runs one chunk through `graph` (a [`Denoiser`] whose batch is `images`, or `2 · images` with guidance, and
/// whose class labels are already written). `on_step(done)` is called as inference steps
/// complete on the GPU (`done` counts this chunk's steps).
pub fn run_chunk(
    ctx: &GpuContext,
    graph: &dyn Denoiser,
    job: &ChunkJob,
    on_step: &mut dyn FnMut(usize),
) -> Result<ChunkResult> {
    const OP: &str = "sampler";
    let n = job.images;
    let rows = if job.guidance.is_some() { 2 * n } else { n };
    if graph.batch() != rows {
        return Err(Error::invalid(
            OP,
            format!(
                "the model graph has batch {} but the chunk needs {rows}",
                graph.batch()
            ),
        ));
    }
    if job.stages.is_empty() {
        return Err(Error::invalid(OP, "the plan has no stages"));
    }
    let out_shape = &graph.output().shape;
    let in_shape = &graph.input().shape;
    if out_shape != in_shape {
        return Err(Error::invalid(
            OP,
            format!(
                "the model maps {in_shape:?} to {out_shape:?}; sampling needs out_channels = in_channels"
            ),
        ));
    }
    let chw: usize = in_shape[1..].iter().product();
    let shape = [n, in_shape[1], in_shape[2], in_shape[3]];
    let numel = to_u32(OP, "elements", n * chw)?;
    let rows_u = to_u32(OP, "model batch", rows)?;
    if rows > n * chw {
        return Err(Error::invalid(OP, "images must hold at least 2 elements"));
    }
    let first_image = to_u32(OP, "first image index", job.first_image)?;

    let x = Tensor::zeros(ctx, &shape, "sampler x")?;
    // The history slots the stages use, one after the other (one for most samplers).
    let history_slots = job
        .stages
        .iter()
        .map(|rs| rs.stage.history_slots())
        .max()
        .unwrap_or(1);
    let hist = Tensor::zeros(
        ctx,
        &[history_slots * n, shape[1], shape[2], shape[3]],
        "sampler history",
    )?;
    let x0 = Tensor::zeros(ctx, &shape, "sampler x0")?;
    let noise = Tensor::zeros(ctx, &shape, "sampler noise")?;
    let image = match job.init_image {
        Some(img) => {
            if img.len() != chw {
                return Err(Error::invalid(
                    OP,
                    format!("init image has {} values, expected {chw}", img.len()),
                ));
            }
            Some(Tensor::from_slice(ctx, &shape[1..], img, "init image")?)
        }
        None => None,
    };
    let step_shape = StepShape {
        numel,
        rows: rows_u,
        guidance: job.guidance,
        history_slots: to_u32(OP, "history slots", history_slots)?,
    };
    // Noise keys, in recording order: the initial z (when seeded), then each stage that draws.
    let seeded = matches!(job.init_noise, InitNoise::Seeded);
    if let InitNoise::Given(values) = job.init_noise {
        noise.write(ctx, values)?;
    }
    let init_key = seeded.then_some(NoiseKey {
        step: 0,
        stream: STREAM_INIT,
    });
    let mut keys: Vec<NoiseKey> = init_key.into_iter().collect();
    for rs in job.stages.iter().filter(|rs| draws_noise(&rs.stage)) {
        keys.push(NoiseKey {
            step: to_u32(OP, "step", rs.step)?,
            stream: STREAM_STEP,
        });
    }
    let mut draws = normal_noise_steps(
        ctx,
        &NormalNoiseSteps {
            out: &noise,
            seed: job.seed,
            first_image,
            keys: &keys,
        },
        "noise",
    )?
    .into_iter();
    let mut next_draw = || {
        draws
            .next()
            .ok_or_else(|| Error::invalid(OP, "fewer noise launches than noise keys"))
    };

    let first = &job.stages[0].stage;
    let updates: Vec<StageUpdate> = job
        .stages
        .iter()
        .enumerate()
        .map(|(i, rs)| StageUpdate {
            params: StepParams::stage(
                &rs.stage,
                job.stages.get(i + 1).map(|r| &r.stage),
                step_shape,
            ),
            label: format!("step {} t={}", rs.step, rs.stage.model_timestep),
        })
        .collect();
    let launches = sampler_steps(
        ctx,
        &SamplerSteps {
            state: SamplerState {
                noise: &noise,
                x: &x,
                hist: &hist,
                model_in: graph.input(),
                timesteps: graph.timesteps(),
                x0: &x0,
            },
            init_src: image.as_ref().unwrap_or(&noise),
            model_output: graph.output(),
            init: StepParams::init(
                first,
                image.as_ref().map(|_| job.init.image_coef),
                job.init.noise_coef,
                step_shape,
            ),
            stages: &updates,
        },
        "sampler",
    )?;

    // Setup: z, then x = b·image + d·z, the first model input and timesteps.
    let mut setup: Vec<Dispatch> = Vec::new();
    if seeded {
        setup.push(next_draw()?);
    }
    setup.push(launches.init);

    // The stages of each inference step, in order.
    let mut steps: Vec<(usize, Vec<StageDispatches>)> = Vec::new();
    for (rs, update) in job.stages.iter().zip(launches.updates) {
        let sd = StageDispatches {
            noise: if draws_noise(&rs.stage) {
                Some(next_draw()?)
            } else {
                None
            },
            update,
        };
        match steps.last_mut() {
            Some((s, list)) if *s == rs.step => list.push(sd),
            _ => steps.push((rs.step, vec![sd])),
        }
    }

    // Never a silent black image: after each inference step a reduction records on the GPU
    // whether x holds NaN / ±inf and the first step where it did; 16 bytes are read back at the
    // end instead of scanning the sample on the CPU.
    let status = non_finite_status(ctx, "sampler non-finite status")?;
    let check_steps = steps
        .iter()
        .map(|(step, _)| to_u32(OP, "step", *step))
        .collect::<Result<Vec<u32>>>()?;
    let checks = non_finite_checks(
        ctx,
        &NonFiniteChecks {
            x: &x,
            status: &status,
            steps: &check_steps,
        },
        "sampler non-finite",
    )?;

    // Trajectory snapshots: x and x̂₀ copied aside after the chosen steps, read back at the end.
    let bytes = u64::from(numel) * 4;
    let snaps = job.trajectory_steps.len() as u64;
    let trajectory = if snaps > 0 {
        let size = bytes * 2 * snaps;
        if size > ctx.adapter.limits.max_buffer_size {
            return Err(Error::invalid(
                OP,
                format!(
                    "the trajectory needs {size} bytes, over the adapter's buffer limit; use fewer images or a larger --trajectory-every"
                ),
            ));
        }
        Some(ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("trajectory"),
            size,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        }))
    } else {
        None
    };

    let setup_refs: Vec<&Dispatch> = setup.iter().collect();
    ctx.submit(&setup_refs)?;
    let mut in_flight: VecDeque<wgpu::SubmissionIndex> = VecDeque::new();
    let mut done = 0;
    let mut snap = 0u64;
    for ((step, own), check) in steps.iter().zip(&checks) {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sampler step"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sampler step"),
                timestamp_writes: None,
            });
            for sd in own {
                if let Some(d) = &sd.noise {
                    d.record(&mut pass);
                }
                for f in graph.dispatches() {
                    f.record(&mut pass);
                }
                sd.update.record(&mut pass);
            }
            check.record(&mut pass);
        }
        if let Some(buf) = &trajectory {
            if job.trajectory_steps.contains(step) {
                encoder.copy_buffer_to_buffer(&x.buffer, 0, buf, 2 * snap * bytes, bytes);
                encoder.copy_buffer_to_buffer(&x0.buffer, 0, buf, (2 * snap + 1) * bytes, bytes);
                snap += 1;
            }
        }
        in_flight.push_back(ctx.queue.submit([encoder.finish()]));
        if in_flight.len() > IN_FLIGHT {
            if let Some(index) = in_flight.pop_front() {
                wait_for(ctx, index)?;
                done += 1;
                on_step(done);
            }
        }
    }
    ctx.check_errors("sampling")?;
    let non_finite = NonFiniteReport::read(ctx, &status)?;
    let sample = x.read(ctx)?;
    while in_flight.pop_front().is_some() {
        done += 1;
        on_step(done);
    }
    let trajectory = match trajectory {
        Some(buf) => read_snapshots(ctx, &buf, numel as usize, snap as usize)?,
        None => Vec::new(),
    };
    Ok(ChunkResult {
        sample,
        trajectory,
        non_finite,
    })
}

/// Whether `stage` adds noise (and so needs a fresh draw before it).
fn draws_noise(stage: &Stage) -> bool {
    stage.draws_noise && stage.noise_std != 0.0
}

fn wait_for(ctx: &GpuContext, index: wgpu::SubmissionIndex) -> Result<()> {
    ctx.device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map_err(|e| Error::gpu("waiting for a sampling step", e))?;
    Ok(())
}

fn read_snapshots(
    ctx: &GpuContext,
    buf: &wgpu::Buffer,
    numel: usize,
    count: usize,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    buf.map_async(wgpu::MapMode::Read, .., move |result| {
        let _ = sender.send(result);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::gpu("reading the trajectory", e))?;
    receiver
        .recv()
        .map_err(|e| Error::gpu("reading the trajectory", e))?
        .map_err(|e| Error::gpu("reading the trajectory", e))?;
    let values: Vec<f32> = {
        let view = buf
            .get_mapped_range(..)
            .map_err(|e| Error::gpu("reading the trajectory", e))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    buf.unmap();
    Ok((0..count)
        .map(|s| {
            let x = values[2 * s * numel..(2 * s + 1) * numel].to_vec();
            let x0 = values[(2 * s + 1) * numel..(2 * s + 2) * numel].to_vec();
            (x, x0)
        })
        .collect())
}
