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

// ---- Banded group norm (a decode split into row bands, src/model/autoencoder/banded.rs) -------
//
// The statistics must be those of the whole image, so the norm runs in two launches per band:
//   band_partial: bindings 0 input band [N, C, S_b], 1 stats [bands, N·groups, 4] (read_write),
//            2 params. One workgroup per (n, group) of the band writes (count, pivot, delta, m2)
//            at stats[band]: pivot = the band's first value of the group, delta = mean(x − pivot),
//            m2 = Σ((x − pivot) − delta)², the same two passes as `main`.
//   band_apply:   bindings 0 input band, 1 stats, 2 gamma [C], 3 beta [C], 4 output band, 5 params.
//            One workgroup per (n, group) combines every band's entry (Chan et al.'s parallel
//            variance, relative to band 0's pivot P: rel_b = (pivot_b − P) + delta_b,
//            delta = Σ count_b·rel_b / count, m2 = Σ m2_b + count_b·(rel_b − delta)²) and writes
//            y = ((x − P) − delta) · rstd · gamma + beta (then SiLU) for its band.
// Numerics: f32 as in `main`; with one band the result is `main`'s up to the rounding of
// count·delta / count. Counts are stored as f32 (exact below 2^24 elements per band and group).

struct PartialParams {
    // Batch size N.
    batch: u32,
    // Channels C.
    channels: u32,
    // Spatial size of the band S_b (rows_b · W).
    spatial: u32,
    // Number of groups.
    groups: u32,
    // Index of this band in `stats`.
    band: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> partial_input: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial_stats: array<f32>;
@group(0) @binding(2) var<uniform> pp: PartialParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn band_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = wid.x + wid.y * nwg.x;
    let cpg = pp.channels / pp.groups;
    let count = cpg * pp.spatial;
    if (item >= pp.batch * pp.groups || count == 0u) {
        return;
    }
    let n = item / pp.groups;
    let g = item % pp.groups;
    let base = (n * pp.channels + g * cpg) * pp.spatial;
    let pivot = partial_input[base];
    var acc = 0.0;
    for (var e = lid; e < count; e = e + WORKGROUP_SIZE) {
        acc = acc + (partial_input[base + e] - pivot);
    }
    let delta = workgroup_sum(lid, acc) / f32(count);
    acc = 0.0;
    for (var e = lid; e < count; e = e + WORKGROUP_SIZE) {
        let d = (partial_input[base + e] - pivot) - delta;
        acc = acc + d * d;
    }
    let m2 = workgroup_sum(lid, acc);
    if (lid == 0u) {
        let s = (pp.band * pp.batch * pp.groups + item) * 4u;
        partial_stats[s] = f32(count);
        partial_stats[s + 1u] = pivot;
        partial_stats[s + 2u] = delta;
        partial_stats[s + 3u] = m2;
    }
}

struct ApplyParams {
    // Batch size N.
    batch: u32,
    // Channels C.
    channels: u32,
    // Spatial size of the band S_b (rows_b · W).
    spatial: u32,
    // Number of groups.
    groups: u32,
    // Number of bands in `stats`.
    bands: u32,
    // Added to the variance before the square root.
    eps: f32,
    // 1 = apply SiLU after the affine transform.
    silu: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> apply_input: array<f32>;
@group(0) @binding(1) var<storage, read> apply_stats: array<f32>;
@group(0) @binding(2) var<storage, read> apply_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> apply_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> apply_output: array<f32>;
@group(0) @binding(5) var<uniform> ap: ApplyParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn band_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = wid.x + wid.y * nwg.x;
    let cpg = ap.channels / ap.groups;
    let count = cpg * ap.spatial;
    let entries = ap.batch * ap.groups;
    if (item >= entries || count == 0u) {
        return;
    }
    // Combine the bands (a handful of entries; every invocation does it, no barrier needed).
    let origin = apply_stats[item * 4u + 1u];
    var total = 0.0;
    var weighted = 0.0;
    for (var b = 0u; b < ap.bands; b = b + 1u) {
        let s = (b * entries + item) * 4u;
        let rel = (apply_stats[s + 1u] - origin) + apply_stats[s + 2u];
        total = total + apply_stats[s];
        weighted = weighted + apply_stats[s] * rel;
    }
    let delta = weighted / total;
    var m2 = 0.0;
    for (var b = 0u; b < ap.bands; b = b + 1u) {
        let s = (b * entries + item) * 4u;
        let rel = (apply_stats[s + 1u] - origin) + apply_stats[s + 2u];
        let d = rel - delta;
        m2 = m2 + apply_stats[s + 3u] + apply_stats[s] * d * d;
    }
    let rstd = 1.0 / sqrt(m2 / total + ap.eps);

    let n = item / ap.groups;
    let g = item % ap.groups;
    let base = (n * ap.channels + g * cpg) * ap.spatial;
    let c0 = g * cpg;
    for (var e = lid; e < count; e = e + WORKGROUP_SIZE) {
        let c = c0 + e / ap.spatial;
        let d = (apply_input[base + e] - origin) - delta;
        var y = d * rstd * apply_gamma[c] + apply_beta[c];
        if (ap.silu != 0u) {
            y = y / (1.0 + exp(-y));
        }
        apply_output[base + e] = y;
    }
}
