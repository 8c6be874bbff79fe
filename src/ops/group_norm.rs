//! Group normalisation (`torch.nn.functional.group_norm`) with an optional fused SiLU
//! (`shaders/group_norm.wgsl`): one workgroup per (sample, group), two-pass mean / variance;
//! and the banded form ([`group_norm_partial`] per row band, then [`group_norm_apply`]) whose
//! statistics are those of the whole image, for a decode split into bands.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, KernelShape,
    Tensor, UniformLayout,
};
use crate::ops::elementwise::{expect_distinct, expect_shape, to_u32};
use crate::ops::group_norm_cpu;

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); a power of two for the tree.
const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

uniform_struct! {
    /// The kernel's parameter block (`Params` in `group_norm.wgsl`).
    pub struct Params = "Params" {
        batch: u32,
        channels: u32,
        spatial: u32,
        groups: u32,
        eps: f32,
        silu: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform_struct! {
    /// `PartialParams` of `group_norm.wgsl`.
    pub struct PartialParams = "PartialParams" {
        batch: u32,
        channels: u32,
        spatial: u32,
        groups: u32,
        band: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform_struct! {
    /// `ApplyParams` of `group_norm.wgsl`.
    pub struct ApplyParams = "ApplyParams" {
        batch: u32,
        channels: u32,
        spatial: u32,
        groups: u32,
        bands: u32,
        eps: f32,
        silu: u32,
        _pad0: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] =
    &[Params::LAYOUT, PartialParams::LAYOUT, ApplyParams::LAYOUT];
shader_flags! {}

/// `out = F.group_norm(input, groups, gamma, beta, eps)`, followed by `x · sigmoid(x)` when
/// `silu` is set. `input` and `out` are `[N, C, ...spatial]` (any number of trailing dims,
/// including none), `gamma` and `beta` are `[C]`, and `C` must be a multiple of `groups`.
/// The variance is biased, as in torch.
#[derive(Clone, Copy, Debug)]
pub struct GroupNorm<'a> {
    pub input: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub out: &'a Tensor,
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

/// Builds the launch for `args`, checking every shape.
pub fn group_norm(ctx: &GpuContext, args: &GroupNorm, label: &str) -> Result<Dispatch> {
    const OP: &str = "group_norm";
    let GroupNorm {
        input,
        gamma,
        beta,
        out,
        groups,
        eps,
        silu,
    } = *args;
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
        ..Params::default()
    };
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, batch as u64 * groups as u64)?
    };
    let flops = u64::from(numel) * if silu { 12 } else { 8 };
    if ctx.kernel_shape() == KernelShape::Cpu && group_norm_cpu::fits(spatial) {
        let tensors = [input, gamma, beta, out];
        return group_norm_cpu::launch(ctx, &params, tensors, flops, label);
    }
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::group_norm::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&input.buffer, &gamma.buffer, &beta.buffer, &out.buffer],
            params: &params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(flops))
}

/// `[N, C, ...]` → (N, C, spatial size), checking `C` splits into `groups`.
fn group_shape(op: &str, input: &Tensor, groups: usize) -> Result<(usize, usize, usize)> {
    if input.shape.len() < 2 {
        return Err(Error::invalid(
            op,
            format!("input has shape {:?}, expected [N, C, ...]", input.shape),
        ));
    }
    let (batch, channels) = (input.shape[0], input.shape[1]);
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!("{channels} channels cannot be split into {groups} groups"),
        ));
    }
    Ok((batch, channels, input.shape[2..].iter().product()))
}

/// The first pass of a banded group norm: the statistics of band `band` of the image
/// (`input` is the band, `[N, C, rows_b, W]`) are written to `stats[band]`, `stats` being
/// `[bands, N·groups, 4]` (count, pivot, mean − pivot, sum of squared deviations).
#[derive(Clone, Copy, Debug)]
pub struct GroupNormPartial<'a> {
    pub input: &'a Tensor,
    pub stats: &'a Tensor,
    pub groups: usize,
    pub band: usize,
}

/// Builds the statistics launch for `args`, checking every shape.
pub fn group_norm_partial(
    ctx: &GpuContext,
    args: &GroupNormPartial,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "group_norm_partial";
    let GroupNormPartial {
        input,
        stats,
        groups,
        band,
    } = *args;
    let (batch, channels, spatial) = group_shape(OP, input, groups)?;
    let bands = stats.shape.first().copied().unwrap_or(0);
    expect_shape(OP, "stats", stats, &[bands, batch * groups, 4])?;
    if band >= bands {
        return Err(Error::invalid(
            OP,
            format!(
                "band {band} is past the {bands} bands of stats {:?}",
                stats.shape
            ),
        ));
    }
    expect_distinct(OP, stats, &[("input", input)])?;
    let params = PartialParams {
        batch: to_u32(OP, "N", batch)?,
        channels: to_u32(OP, "C", channels)?,
        spatial: to_u32(OP, "band spatial size", spatial)?,
        groups: to_u32(OP, "groups", groups)?,
        band: to_u32(OP, "band", band)?,
        ..PartialParams::default()
    };
    let numel = to_u32(OP, "elements", input.numel())?;
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, batch as u64 * groups as u64)?
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::group_norm::BAND_PARTIAL,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&input.buffer, &stats.buffer],
            params: &params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(u64::from(numel) * 4))
}

/// The second pass of a banded group norm: `out = group_norm(input)` (then SiLU when `silu`)
/// for one band, with the whole image's mean and variance combined from every band's entry of
/// `stats` (`[bands, N·groups, 4]`, filled by [`group_norm_partial`]).
#[derive(Clone, Copy, Debug)]
pub struct GroupNormApply<'a> {
    pub input: &'a Tensor,
    pub stats: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub out: &'a Tensor,
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

/// Builds the normalising launch for `args`, checking every shape.
pub fn group_norm_apply(ctx: &GpuContext, args: &GroupNormApply, label: &str) -> Result<Dispatch> {
    const OP: &str = "group_norm_apply";
    let GroupNormApply {
        input,
        stats,
        gamma,
        beta,
        out,
        groups,
        eps,
        silu,
    } = *args;
    let (batch, channels, spatial) = group_shape(OP, input, groups)?;
    if !eps.is_finite() || eps < 0.0 {
        return Err(Error::invalid(
            OP,
            format!("eps = {eps} must be finite and non-negative"),
        ));
    }
    let bands = stats.shape.first().copied().unwrap_or(0);
    if bands == 0 {
        return Err(Error::invalid(OP, "stats holds no band"));
    }
    expect_shape(OP, "stats", stats, &[bands, batch * groups, 4])?;
    expect_shape(OP, "gamma", gamma, &[channels])?;
    expect_shape(OP, "beta", beta, &[channels])?;
    expect_shape(OP, "out", out, &input.shape)?;
    expect_distinct(
        OP,
        out,
        &[
            ("input", input),
            ("stats", stats),
            ("gamma", gamma),
            ("beta", beta),
        ],
    )?;
    let numel = to_u32(OP, "elements", input.numel())?;
    let params = ApplyParams {
        batch: to_u32(OP, "N", batch)?,
        channels: to_u32(OP, "C", channels)?,
        spatial: to_u32(OP, "band spatial size", spatial)?,
        groups: to_u32(OP, "groups", groups)?,
        bands: to_u32(OP, "bands", bands)?,
        eps,
        silu: u32::from(silu),
        ..ApplyParams::default()
    };
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, batch as u64 * groups as u64)?
    };
    let flops = u64::from(numel) * if silu { 8 } else { 4 };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::group_norm::BAND_APPLY,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[
                &input.buffer,
                &stats.buffer,
                &gamma.buffer,
                &beta.buffer,
                &out.buffer,
            ],
            params: &params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(flops))
}
