//! Counter-based standard-normal noise of `shaders/rng.wgsl`: Philox 4x32-10 keyed by a 64-bit
//! seed, counter `(element / 4, image, step, stream)`, then Box–Muller with accurate in-shader
//! ln / sqrt / sincos. Element `e` of global image `i` at step `s` is a pure function of
//! `(seed, i, s, stream, e)`: the same on every batch split and, up to float rounding (< 1e-6
//! absolute from the f64 transform), on every adapter. The CPU reference is [`crate::reference::rng`].
//!
//! Sampling loops: [`normal_noise_steps`] plans one launch per (step, stream) key up front, all
//! reading their parameter block from one uniform table through a dynamic offset into one shared
//! bind group (the pipeline is compiled once), so a loop replays them with nothing created,
//! rebuilt or uploaded between steps.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, shader_flags, uniform_struct, Access, Dispatch, DispatchArgs, EntryPoint, GpuContext,
    SharedBindings, SharedBindingsArgs, SharedDispatchArgs, Tensor, UniformLayout, UniformTable,
};
use crate::ops::elementwise::{element_grid, expect_distinct, to_u32};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader).
const WORKGROUP_SIZE: u32 = 256;

const CONSTANTS: &[(&str, f64)] = &[("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)];

/// The `normal` entry point's storage binding (`out`), for its explicit layout.
const NORMAL_ACCESS: &[Access] = &[Access::ReadWrite];

uniform_struct! {
    /// The `normal` entry point's parameter block (`NormalParams` in `rng.wgsl`).
    pub struct NormalParams = "NormalParams" {
        seed_lo: u32,
        seed_hi: u32,
        first_image: u32,
        step: u32,
        stream: u32,
        images: u32,
        numel: u32,
        quads: u32,
    }
}

uniform_struct! {
    /// The raw entry points' parameter block (`CountParams` in `rng.wgsl`).
    pub struct CountParams = "CountParams" {
        count: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[NormalParams::LAYOUT, CountParams::LAYOUT];
shader_flags! {}

/// The counter words a draw varies: the sampler step and the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKey {
    pub step: u32,
    pub stream: u32,
}

/// Fills `out` (`[N, ...]`, images first; each image holds `out.numel() / N` elements) with
/// standard normals: element `e` of `out`'s image `n` is
/// `reference::rng::normal(seed, first_image + n, step, stream, e)`. `first_image` is the global
/// index of `out`'s image 0, so a batch split into chunks starting at images `k` reproduces the
/// unsplit batch bit for bit. Use distinct `stream`s for independent uses at one step (e.g. 0 for
/// the initial latents, 1 for per-step noise).
#[derive(Clone, Copy, Debug)]
pub struct NormalNoise<'a> {
    pub out: &'a Tensor,
    pub seed: u64,
    pub first_image: u32,
    pub step: u32,
    pub stream: u32,
}

/// [`NormalNoise`] for every key of `keys`, planned at once: launch `j` fills `out` with the
/// noise of `keys[j]`.
#[derive(Clone, Copy, Debug)]
pub struct NormalNoiseSteps<'a> {
    pub out: &'a Tensor,
    pub seed: u64,
    pub first_image: u32,
    pub keys: &'a [NoiseKey],
}

/// What one `normal` launch covers: the parameter block without the key, and its grid.
struct NormalPlan {
    params: NormalParams,
    workgroups: [u32; 3],
    quads_total: u64,
}

impl NormalPlan {
    fn params(&self, key: NoiseKey) -> NormalParams {
        NormalParams {
            step: key.step,
            stream: key.stream,
            ..self.params
        }
    }

    // Philox: 10 rounds of 2 wide multiplies (~12 ops each with the 16-bit split); Box–Muller:
    // ~40 flops per pair. Counted as ~300 ops per call of four normals.
    fn flops(&self) -> u64 {
        self.quads_total * 300
    }
}

fn plan(
    ctx: &GpuContext,
    op: &str,
    out: &Tensor,
    seed: u64,
    first_image: u32,
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
            stream: 0,
            images,
            numel,
            quads,
        },
        workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        quads_total,
    })
}

/// Builds one `normal` launch with its own parameter block.
pub fn normal_noise(ctx: &GpuContext, args: &NormalNoise, label: &str) -> Result<Dispatch> {
    let plan = plan(ctx, "normal_noise", args.out, args.seed, args.first_image)?;
    let params = plan.params(NoiseKey {
        step: args.step,
        stream: args.stream,
    });
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::rng::NORMAL,
            constants: CONSTANTS,
            label,
            storage: &[&args.out.buffer],
            params: &params,
            workgroups: plan.workgroups,
        },
    )
    .map(|d| d.with_flops(plan.flops()))
}

/// Builds the launches of `args.keys` (none for no keys): one uniform buffer holds every key's
/// parameter block and one bind group serves them all through dynamic offsets, so the number of
/// buffers and bind groups created does not depend on the number of keys. Labels are
/// `label[stream:step]`.
pub fn normal_noise_steps(
    ctx: &GpuContext,
    args: &NormalNoiseSteps,
    label: &str,
) -> Result<Vec<Dispatch>> {
    let plan = plan(
        ctx,
        "normal_noise_steps",
        args.out,
        args.seed,
        args.first_image,
    )?;
    if args.keys.is_empty() {
        return Ok(Vec::new());
    }
    let blocks: Vec<NormalParams> = args.keys.iter().map(|&k| plan.params(k)).collect();
    let table = UniformTable::new(ctx, &format!("{label} params"), &blocks)?;
    let bindings = SharedBindings::new(
        ctx,
        &SharedBindingsArgs {
            access: NORMAL_ACCESS,
            storage: &[&args.out.buffer],
            table: &table,
            label,
        },
    )?;
    args.keys
        .iter()
        .enumerate()
        .map(|(slot, key)| {
            Dispatch::shared(
                ctx,
                &SharedDispatchArgs {
                    entry: entry::rng::NORMAL,
                    constants: CONSTANTS,
                    label: &format!("{label}[{}:{}]", key.stream, key.step),
                    bindings: &bindings,
                    slot,
                    workgroups: plan.workgroups,
                },
            )
            .map(|d| d.with_flops(plan.flops()))
        })
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

/// The operands of the raw known-answer entry points: 32-bit words in, 32-bit words out.
#[derive(Clone, Copy, Debug)]
pub struct RawWords<'a> {
    pub input: &'a Tensor,
    pub out: &'a Tensor,
}

/// Known-answer hook: raw Philox 4x32-10 on the GPU. `input` holds `n` rows of six u32 bit
/// patterns (`counter[0..4], key[0..2]`; upload with `f32::from_bits`), `out` receives `n` rows of
/// four u32 words (read back with `f32::to_bits`). Both are treated as plain 32-bit storage.
pub fn philox_u32(ctx: &GpuContext, args: &RawWords, label: &str) -> Result<Dispatch> {
    raw(ctx, entry::rng::PHILOX_U32, args, [6, 4], label)
}

/// Accuracy hook: the shader's Box–Muller transform of `n` word pairs. `input` holds `n` rows of
/// two u32 bit patterns `(a, b)` (upload with `f32::from_bits`); `out` receives `n` rows of
/// `(r cos 2πu2, r sin 2πu2)` as f32, comparable with `reference::rng::box_muller(a, b)`.
pub fn box_muller_u32(ctx: &GpuContext, args: &RawWords, label: &str) -> Result<Dispatch> {
    raw(ctx, entry::rng::BOX_MULLER_U32, args, [2, 2], label)
}

fn raw(
    ctx: &GpuContext,
    entry: EntryPoint,
    args: &RawWords,
    [in_width, out_width]: [usize; 2],
    label: &str,
) -> Result<Dispatch> {
    let op = entry.name;
    let RawWords { input, out } = *args;
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
        &DispatchArgs {
            entry,
            constants: CONSTANTS,
            label,
            storage: &[&input.buffer, &out.buffer],
            params: &CountParams {
                count,
                ..CountParams::default()
            },
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
}
