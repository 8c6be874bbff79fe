//! In-place row softmax shaped for CPU adapters (`shaders/softmax_cpu.wgsl`): one subgroup per
//! row, vec4 loads, no barriers. [`crate::ops::softmax::softmax_rows`] sends rows here when the
//! context runs the CPU shape ([`crate::gpu::shape`]) and `cols % 4 == 0`; the results are
//! bit-identical to `softmax.wgsl`'s (the same 256 partials and trees).

use crate::error::Result;
use crate::gpu::{entry, grid, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout};
use crate::ops::softmax::Params;

/// The parameter block is `softmax.wgsl`'s (checked against this shader by
/// `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
/// No flag bits.
pub const FLAGS: &[(&str, u32)] = &[];

/// Rows per workgroup (`@workgroup_size(64)`: 8 subgroups of 8 lanes).
const ROWS_PER_WORKGROUP: u64 = 8;

/// Whether the kernel takes rows of `cols` values: whole vec4s per row.
pub fn fits(cols: usize) -> bool {
    cols.is_multiple_of(4)
}

/// Builds the launch; `params` are the checked `softmax.wgsl` parameters.
pub(crate) fn launch(
    ctx: &GpuContext,
    params: &Params,
    data: &Tensor,
    flops: u64,
    label: &str,
) -> Result<Dispatch> {
    let workgroups = if data.numel() == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, u64::from(params.rows).div_ceil(ROWS_PER_WORKGROUP))?
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::softmax_cpu::MAIN,
            constants: &[],
            label,
            storage: &[&data.buffer],
            params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(flops))
}
