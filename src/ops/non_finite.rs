//! The GPU non-finite check of `shaders/non_finite.wgsl`: launches that test a tensor for NaN /
//! ±inf after chosen inference steps and reduce what they see into a four-word status tensor —
//! the first step that saw a non-finite value and, for the final check, how many there are and
//! where the first is. A run reads the status back (16 bytes) instead of scanning its samples on
//! the CPU. Every launch of a run reads its step from one uniform table through a dynamic offset
//! and shares one bind group, so the check adds no buffer per step.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Access, Dispatch, GpuContext, SharedBindings,
    SharedBindingsArgs, SharedDispatchArgs, Tensor, UniformLayout, UniformTable,
};
use crate::ops::elementwise::{element_grid, expect_distinct, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

const CONSTANTS: &[(&str, f64)] = &[("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)];

/// Binding 0 x (read), binding 1 the status words (read_write); the parameter block follows at
/// binding 2 with a dynamic offset.
const ACCESS: &[Access] = &[Access::Read, Access::ReadWrite];

/// Words of the status tensor.
pub const STATUS_WORDS: usize = 4;

/// "None seen" in the status' minimum words.
const NONE: u32 = u32::MAX;

uniform_struct! {
    /// `Params` of `non_finite.wgsl`.
    pub struct Params = "Params" {
        numel: u32,
        step: u32,
        flags: u32,
        _pad0: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];

shader_flags! {
    /// Also count the non-finite elements and record the first one's index.
    FLAG_COUNT = 1,
}

/// A zeroed status: four u32 words held in an f32 tensor (bit patterns, never arithmetic) so it
/// is allocated, reset and read back like any tensor.
pub fn non_finite_status(ctx: &GpuContext, label: &str) -> Result<Tensor> {
    let status = Tensor::zeros(ctx, &[STATUS_WORDS], label)?;
    reset_non_finite_status(ctx, &status)?;
    Ok(status)
}

/// Sets `status` to "nothing seen" (queued before later submissions).
pub fn reset_non_finite_status(ctx: &GpuContext, status: &Tensor) -> Result<()> {
    let words = [NONE, 0, NONE, 0].map(f32::from_bits);
    status.write(ctx, &words)
}

/// One check per entry of `steps`: after the launch for `steps[i]` is recorded behind the
/// dispatches that produce `x` at that step, the status remembers the smallest step index that saw
/// a non-finite element of `x`. The last launch (the final check) also counts them.
#[derive(Clone, Copy, Debug)]
pub struct NonFiniteChecks<'a> {
    /// The tensor tested (the sample x), read whole.
    pub x: &'a Tensor,
    /// The status words ([`non_finite_status`]).
    pub status: &'a Tensor,
    /// The step index each launch records, in launch order.
    pub steps: &'a [u32],
}

/// Builds the launches of `args`: one uniform table with every step's block and one bind group.
pub fn non_finite_checks(
    ctx: &GpuContext,
    args: &NonFiniteChecks,
    label: &str,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "non_finite";
    let NonFiniteChecks { x, status, steps } = *args;
    if status.numel() != STATUS_WORDS {
        return Err(Error::invalid(
            OP,
            format!(
                "status has shape {:?}, expected [{STATUS_WORDS}]",
                status.shape
            ),
        ));
    }
    expect_distinct(OP, status, &[("x", x)])?;
    let numel = to_u32(OP, "elements", x.numel())?;
    let Some(last) = steps.len().checked_sub(1) else {
        return Err(Error::invalid(OP, "no step to check"));
    };
    let blocks: Vec<Params> = steps
        .iter()
        .enumerate()
        .map(|(i, &step)| Params {
            numel,
            step,
            flags: if i == last { FLAG_COUNT } else { 0 },
            ..Params::default()
        })
        .collect();
    let table = UniformTable::new(ctx, &format!("{label} params"), &blocks)?;
    let bindings = SharedBindings::new(
        ctx,
        &SharedBindingsArgs {
            access: ACCESS,
            storage: &[&x.buffer, &status.buffer],
            table: &table,
            label,
        },
    )?;
    let workgroups = element_grid(ctx, numel, WORKGROUP_SIZE)?;
    steps
        .iter()
        .enumerate()
        .map(|(slot, step)| {
            Dispatch::shared(
                ctx,
                &SharedDispatchArgs {
                    entry: entry::non_finite::MAIN,
                    constants: CONSTANTS,
                    label: &format!("{label} after step {step}"),
                    bindings: &bindings,
                    slot,
                    workgroups,
                },
            )
        })
        .collect()
}

/// What the status words say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFiniteReport {
    /// The smallest step index whose check saw a non-finite element.
    pub first_step: Option<u32>,
    /// Non-finite elements the final check counted.
    pub count: u32,
    /// The final check's first non-finite element (flat index).
    pub first_index: Option<u32>,
}

impl NonFiniteReport {
    /// Decodes the status words read back from the status tensor.
    pub fn from_status(words: &[f32]) -> Result<Self> {
        let [first_step, count, first_index, _] = words else {
            return Err(Error::invalid(
                "non_finite",
                format!(
                    "{} status words read back, expected {STATUS_WORDS}",
                    words.len()
                ),
            ));
        };
        let some = |w: &f32| Some(w.to_bits()).filter(|&v| v != NONE);
        Ok(NonFiniteReport {
            first_step: some(first_step),
            count: count.to_bits(),
            first_index: some(first_index),
        })
    }

    /// Reads `status` back (waits for the work submitted so far).
    pub fn read(ctx: &GpuContext, status: &Tensor) -> Result<Self> {
        Self::from_status(&status.read(ctx)?)
    }
}
