// Layer normalisation over the last dimension shaped for CPU adapters (Mesa llvmpipe / lavapipe):
// one subgroup of 8 lanes per row, vec4 loads, no shared memory, no barriers.
//
// Same operation, parameters and numerics as layer_norm.wgsl (read its header), and the same bits:
// that kernel sums each pass into 256 per-invocation partials (element c of the row goes to
// lid = c mod 256, added in c order to a partial that starts at 0) and adds them by a tree; this
// one keeps the partials of lid = 32·r + 4·l + c in lane l's vec4 A[r] (component c) and combines
// them in the same order, exactly as group_norm_cpu.wgsl does for a group. tests/ops_text.rs
// compares the two kernels.
//
// Needs cols % 4 == 0 (whole vec4s per row, gamma and beta read as vec4s) and subgroups of 8;
// src/ops/layer_norm.rs sends other rows to layer_norm.wgsl.
// Work split: subgroup s = workgroup · num_subgroups + subgroup_id normalises row s. Bindings:
// 0 input [rows, C] (vec4s), 1 gamma [C] (vec4s), 2 beta [C] (vec4s), 3 output (vec4s), 4 params.
//
// Launcher: src/ops/layer_norm_cpu.rs (the registry line is in src/gpu/kernel.rs).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> gamma: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> beta: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

// The partials' vec4 at A[r]'s place in chunk j of 256 elements (vec4 index from the run's
// start), or zeros past the run (adding +0 to a partial that started at +0 changes no bit).
fn chunk(base4: u32, count4: u32, i4: u32) -> vec4<f32> {
    let ok = i4 < count4;
    return select(vec4<f32>(0.0), input[select(0u, base4 + i4, ok)], ok);
}

// The tree of layer_norm.wgsl's workgroup_sum over the 256 partials held as described above;
// every lane gets the total.
fn tree(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, a4: vec4<f32>,
        a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>, lane: u32) -> f32 {
    // Stride 128 (r + 4), 64 (r + 2), 32 (r + 1): within the lane.
    let b0 = a0 + a4;
    let b1 = a1 + a5;
    let b2 = a2 + a6;
    let b3 = a3 + a7;
    let c0 = b0 + b2;
    let c1 = b1 + b3;
    var t = c0 + c1;
    // Stride 16, 8, 4: lane l + 4, + 2, + 1 (lanes past the live ones compute unused values).
    t = t + subgroupShuffle(t, min(lane + 4u, 7u));
    t = t + subgroupShuffle(t, min(lane + 2u, 7u));
    t = t + subgroupShuffle(t, min(lane + 1u, 7u));
    // Stride 2 and 1: components (lane 0 holds P[0..3]).
    let u = vec2<f32>(t.x + t.z, t.y + t.w);
    return subgroupBroadcast(u.x + u.y, 0u);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * nsg + sid;
    if (row >= p.rows || p.cols == 0u) {
        return;
    }
    let count4 = p.cols / 4u;
    let base4 = row * count4;
    let inv_count = 1.0 / f32(p.cols);
    let pivot = input[base4].x;
    let pv = vec4<f32>(pivot);

    // Pass 1: mean, as pivot + delta.
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    for (var j = lane; j < count4 + lane; j += 64u) {
        // j = 64·chunk + lane: the vec4s 64·chunk + 8·r + lane.
        a0 = a0 + select(vec4<f32>(0.0), chunk(base4, count4, j) - pv, j < count4);
        a1 = a1 + select(vec4<f32>(0.0), chunk(base4, count4, j + 8u) - pv, j + 8u < count4);
        a2 = a2 + select(vec4<f32>(0.0), chunk(base4, count4, j + 16u) - pv, j + 16u < count4);
        a3 = a3 + select(vec4<f32>(0.0), chunk(base4, count4, j + 24u) - pv, j + 24u < count4);
        a4 = a4 + select(vec4<f32>(0.0), chunk(base4, count4, j + 32u) - pv, j + 32u < count4);
        a5 = a5 + select(vec4<f32>(0.0), chunk(base4, count4, j + 40u) - pv, j + 40u < count4);
        a6 = a6 + select(vec4<f32>(0.0), chunk(base4, count4, j + 48u) - pv, j + 48u < count4);
        a7 = a7 + select(vec4<f32>(0.0), chunk(base4, count4, j + 56u) - pv, j + 56u < count4);
    }
    let delta = tree(a0, a1, a2, a3, a4, a5, a6, a7, lane) * inv_count;
    let dv = vec4<f32>(delta);

    // Pass 2: biased variance from the deviations.
    a0 = vec4<f32>(0.0); a1 = vec4<f32>(0.0);
    a2 = vec4<f32>(0.0); a3 = vec4<f32>(0.0);
    a4 = vec4<f32>(0.0); a5 = vec4<f32>(0.0);
    a6 = vec4<f32>(0.0); a7 = vec4<f32>(0.0);
    for (var j = lane; j < count4 + lane; j += 64u) {
        let d0 = select(vec4<f32>(0.0), (chunk(base4, count4, j) - pv) - dv, j < count4);
        let d1 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 8u) - pv) - dv, j + 8u < count4);
        let d2 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 16u) - pv) - dv, j + 16u < count4);
        let d3 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 24u) - pv) - dv, j + 24u < count4);
        let d4 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 32u) - pv) - dv, j + 32u < count4);
        let d5 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 40u) - pv) - dv, j + 40u < count4);
        let d6 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 48u) - pv) - dv, j + 48u < count4);
        let d7 = select(vec4<f32>(0.0), (chunk(base4, count4, j + 56u) - pv) - dv, j + 56u < count4);
        a0 = a0 + d0 * d0;
        a1 = a1 + d1 * d1;
        a2 = a2 + d2 * d2;
        a3 = a3 + d3 * d3;
        a4 = a4 + d4 * d4;
        a5 = a5 + d5 * d5;
        a6 = a6 + d6 * d6;
        a7 = a7 + d7 * d7;
    }
    let variance = tree(a0, a1, a2, a3, a4, a5, a6, a7, lane) * inv_count;
    let rstd = 1.0 / sqrt(variance + p.eps);

    // Pass 3: normalise, scale, shift.
    for (var i = lane; i < count4; i += 8u) {
        let d = (input[base4 + i] - pv) - dv;
        output[base4 + i] = d * rstd * gamma[i] + beta[i];
    }
}
