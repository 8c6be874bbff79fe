//! Nearest-neighbour ×2 upsampling (`F.interpolate(x, scale_factor=2, mode="nearest")`) of
//! `shaders/upsample.wgsl`, one invocation per output element.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Kernel, Tensor};
use crate::ops::elementwise::{element_grid, expect_distinct, expect_shape, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

/// The kernel's parameter block (`Params` in `upsample.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    planes: u32,
    height: u32,
    width: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<Params>().is_multiple_of(16));

/// `out = F.interpolate(input, scale_factor=2, mode="nearest")`: `input` is `[N, C, H, W]`,
/// `out` is `[N, C, 2H, 2W]`.
pub fn upsample_nearest2x(
    ctx: &GpuContext,
    input: &Tensor,
    out: &Tensor,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "upsample_nearest2x";
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
        _pad: 0,
    };
    Dispatch::new(
        ctx,
        Kernel::Upsample,
        "main",
        &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
        label,
        &[&input.buffer, &out.buffer],
        &params,
        element_grid(ctx, count, WORKGROUP_SIZE)?,
    )
}
