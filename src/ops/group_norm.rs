//! Group normalisation (`torch.nn.functional.group_norm`) with an optional fused SiLU
//! (`shaders/group_norm.wgsl`): one workgroup per (sample, group), two-pass mean / variance.

use crate::error::{Error, Result};
use crate::gpu::{grid, Dispatch, GpuContext, Kernel, Tensor};
use crate::ops::elementwise::{expect_distinct, expect_shape, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); a power of two for the tree.
const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

/// The kernel's parameter block (`Params` in `group_norm.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    channels: u32,
    spatial: u32,
    groups: u32,
    eps: f32,
    silu: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>().is_multiple_of(16));

/// `out = F.group_norm(input, groups, gamma, beta, eps)`, followed by `x · sigmoid(x)` when
/// `silu` is set. `input` and `out` are `[N, C, ...spatial]` (any number of trailing dims,
/// including none), `gamma` and `beta` are `[C]`, and `C` must be a multiple of `groups`.
/// The variance is biased, as in torch.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    ctx: &GpuContext,
    input: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    out: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "group_norm";
    if input.shape.len() < 2 {
        return Err(Error::invalid(
            OP,
            format!("input has shape {:?}, expected [N, C, ...]", input.shape),
        ));
    }
    let (batch, channels) = (input.shape[0], input.shape[1]);
    let spatial: usize = input.shape[2..].iter().product();
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            OP,
            format!("{channels} channels cannot be split into {groups} groups"),
        ));
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(Error::invalid(
            OP,
            format!("eps = {eps} must be finite and non-negative"),
        ));
    }
    expect_shape(OP, "gamma", gamma, &[channels])?;
    expect_shape(OP, "beta", beta, &[channels])?;
    expect_shape(OP, "out", out, &input.shape)?;
    expect_distinct(
        OP,
        out,
        &[("input", input), ("gamma", gamma), ("beta", beta)],
    )?;
    let numel = to_u32(OP, "elements", input.numel())?;
    let params = Params {
        batch: to_u32(OP, "N", batch)?,
        channels: to_u32(OP, "C", channels)?,
        spatial: to_u32(OP, "spatial size", spatial)?,
        groups: to_u32(OP, "groups", groups)?,
        eps,
        silu: u32::from(silu),
        _pad: [0; 2],
    };
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, batch as u64 * groups as u64)?
    };
    let flops = u64::from(numel) * if silu { 12 } else { 8 };
    Dispatch::new(
        ctx,
        Kernel::GroupNorm,
        "main",
        &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
        label,
        &[&input.buffer, &gamma.buffer, &beta.buffer, &out.buffer],
        &params,
        workgroups,
    )
    .map(|d| d.with_flops(flops))
}
