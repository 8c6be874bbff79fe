//! Nearest-neighbour ×2 upsampling (`F.interpolate(x, scale_factor=2, mode="nearest")`) of
//! `shaders/upsample.wgsl`, one invocation per output element.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout,
};
use crate::ops::elementwise::{element_grid, expect_distinct, expect_shape, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

uniform_struct! {
    /// The kernel's parameter block (`Params` in `upsample.wgsl`).
    pub struct Params = "Params" {
        planes: u32,
        height: u32,
        width: u32,
        _pad0: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// `out = F.interpolate(input, scale_factor=2, mode="nearest")`: `input` is `[N, C, H, W]`,
/// `out` is `[N, C, 2H, 2W]`.
#[derive(Clone, Copy, Debug)]
pub struct UpsampleNearest2x<'a> {
    pub input: &'a Tensor,
    pub out: &'a Tensor,
}

/// Builds the launch for `args`, checking the shapes.
pub fn upsample_nearest2x(
    ctx: &GpuContext,
    args: &UpsampleNearest2x,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "upsample_nearest2x";
    let UpsampleNearest2x { input, out } = *args;
    let [n, c, h, w] = input.shape[..] else {
        return Err(Error::invalid(
            OP,
            format!("input has shape {:?}, expected [N, C, H, W]", input.shape),
        ));
    };
    expect_shape(OP, "out", out, &[n, c, 2 * h, 2 * w])?;
    expect_distinct(OP, out, &[("input", input)])?;
    let count = to_u32(OP, "output elements", out.numel())?;
    let params = Params {
        planes: to_u32(OP, "N·C", n * c)?,
        height: to_u32(OP, "H", h)?,
        width: to_u32(OP, "W", w)?,
        ..Params::default()
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::upsample::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&input.buffer, &out.buffer],
            params: &params,
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
}
