// Group normalisation with an optional fused SiLU.
// PyTorch: y = F.group_norm(x, groups, gamma, beta, eps), then y * sigmoid(y) when `silu` is set
// (the GroupNorm → SiLU pair of every diffusers ResnetBlock2D).
//
// Bindings: 0 input [N, C, S] (S = product of the spatial dims), 1 gamma [C], 2 beta [C],
//           3 output [N, C, S], 4 params.
//
// One workgroup per (n, group); the grid may be 2-D (linear id = wid.x + wid.y * nwg.x) and
// workgroups past N·groups return at once. A group is the contiguous run of cpg·S values starting
// at (n·C + g·cpg)·S. Every invocation strides over the run (so a group of 1 element and one of
// ~300k both work) and three passes follow:
//   1. sum of (x − pivot), pivot = the group's first value; shared-memory tree reduction;
//   2. sum of (x − mean)², with the mean kept as the pair pivot + delta; tree reduction;
//   3. y = (x − mean) · rstd · gamma[c] + beta[c] (then SiLU), one store per element.
//
// Numerics: everything in f32. The variance is the biased mean of squared deviations from the
// already-known mean (two passes over the data, never E[x²] − E[x]²), as torch computes it. The
// shift by the pivot makes the summed terms small when the data sit on a large common offset
// (x = 1000 + noise): x − pivot is exact there, and (x − pivot) − delta never rounds at the
// offset's magnitude, so the normalised output keeps full precision. Per-thread partial sums are
// combined by a tree, so rounding grows with log2(WORKGROUP_SIZE), not with the group size.
// rstd = 1 / sqrt(var + eps). SiLU is y / (1 + exp(−y)), which is −0 (not NaN) when exp
// overflows for very negative y.
//
// Launcher: src/ops/group_norm.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup; must be a power of two (the tree halves it each step).
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // Batch size N.
    batch: u32,
    // Channels C.
    channels: u32,
    // Spatial size S (H·W).
    spatial: u32,
    // Number of groups; C is a multiple of it.
    groups: u32,
    // Added to the variance before the square root.
    eps: f32,
    // 1 = apply SiLU after the affine transform.
    silu: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

// Sums `value` over the workgroup; every invocation gets the total. Must be called from uniform
// control flow. Ends with a barrier so `partial` can be reused right away.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Uniform across the workgroup, so this early return keeps the barriers below uniform.
    let item = wid.x + wid.y * nwg.x;
    let cpg = p.channels / p.groups;
    let count = cpg * p.spatial;
    if (item >= p.batch * p.groups || count == 0u) {
        return;
    }
    let n = item / p.groups;
    let g = item % p.groups;
    let base = (n * p.channels + g * cpg) * p.spatial;
    let inv_count = 1.0 / f32(count);

    // Pass 1: mean, as pivot + delta.
    let pivot = input[base];
    var acc = 0.0;
    for (var e = lid; e < count; e = e + WORKGROUP_SIZE) {
        acc = acc + (input[base + e] - pivot);
    }
    let delta = workgroup_sum(lid, acc) * inv_count;

    // Pass 2: biased variance from the deviations.
    acc = 0.0;
    for (var e = lid; e < count; e = e + WORKGROUP_SIZE) {
        let d = (input[base + e] - pivot) - delta;
        acc = acc + d * d;
    }
    let variance = workgroup_sum(lid, acc) * inv_count;
    let rstd = 1.0 / sqrt(variance + p.eps);

    // Pass 3: normalise, scale, shift, optional SiLU.
    let c0 = g * cpg;
    for (var e = lid; e < count; e = e + WORKGROUP_SIZE) {
        let c = c0 + e / p.spatial;
        let d = (input[base + e] - pivot) - delta;
        var y = d * rstd * gamma[c] + beta[c];
        if (p.silu != 0u) {
            y = y / (1.0 + exp(-y));
        }
        output[base + e] = y;
    }
}
