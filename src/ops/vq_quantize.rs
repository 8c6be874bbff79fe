//! Nearest-codebook quantisation (diffusers `VectorQuantizer.forward`: `embedding(argmin_j
//! ||z − e_j||)`) of `shaders/vq_quantize.wgsl`, one invocation per pixel.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout,
};
use crate::ops::elementwise::{element_grid, expect_distinct, expect_shape, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

uniform_struct! {
    /// The kernel's parameter block (`Params` in `vq_quantize.wgsl`).
    pub struct Params = "Params" {
        pixels: u32,
        hw: u32,
        dim: u32,
        entries: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// `out[n, :, y, x] = codebook[argmin_j ||z[n, :, y, x] − codebook[j]||²]`: `z` and `out` are
/// `[N, D, H, W]`, `codebook` is `[K, D]` (K ≥ 1); ties go to the lower index.
#[derive(Clone, Copy, Debug)]
pub struct VqQuantize<'a> {
    pub z: &'a Tensor,
    pub codebook: &'a Tensor,
    pub out: &'a Tensor,
}

/// Builds the launch for `args`, checking the shapes.
pub fn vq_quantize(ctx: &GpuContext, args: &VqQuantize, label: &str) -> Result<Dispatch> {
    const OP: &str = "vq_quantize";
    let VqQuantize { z, codebook, out } = *args;
    let [n, d, h, w] = z.shape[..] else {
        return Err(Error::invalid(
            OP,
            format!("z has shape {:?}, expected [N, D, H, W]", z.shape),
        ));
    };
    let [k, dc] = codebook.shape[..] else {
        return Err(Error::invalid(
            OP,
            format!("codebook has shape {:?}, expected [K, D]", codebook.shape),
        ));
    };
    if dc != d || k == 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "codebook {:?} does not fit z {:?}: expected [K ≥ 1, {d}]",
                codebook.shape, z.shape
            ),
        ));
    }
    expect_shape(OP, "out", out, &z.shape)?;
    expect_distinct(OP, out, &[("z", z), ("codebook", codebook)])?;
    to_u32(OP, "elements", z.numel())?;
    let pixels = to_u32(OP, "pixels", n * h * w)?;
    let params = Params {
        pixels,
        hw: to_u32(OP, "H·W", h * w)?,
        dim: to_u32(OP, "D", d)?,
        entries: to_u32(OP, "K", k)?,
    };
    // Three flops per channel and codebook row (subtract, multiply, add).
    let flops = 3 * (n * h * w * k * d) as u64;
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::vq_quantize::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&z.buffer, &codebook.buffer, &out.buffer],
            params: &params,
            workgroups: element_grid(ctx, pixels, WORKGROUP_SIZE)?,
        },
    )
    .map(|d| d.with_flops(flops))
}
