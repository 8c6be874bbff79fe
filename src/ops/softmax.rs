//! In-place row softmax (`torch.softmax(x, dim=-1)` on a `[rows, cols]` view) of
//! `shaders/softmax.wgsl`: one workgroup per row, max-subtracted, f32.

use crate::error::{Error, Result};
use crate::gpu::{grid, Dispatch, GpuContext, Kernel, Tensor};
use crate::ops::elementwise::to_u32;

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); a power of two for the tree.
const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

/// The kernel's parameter block (`Params` in `softmax.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>().is_multiple_of(16));

/// Replaces each of the `rows` contiguous rows of `cols` values in `data` (any shape with
/// `rows · cols` elements) by its softmax.
pub fn softmax_rows(
    ctx: &GpuContext,
    data: &Tensor,
    rows: usize,
    cols: usize,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "softmax_rows";
    if rows.checked_mul(cols) != Some(data.numel()) {
        return Err(Error::invalid(
            OP,
            format!(
                "{rows} rows × {cols} cols do not match data of shape {:?} ({} elements)",
                data.shape,
                data.numel()
            ),
        ));
    }
    let numel = to_u32(OP, "elements", data.numel())?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        _pad: [0; 2],
    };
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, rows as u64)?
    };
    Dispatch::new(
        ctx,
        Kernel::Softmax,
        "main",
        &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
        label,
        &[&data.buffer],
        &params,
        workgroups,
    )
    .map(|d| d.with_flops(u64::from(numel) * 5))
}
