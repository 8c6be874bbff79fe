//! The exact denoiser of Gaussian data x₀ ~ N(μ, s²) (`shaders/analytic_model.wgsl`), a
//! known-answer "network" for sampler tests; the model itself (parametrizations, the CPU twin)
//! lives in [`crate::sampling::analytic`].

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout,
};
use crate::ops::elementwise::{element_grid, expect_distinct, expect_shape, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

uniform_struct! {
    /// `Params` of `analytic_model.wgsl`.
    pub struct Params = "Params" {
        count: u32,
        per_image: u32,
        mode: u32,
        table_len: u32,
        mean: f32,
        stddev: f32,
        beta_min: f32,
        beta_max: f32,
        train_steps: f32,
        _pad0: f32,
        _pad1: f32,
        _pad2: f32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// Which closed form the kernel evaluates (`mode` in the shader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaussianMode {
    /// ε-prediction, ᾱ(t) interpolated in `table`.
    EpsilonDiscrete = 0,
    /// ε-prediction on the continuous VP SDE (`beta_min`, `beta_max`, `train_steps`).
    EpsilonContinuous = 1,
    /// Rectified-flow velocity (`train_steps`).
    FlowVelocity = 2,
}

/// `out = E[target | input, timesteps]` for Gaussian data: `input` and `out` are `[B, ...]`,
/// `timesteps` is `[B]`, `table` holds ᾱ over the training timesteps (read in
/// [`GaussianMode::EpsilonDiscrete`] only; at least one element).
#[derive(Clone, Copy, Debug)]
pub struct GaussianDenoise<'a> {
    pub input: &'a Tensor,
    pub timesteps: &'a Tensor,
    pub table: &'a Tensor,
    pub out: &'a Tensor,
    pub mode: GaussianMode,
    pub mean: f32,
    pub std: f32,
    pub beta_min: f32,
    pub beta_max: f32,
    pub train_steps: f32,
}

/// Builds the launch for `args`, checking the shapes.
pub fn gaussian_denoise(ctx: &GpuContext, args: &GaussianDenoise, label: &str) -> Result<Dispatch> {
    const OP: &str = "analytic model";
    let input = args.input;
    let Some(&batch) = input.shape.first() else {
        return Err(Error::invalid(OP, "input is a scalar; expected [B, ...]"));
    };
    let per_image: usize = input.shape[1..].iter().product();
    if batch == 0 || per_image == 0 {
        return Err(Error::invalid(OP, format!("empty shape {:?}", input.shape)));
    }
    expect_shape(OP, "out", args.out, &input.shape)?;
    expect_shape(OP, "timesteps", args.timesteps, &[batch])?;
    expect_distinct(
        OP,
        args.out,
        &[
            ("input", input),
            ("timesteps", args.timesteps),
            ("table", args.table),
        ],
    )?;
    if args.table.numel() == 0 {
        return Err(Error::invalid(OP, "empty ᾱ table"));
    }
    let count = to_u32(OP, "elements", input.numel())?;
    let params = Params {
        count,
        per_image: to_u32(OP, "elements per image", per_image)?,
        mode: args.mode as u32,
        table_len: to_u32(OP, "table length", args.table.numel())?,
        mean: args.mean,
        stddev: args.std,
        beta_min: args.beta_min,
        beta_max: args.beta_max,
        train_steps: args.train_steps,
        ..Params::default()
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::analytic_model::GAUSSIAN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[
                &input.buffer,
                &args.timesteps.buffer,
                &args.table.buffer,
                &args.out.buffer,
            ],
            params: &params,
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
}
