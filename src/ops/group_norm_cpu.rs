//! Group normalisation shaped for CPU adapters (`shaders/group_norm_cpu.wgsl`): one subgroup per
//! (sample, group), vec4 loads, no barriers. [`crate::ops::group_norm::group_norm`] sends a norm
//! here when the context runs the CPU shape ([`crate::gpu::shape`]) and the spatial size is a
//! multiple of 4; the results are bit-identical to `group_norm.wgsl`'s `main` (the same 256
//! partial sums and the same tree).

use crate::error::Result;
use crate::gpu::{entry, grid, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout};
use crate::ops::group_norm::Params;

/// The parameter block is `group_norm.wgsl`'s `Params` (checked against this shader by
/// `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
/// No flag bits.
pub const FLAGS: &[(&str, u32)] = &[];

/// Subgroups per workgroup (`@workgroup_size(64)`, 8 lanes each): one (sample, group) each.
const ITEMS_PER_WORKGROUP: u64 = 8;

/// Whether the kernel takes a norm over `spatial` elements per channel: whole vec4s per channel.
pub fn fits(spatial: usize) -> bool {
    spatial.is_multiple_of(4)
}

/// Builds the launch; `params` are the checked `group_norm.wgsl` parameters.
pub(crate) fn launch(
    ctx: &GpuContext,
    params: &Params,
    [input, gamma, beta, out]: [&Tensor; 4],
    flops: u64,
    label: &str,
) -> Result<Dispatch> {
    let items = u64::from(params.batch) * u64::from(params.groups);
    let workgroups = if input.numel() == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, items.div_ceil(ITEMS_PER_WORKGROUP))?
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::group_norm_cpu::MAIN,
            constants: &[],
            label,
            storage: &[&input.buffer, &gamma.buffer, &beta.buffer, &out.buffer],
            params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(flops))
}
