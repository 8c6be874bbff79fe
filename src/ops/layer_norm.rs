//! Layer normalisation over the last dimension (`torch.nn.functional.layer_norm` with
//! `normalized_shape = (C,)`) of `shaders/layer_norm.wgsl`: one workgroup per row, two-pass
//! mean / variance in f32.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, KernelShape,
    Tensor, UniformLayout,
};
use crate::ops::elementwise::{expect_distinct, expect_shape, to_u32};
use crate::ops::layer_norm_cpu;

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); a power of two for the tree.
const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

uniform_struct! {
    /// The kernel's parameter block (`Params` in `layer_norm.wgsl`).
    pub struct Params = "Params" {
        rows: u32,
        cols: u32,
        eps: f32,
        _pad0: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// `out = F.layer_norm(input, (C,), gamma, beta, eps)`: `input` and `out` have any shape whose
/// last dimension is `C` (at least one dimension), `gamma` and `beta` are `[C]`. The variance is
/// biased, as in torch.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm<'a> {
    pub input: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub out: &'a Tensor,
    pub eps: f32,
}

/// Builds the launch for `args`, checking every shape.
pub fn layer_norm(ctx: &GpuContext, args: &LayerNorm, label: &str) -> Result<Dispatch> {
    const OP: &str = "layer_norm";
    let LayerNorm {
        input,
        gamma,
        beta,
        out,
        eps,
    } = *args;
    let Some(&cols) = input.shape.last() else {
        return Err(Error::invalid(
            OP,
            "input is a scalar; expected [..., C] with the normalised dimension last",
        ));
    };
    if !eps.is_finite() || eps < 0.0 {
        return Err(Error::invalid(
            OP,
            format!("eps = {eps} must be finite and non-negative"),
        ));
    }
    expect_shape(OP, "gamma", gamma, &[cols])?;
    expect_shape(OP, "beta", beta, &[cols])?;
    expect_shape(OP, "out", out, &input.shape)?;
    expect_distinct(
        OP,
        out,
        &[("input", input), ("gamma", gamma), ("beta", beta)],
    )?;
    let numel = to_u32(OP, "elements", input.numel())?;
    let rows = input.numel().checked_div(cols).unwrap_or(0);
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "C", cols)?,
        eps,
        ..Params::default()
    };
    let flops = u64::from(numel) * 8;
    if ctx.kernel_shape() == KernelShape::Cpu && layer_norm_cpu::fits(cols) {
        let tensors = [input, gamma, beta, out];
        return layer_norm_cpu::launch(ctx, &params, tensors, flops, label);
    }
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, rows as u64)?
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::layer_norm::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&input.buffer, &gamma.buffer, &beta.buffer, &out.buffer],
            params: &params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(flops))
}
