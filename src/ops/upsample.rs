//! Nearest-neighbour upsampling of `shaders/upsample.wgsl` (`F.interpolate(x, scale_factor=2,
//! mode="nearest")`, or to a given size as diffusers' `Upsample2D(output_size=…)`), one
//! invocation per output element.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout,
};
use crate::ops::elementwise::{element_grid, expect_distinct, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

uniform_struct! {
    /// The kernel's parameter block (`Params` in `upsample.wgsl`).
    pub struct Params = "Params" {
        planes: u32,
        height: u32,
        width: u32,
        out_height: u32,
        out_width: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// `out = F.interpolate(input, size=(OH, OW), mode="nearest")`: `input` is `[N, C, H, W]`,
/// `out` is `[N, C, OH, OW]` with `H ≤ OH ≤ 2H` and `W ≤ OW ≤ 2W` (×2, or the odd sizes a
/// U-Net's up path forwards); `out` `[N, C, 2H, 2W]` is `scale_factor=2`.
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
    let (oh, ow) = match out.shape[..] {
        [on, oc, oh, ow] if on == n && oc == c && (h..=2 * h).contains(&oh) && (w..=2 * w).contains(&ow) => (oh, ow),
        _ => {
            return Err(Error::invalid(
                OP,
                format!(
                    "out has shape {:?}, expected [{n}, {c}, OH, OW] with {h} ≤ OH ≤ {} and {w} ≤ OW ≤ {}",
                    out.shape,
                    2 * h,
                    2 * w
                ),
            ))
        }
    };
    expect_distinct(OP, out, &[("input", input)])?;
    let count = to_u32(OP, "output elements", out.numel())?;
    // oy·H and ox·W stay below 2^32.
    to_u32(OP, "OH·H", oh * h)?;
    to_u32(OP, "OW·W", ow * w)?;
    let params = Params {
        planes: to_u32(OP, "N·C", n * c)?,
        height: to_u32(OP, "H", h)?,
        width: to_u32(OP, "W", w)?,
        out_height: to_u32(OP, "OH", oh)?,
        out_width: to_u32(OP, "OW", ow)?,
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
