//! The per-stage update of every sampler and the setup of x_T (`shaders/sampler_step.wgsl`):
//! [`crate::schedule::Stage`]'s f64 coefficients rounded once to f32 into a parameter block, and
//! the launches of a whole run. Every block of a run (the setup's and each stage's) sits in one
//! uniform table read through a dynamic offset, and all updates share one bind group, so a run
//! creates the same handful of buffers and bind groups whatever its number of steps.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Access, Dispatch, GpuContext, SharedBindings,
    SharedBindingsArgs, SharedDispatchArgs, Tensor, UniformLayout, UniformTable,
};
use crate::ops::elementwise::{element_grid, to_u32};
use crate::schedule::{HistoryWrite, Stage, HISTORY_SLOTS};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

const CONSTANTS: &[(&str, f64)] = &[("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)];

/// The shader's storage bindings 0..=6: src, noise (read); x, hist (the history slots, one
/// after the other), model_in, timesteps, x0 (read_write). The parameter block follows at binding 7 with a dynamic offset.
const ACCESS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
    Access::ReadWrite,
    Access::ReadWrite,
    Access::ReadWrite,
];

uniform_struct! {
    /// `Params` of `sampler_step.wgsl`.
    pub struct StepParams = "Params" {
        /// Elements of the n sampled images (n·C·H·W).
        numel: u32,
        /// Rows of `timesteps` to write (B).
        rows: u32,
        flags: u32,
        /// History slots the run uses (1 ..= 6): the stage reads (and `init` zeroes) these.
        hist_slots: u32,
        x0_from_sample: f32,
        x0_from_model: f32,
        clip_range: f32,
        guidance: f32,
        coef_sample: f32,
        coef_x0: f32,
        coef_model: f32,
        /// h₀: coefficient of history slot 0.
        coef_history: f32,
        noise_std: f32,
        next_input_scale: f32,
        next_timestep: f32,
        /// What each slot k stores afterwards, in bits 4k..4k+3: one of the `HIST_*` codes.
        hist_write: u32,
        coef_history_1: f32,
        coef_history_2: f32,
        coef_history_3: f32,
        coef_history_4: f32,
        coef_history_5: f32,
        _pad1: u32,
        _pad2: u32,
        _pad3: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[StepParams::LAYOUT];

shader_flags! {
    /// Clamp x̂₀ to ±`clip_range`.
    FLAG_CLIP = 1,
    /// Add `noise_std · z`.
    FLAG_NOISE = 2,
    /// Classifier-free guidance: the model batch is [conditional; null].
    FLAG_CFG = 4,
    /// The last stage: no next model input.
    FLAG_LAST = 32,
}

/// `hist_write` code: the slot keeps its value.
pub const HIST_KEEP: u32 = 0;
/// `hist_write` code: the slot takes x̂₀.
pub const HIST_X0: u32 = 1;
/// `hist_write` code: the slot takes x before the update.
pub const HIST_X: u32 = 2;
/// `hist_write` code: the slot takes the (guided) model output.
pub const HIST_MODEL: u32 = 3;

/// The packed `hist_write` of a stage.
fn hist_write(history: &[HistoryWrite; HISTORY_SLOTS]) -> u32 {
    history.iter().enumerate().fold(0, |packed, (k, write)| {
        let code = match write {
            HistoryWrite::Keep => HIST_KEEP,
            HistoryWrite::PredictedSample => HIST_X0,
            HistoryWrite::SampleBeforeUpdate => HIST_X,
            HistoryWrite::ModelOutput => HIST_MODEL,
        };
        packed | code << (4 * k)
    })
}

/// What every parameter block of a run shares.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    /// Elements of the n sampled images.
    pub numel: u32,
    /// Rows of the model batch (n, or 2n with guidance).
    pub rows: u32,
    /// Classifier-free guidance scale, if any.
    pub guidance: Option<f64>,
    /// History slots the run's stages use (1 ..= [`HISTORY_SLOTS`]); the history buffer holds
    /// this many times `numel` elements.
    pub history_slots: u32,
}

impl StepParams {
    /// The block of `stage`, followed by `next` (`None` for the last stage).
    pub fn stage(stage: &Stage, next: Option<&Stage>, shape: StepShape) -> StepParams {
        let mut flags = 0;
        if stage.clip_x0.is_some() {
            flags |= FLAG_CLIP;
        }
        if stage.draws_noise && stage.noise_std != 0.0 {
            flags |= FLAG_NOISE;
        }
        if shape.guidance.is_some() {
            flags |= FLAG_CFG;
        }
        if next.is_none() {
            flags |= FLAG_LAST;
        }
        StepParams {
            numel: shape.numel,
            rows: shape.rows,
            flags,
            hist_slots: shape.history_slots,
            x0_from_sample: stage.x0_from_sample as f32,
            x0_from_model: stage.x0_from_model as f32,
            clip_range: stage.clip_x0.unwrap_or(0.0) as f32,
            guidance: shape.guidance.unwrap_or(1.0) as f32,
            coef_sample: stage.coef_sample as f32,
            coef_x0: stage.coef_x0 as f32,
            coef_model: stage.coef_model as f32,
            coef_history: stage.coef_history[0] as f32,
            coef_history_1: stage.coef_history[1] as f32,
            coef_history_2: stage.coef_history[2] as f32,
            coef_history_3: stage.coef_history[3] as f32,
            coef_history_4: stage.coef_history[4] as f32,
            coef_history_5: stage.coef_history[5] as f32,
            hist_write: hist_write(&stage.history),
            noise_std: stage.noise_std as f32,
            next_input_scale: next.map_or(0.0, |n| n.model_input_scale as f32),
            next_timestep: next.map_or(0.0, |n| n.model_timestep as f32),
            ..StepParams::default()
        }
    }

    /// The `init` block: `x = image_coef · image + noise_coef · z` (`image_coef = None`: no
    /// image), then the first stage's model input and timesteps.
    pub fn init(
        first: &Stage,
        image_coef: Option<f64>,
        noise_coef: f64,
        shape: StepShape,
    ) -> StepParams {
        StepParams {
            numel: shape.numel,
            rows: shape.rows,
            hist_slots: shape.history_slots,
            flags: if shape.guidance.is_some() {
                FLAG_CFG
            } else {
                0
            },
            coef_x0: image_coef.map_or(0.0, |c| c as f32),
            noise_std: noise_coef as f32,
            next_input_scale: first.model_input_scale as f32,
            next_timestep: first.model_timestep as f32,
            ..StepParams::default()
        }
    }
}

/// The buffers a run's launches bind after `src` (bindings 1..=6).
#[derive(Clone, Copy, Debug)]
pub struct SamplerState<'a> {
    /// `[n, C, H, W]` noise z (read).
    pub noise: &'a Tensor,
    /// `[n, C, H, W]` the sample x.
    pub x: &'a Tensor,
    /// `[slots·n, C, H, W]` the history slots H₀ … (slot k at element k·n·C·H·W).
    pub hist: &'a Tensor,
    /// `[B, C, H, W]` the network's next input.
    pub model_in: &'a Tensor,
    /// `[B]` the network's next timesteps.
    pub timesteps: &'a Tensor,
    /// `[n, C, H, W]` each stage's x̂₀ (for trajectories).
    pub x0: &'a Tensor,
}

/// One stage's update: its parameter block and what it is called in captures and timings.
#[derive(Clone, Debug)]
pub struct StageUpdate {
    pub params: StepParams,
    pub label: String,
}

/// Every `sampler_step` launch of one run.
#[derive(Clone, Copy, Debug)]
pub struct SamplerSteps<'a> {
    pub state: SamplerState<'a>,
    /// What `init` reads as `src`: the init image `[C, H, W]`, or any buffer when
    /// `init.coef_x0 == 0` (it is then never read).
    pub init_src: &'a Tensor,
    /// The model output `[B, C, H, W]` every update reads as `src`.
    pub model_output: &'a Tensor,
    /// The setup block ([`StepParams::init`]).
    pub init: StepParams,
    /// One update per stage, in order.
    pub stages: &'a [StageUpdate],
}

/// The launches [`sampler_steps`] built.
#[derive(Debug, Clone)]
pub struct SamplerStepLaunches {
    /// x_T, the first model input and timesteps.
    pub init: Dispatch,
    /// One per stage, in order.
    pub updates: Vec<Dispatch>,
}

/// Builds the setup launch and every stage's update: one uniform buffer with every block (slot 0
/// the setup, slot `1 + i` stage `i`) and two bind groups (the setup's and the updates').
pub fn sampler_steps(
    ctx: &GpuContext,
    args: &SamplerSteps,
    label: &str,
) -> Result<SamplerStepLaunches> {
    const OP: &str = "sampler_step";
    let s = args.state;
    let numel = args.init.numel;
    let slots = args.init.hist_slots;
    if !(1..=HISTORY_SLOTS as u32).contains(&slots)
        || args.stages.iter().any(|u| u.params.hist_slots != slots)
    {
        return Err(Error::invalid(
            OP,
            format!(
                "every block must use the same number of history slots, 1 to {HISTORY_SLOTS}; the setup's is {slots}"
            ),
        ));
    }
    let hist_numel = to_u32(OP, "history elements", numel as usize * slots as usize)?;
    if s.hist.numel() != hist_numel as usize {
        return Err(Error::invalid(
            OP,
            format!(
                "hist has shape {:?}, expected {hist_numel} elements ({slots} slots of {numel})",
                s.hist.shape
            ),
        ));
    }
    for (name, t) in [("noise", s.noise), ("x", s.x), ("x0", s.x0)] {
        if t.numel() != numel as usize {
            return Err(Error::invalid(
                OP,
                format!("{name} has shape {:?}, expected {numel} elements", t.shape),
            ));
        }
    }
    let rows = args.init.rows as usize;
    if s.timesteps.numel() < rows {
        return Err(Error::invalid(
            OP,
            format!(
                "timesteps have shape {:?}, expected {rows} rows",
                s.timesteps.shape
            ),
        ));
    }
    if args.stages.iter().any(|u| u.params.numel != numel) {
        return Err(Error::invalid(
            OP,
            "every stage's block must cover the same elements as the setup's",
        ));
    }
    // The shader reads src[i + numel] and writes model_in[i + numel] under FLAG_CFG, and writes
    // model_in unless FLAG_LAST, with no bounds test of its own (it may run without runtime
    // checks): both must hold every row the blocks address.
    let rows_of = |p: &StepParams| if p.flags & FLAG_CFG != 0 { 2 } else { 1 };
    let model_in_rows = std::iter::once(&args.init)
        .chain(args.stages.iter().map(|u| &u.params))
        .filter(|p| p.flags & FLAG_LAST == 0)
        .map(rows_of)
        .max()
        .unwrap_or(0);
    let output_rows = args
        .stages
        .iter()
        .map(|u| rows_of(&u.params))
        .max()
        .unwrap_or(0);
    for (name, t, copies) in [
        ("model_in", s.model_in, model_in_rows),
        ("model_output", args.model_output, output_rows),
    ] {
        if t.numel() < numel as usize * copies {
            return Err(Error::invalid(
                OP,
                format!(
                    "{name} has shape {:?}, expected at least {copies} × {numel} elements",
                    t.shape
                ),
            ));
        }
    }
    let blocks: Vec<StepParams> = std::iter::once(args.init)
        .chain(args.stages.iter().map(|u| u.params))
        .collect();
    let table = UniformTable::new(ctx, &format!("{label} params"), &blocks)?;
    let bind = |src: &Tensor, what: &str| {
        SharedBindings::new(
            ctx,
            &SharedBindingsArgs {
                access: ACCESS,
                storage: &[
                    &src.buffer,
                    &s.noise.buffer,
                    &s.x.buffer,
                    &s.hist.buffer,
                    &s.model_in.buffer,
                    &s.timesteps.buffer,
                    &s.x0.buffer,
                ],
                table: &table,
                label: &format!("{label} {what}"),
            },
        )
    };
    let workgroups = element_grid(ctx, to_u32(OP, "elements", numel as usize)?, WORKGROUP_SIZE)?;
    let init_bindings = bind(args.init_src, "init")?;
    let init = Dispatch::shared(
        ctx,
        &SharedDispatchArgs {
            entry: entry::sampler_step::INIT,
            constants: CONSTANTS,
            label: "x_T",
            bindings: &init_bindings,
            slot: 0,
            workgroups,
        },
    )?;
    let update_bindings = bind(args.model_output, "updates")?;
    let updates = args
        .stages
        .iter()
        .enumerate()
        .map(|(i, u)| {
            Dispatch::shared(
                ctx,
                &SharedDispatchArgs {
                    entry: entry::sampler_step::STEP,
                    constants: CONSTANTS,
                    label: &u.label,
                    bindings: &update_bindings,
                    slot: 1 + i,
                    workgroups,
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SamplerStepLaunches { init, updates })
}
