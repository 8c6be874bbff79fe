//! The activations of `shaders/activation.wgsl`: the CLIP MLP's `quick_gelu`
//! (`x · sigmoid(1.702 x)`) and exact `gelu` (`0.5 x (1 + erf(x/√2))`, erf through an
//! f32-accurate erfc), and diffusers' `GEGLU` (`h · gelu(gate)` over the two halves of each row).

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor, UniformLayout,
};
use crate::ops::elementwise::{element_grid, expect_distinct, expect_shape, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); one element each.
const WORKGROUP_SIZE: u32 = 256;

uniform_struct! {
    /// The kernel's parameter block (`Params` in `activation.wgsl`).
    pub struct Params = "Params" {
        count: u32,
        features: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// Which activation (transformers' `hidden_act` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (`"quick_gelu"`, what SD 1.x's CLIP uses).
    QuickGelu,
    /// `0.5 x (1 + erf(x/√2))` (`"gelu"`, what OpenCLIP ViT-H / SD 2.x uses).
    Gelu,
}

impl Activation {
    /// The transformers `hidden_act` name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
        }
    }
}

/// `out = act(x)` element-wise; `x` and `out` have the same shape and distinct buffers.
#[derive(Clone, Copy, Debug)]
pub struct Act<'a> {
    pub x: &'a Tensor,
    pub out: &'a Tensor,
    pub activation: Activation,
}

/// Builds the launch for `args`.
pub fn activation(ctx: &GpuContext, args: &Act, label: &str) -> Result<Dispatch> {
    let Act { x, out, activation } = *args;
    let op = activation.name();
    expect_shape(op, "out", out, &x.shape)?;
    expect_distinct(op, out, &[("x", x)])?;
    let count = to_u32(op, "elements", x.numel())?;
    if count == 0 {
        return Err(Error::invalid(op, "x has no elements"));
    }
    let (entry, flops) = match activation {
        Activation::QuickGelu => (entry::activation::QUICK_GELU, 5),
        Activation::Gelu => (entry::activation::GELU, 40),
    };
    let params = Params {
        count,
        ..Params::default()
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&x.buffer, &out.buffer],
            params: &params,
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
    .map(|d| d.with_flops(u64::from(count) * flops))
}

/// diffusers `GEGLU` after its projection: `x [rows, 2F]` → `out [rows, F]`,
/// `out[r, j] = x[r, j] · gelu(x[r, F + j])` (exact erf gelu).
#[derive(Clone, Copy, Debug)]
pub struct Geglu<'a> {
    pub x: &'a Tensor,
    pub out: &'a Tensor,
}

/// Builds the launch for `args`: `out`'s last dimension is F, `x`'s is 2F, the rows agree.
pub fn geglu(ctx: &GpuContext, args: &Geglu, label: &str) -> Result<Dispatch> {
    const OP: &str = "geglu";
    let Geglu { x, out } = *args;
    let features = out.shape.last().copied().unwrap_or(0);
    let mut want = out.shape.clone();
    if let Some(last) = want.last_mut() {
        *last *= 2;
    }
    if features == 0 || x.shape != want {
        return Err(Error::invalid(
            OP,
            format!(
                "x {:?} must be out {:?} with a last dimension twice as wide",
                x.shape, out.shape
            ),
        ));
    }
    expect_distinct(OP, out, &[("x", x)])?;
    let count = to_u32(OP, "elements", out.numel())?;
    to_u32(OP, "input elements", x.numel())?;
    let params = Params {
        count,
        features: to_u32(OP, "features", features)?,
        ..Params::default()
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::activation::GEGLU,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&x.buffer, &out.buffer],
            params: &params,
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
    .map(|d| d.with_flops(u64::from(count) * 41))
}
