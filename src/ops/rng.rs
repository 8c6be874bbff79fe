//! Counter-based standard-normal noise of `shaders/rng.wgsl`: Philox 4x32-10 keyed by a 64-bit
//! seed, counter `(element / 4, image, step, stream)`, then Box–Muller with accurate in-shader
//! ln / sqrt / sincos. Element `e` of global image `i` at step `s` is a pure function of
//! `(seed, i, s, stream, e)`: the same on every batch split and, up to float rounding (< 1e-6
//! absolute from the f64 transform), on every adapter. The CPU reference is [`crate::reference::rng`].
//!
//! Sampling loops: every parameter lives in the dispatch's own 32-byte uniform block, so a
//! sampler plans one [`Dispatch`] per step up front ([`normal_noise_steps`]; the pipeline is
//! compiled once and shared) and replays them; nothing is rebuilt or rewritten between steps.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Kernel, Tensor};
use crate::ops::elementwise::{element_grid, expect_distinct, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

/// The `normal` entry point's parameter block (`NormalParams` in `rng.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct NormalParams {
    seed_lo: u32,
    seed_hi: u32,
    first_image: u32,
    step: u32,
    stream: u32,
    images: u32,
    numel: u32,
    quads: u32,
}
const _: () = assert!(std::mem::size_of::<NormalParams>().is_multiple_of(16));

/// The raw entry points' parameter block (`CountParams` in `rng.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct CountParams {
    count: u32,
    _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<CountParams>().is_multiple_of(16));

/// What one `normal` launch covers: the parameter block without the step, and its grid.
struct NormalPlan {
    params: NormalParams,
    workgroups: [u32; 3],
    quads_total: u64,
}

fn plan(
    ctx: &GpuContext,
    op: &str,
    out: &Tensor,
    seed: u64,
    first_image: u32,
    stream: u32,
) -> Result<NormalPlan> {
    let Some(&images) = out.shape.first() else {
        return Err(Error::invalid(
            op,
            "out is a scalar; expected [N, ...] (images first)",
        ));
    };
    // An empty batch still has a per-image size.
    let numel = out
        .numel()
        .checked_div(images)
        .unwrap_or_else(|| out.shape[1..].iter().product());
    let images = to_u32(op, "N", images)?;
    let numel = to_u32(op, "elements per image", numel)?;
    to_u32(op, "output elements", out.numel())?;
    if images > 0 && first_image.checked_add(images - 1).is_none() {
        return Err(Error::invalid(
            op,
            format!(
                "images {first_image} .. {first_image} + {images} overflow the u32 image index"
            ),
        ));
    }
    let quads = numel.div_ceil(4);
    let quads_total = u64::from(images) * u64::from(quads);
    let count = u32::try_from(quads_total).map_err(|_| {
        Error::invalid(
            op,
            format!("{quads_total} Philox calls do not fit the kernel's 32-bit indices"),
        )
    })?;
    Ok(NormalPlan {
        params: NormalParams {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            first_image,
            step: 0,
            stream,
            images,
            numel,
            quads,
        },
        workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        quads_total,
    })
}

fn launch(
    ctx: &GpuContext,
    out: &Tensor,
    plan: &NormalPlan,
    step: u32,
    label: &str,
) -> Result<Dispatch> {
    let params = NormalParams {
        step,
        ..plan.params
    };
    Dispatch::new(
        ctx,
        Kernel::Rng,
        "normal",
        &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
        label,
        &[&out.buffer],
        &params,
        plan.workgroups,
    )
    // Philox: 10 rounds of 2 wide multiplies (~12 ops each with the 16-bit split); Box–Muller:
    // ~40 flops per pair. Counted as ~300 ops per call of four normals.
    .map(|d| d.with_flops(plan.quads_total * 300))
}

/// Fills `out` (`[N, ...]`, images first; each image holds `out.numel() / N` elements) with
/// standard normals: element `e` of `out`'s image `n` is
/// `reference::rng::normal(seed, first_image + n, step, stream, e)`. `first_image` is the global
/// index of `out`'s image 0, so a batch split into chunks starting at images `k` reproduces the
/// unsplit batch bit for bit. Use distinct `stream`s for independent uses at one step (e.g. 0 for
/// the initial latents, 1 for per-step noise).
pub fn normal_noise(
    ctx: &GpuContext,
    out: &Tensor,
    seed: u64,
    first_image: u32,
    step: u32,
    stream: u32,
    label: &str,
) -> Result<Dispatch> {
    let plan = plan(ctx, "normal_noise", out, seed, first_image, stream)?;
    launch(ctx, out, &plan, step, label)
}

/// [`normal_noise`] for every step in `steps`, planned at once: entry `j` fills `out` with the
/// noise of step `steps[j]`. Each dispatch owns its tiny uniform block and bind group (the
/// pipeline is shared), so a sampling loop records them once at plan time and replays them with
/// nothing rebuilt or uploaded between steps. Labels are `label[step]`.
pub fn normal_noise_steps(
    ctx: &GpuContext,
    out: &Tensor,
    seed: u64,
    first_image: u32,
    steps: &[u32],
    stream: u32,
    label: &str,
) -> Result<Vec<Dispatch>> {
    let plan = plan(ctx, "normal_noise_steps", out, seed, first_image, stream)?;
    steps
        .iter()
        .map(|&step| launch(ctx, out, &plan, step, &format!("{label}[{step}]")))
        .collect()
}

/// Element count of a raw tensor viewed as `[n, width]`.
fn rows(op: &str, name: &str, tensor: &Tensor, width: usize) -> Result<usize> {
    let numel = tensor.numel();
    if !numel.is_multiple_of(width) {
        return Err(Error::invalid(
            op,
            format!(
                "{name} has shape {:?} ({numel} words), expected a multiple of {width}",
                tensor.shape
            ),
        ));
    }
    Ok(numel / width)
}

/// Known-answer hook: raw Philox 4x32-10 on the GPU. `input` holds `n` rows of six u32 bit
/// patterns (`counter[0..4], key[0..2]`; upload with `f32::from_bits`), `out` receives `n` rows of
/// four u32 words (read back with `f32::to_bits`). Both are treated as plain 32-bit storage.
pub fn philox_u32(ctx: &GpuContext, input: &Tensor, out: &Tensor, label: &str) -> Result<Dispatch> {
    const OP: &str = "philox_u32";
    raw(ctx, OP, "philox_u32", input, out, [6, 4], label)
}

/// Accuracy hook: the shader's Box–Muller transform of `n` word pairs. `input` holds `n` rows of
/// two u32 bit patterns `(a, b)` (upload with `f32::from_bits`); `out` receives `n` rows of
/// `(r cos 2πu2, r sin 2πu2)` as f32, comparable with `reference::rng::box_muller(a, b)`.
pub fn box_muller_u32(
    ctx: &GpuContext,
    input: &Tensor,
    out: &Tensor,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "box_muller_u32";
    raw(ctx, OP, "box_muller_u32", input, out, [2, 2], label)
}

fn raw(
    ctx: &GpuContext,
    op: &str,
    entry_point: &'static str,
    input: &Tensor,
    out: &Tensor,
    [in_width, out_width]: [usize; 2],
    label: &str,
) -> Result<Dispatch> {
    let n = rows(op, "input", input, in_width)?;
    let n_out = rows(op, "out", out, out_width)?;
    if n != n_out {
        return Err(Error::invalid(
            op,
            format!(
                "input holds {n} rows of {in_width} words but out holds {n_out} rows of {out_width}"
            ),
        ));
    }
    expect_distinct(op, out, &[("input", input)])?;
    let count = to_u32(op, "rows", n)?;
    Dispatch::new(
        ctx,
        Kernel::Rng,
        entry_point,
        &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
        label,
        &[&input.buffer, &out.buffer],
        &CountParams {
            count,
            _pad: [0; 3],
        },
        element_grid(ctx, count, WORKGROUP_SIZE)?,
    )
}
