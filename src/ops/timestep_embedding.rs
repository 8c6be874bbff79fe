//! Sinusoidal timestep embedding (diffusers `get_timestep_embedding`) of
//! `shaders/timestep_embedding.wgsl`, matching torch's f32 arithmetic to ~1e-7: the frequency
//! table is built here on the CPU exactly as torch builds it, and the kernel forms the f32
//! argument and evaluates sin/cos with its own argument reduction and polynomials.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout,
};
use crate::ops::elementwise::{element_grid, expect_distinct, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

/// diffusers' `max_period`.
const MAX_PERIOD: f64 = 10000.0;

uniform_struct! {
    /// The kernel's parameter block (`Params` in `timestep_embedding.wgsl`).
    pub struct Params = "Params" {
        batch: u32,
        dim: u32,
        half_dim: u32,
        flip: u32,
        /// Always 0: XORed into the product's bits so the compiler cannot fuse it into an FMA.
        opaque_zero: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// The `dim / 2` frequencies torch uses, as f32, rounded the way torch rounds them:
///
/// ```text
/// exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32)  # f32(f32(-ln 1e4)·i)
/// exponent = exponent / (half - freq_shift)                                 # f32 division
/// freqs = torch.exp(exponent)                                               # f32
/// ```
///
/// The scalar `-ln 10000` and the divisor are rounded to f32 first (torch casts a Python scalar to
/// the tensor's dtype), the product and quotient are f32 operations, and `exp` is evaluated in f64
/// and rounded to f32 — torch's vectorised f32 `exp` is within 1 ulp of that, so an entry can
/// differ from torch's by at most one ulp. Fails when `half − freq_shift` is zero (torch would
/// divide by zero and produce NaN).
pub fn frequencies(dim: usize, freq_shift: f64) -> Result<Vec<f32>> {
    let half = dim / 2;
    if half == 0 {
        return Ok(Vec::new());
    }
    let denominator = (half as f64 - freq_shift) as f32;
    if denominator == 0.0 || !denominator.is_finite() {
        return Err(Error::invalid(
            "timestep_embedding",
            format!(
                "dim / 2 − freq_shift = {half} − {freq_shift} must be a finite non-zero number"
            ),
        ));
    }
    let neg_log = (-MAX_PERIOD.ln()) as f32;
    Ok((0..half)
        .map(|i| {
            let exponent = (neg_log * i as f32) / denominator;
            f64::from(exponent).exp() as f32
        })
        .collect())
}

/// `out = get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift =
/// freq_shift, scale = 1, max_period = 10000)`: `timesteps` is `[N]` (f32, may be fractional),
/// `out` is `[N, dim]`. Accurate for `|t · freq| < ~1e5` (the kernel's argument reduction is
/// exact there; beyond it the error grows slowly with the argument).
#[derive(Clone, Copy, Debug)]
pub struct TimestepEmbedding<'a> {
    pub timesteps: &'a Tensor,
    pub out: &'a Tensor,
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
}

/// Builds the launch for `args` (and uploads its frequency table), checking the shapes.
pub fn timestep_embedding(
    ctx: &GpuContext,
    args: &TimestepEmbedding,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "timestep_embedding";
    let TimestepEmbedding {
        timesteps,
        out,
        dim,
        flip_sin_to_cos,
        freq_shift,
    } = *args;
    let [batch] = timesteps.shape[..] else {
        return Err(Error::invalid(
            OP,
            format!("timesteps have shape {:?}, expected [N]", timesteps.shape),
        ));
    };
    if dim == 0 {
        return Err(Error::invalid(OP, "dim must be at least 1"));
    }
    if out.shape != [batch, dim] {
        return Err(Error::invalid(
            OP,
            format!("out has shape {:?}, expected [{batch}, {dim}]", out.shape),
        ));
    }
    expect_distinct(OP, out, &[("timesteps", timesteps)])?;
    let count = to_u32(OP, "output elements", out.numel())?;
    let freqs = frequencies(dim, freq_shift)?;
    let table = Tensor::from_slice(ctx, &[freqs.len()], &freqs, &format!("{label} freqs"))?;
    let params = Params {
        batch: to_u32(OP, "N", batch)?,
        dim: to_u32(OP, "dim", dim)?,
        half_dim: to_u32(OP, "dim / 2", dim / 2)?,
        flip: u32::from(flip_sin_to_cos),
        opaque_zero: 0,
        ..Params::default()
    };
    // The bind group keeps the frequency table alive after `table` is dropped.
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::timestep_embedding::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&timesteps.buffer, &table.buffer, &out.buffer],
            params: &params,
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
    .map(|d| d.with_flops(u64::from(count) * 30))
}
