// Row softmax, in place, shaped for CPU adapters (Mesa llvmpipe / lavapipe): one subgroup of 8
// lanes per row, vec4 loads, no shared memory, no barriers.
//
// Same operation, parameters and numerics as softmax.wgsl (read its header), and the same bits:
// that kernel reduces each pass into 256 per-invocation partials P[lid] (element i goes to
// lid = i mod 256; the max starts at the lowest finite f32, the sum at 0, elements in i order)
// combined by a tree (stride 128, 64, …, 1). Here lane l keeps the partials of lid = 32·r + 4·l + c
// (r = 0..7, c = 0..3) as eight vec4s (component c), one vec4 load per 4 elements; the tree's
// strides 128, 64, 32 combine a lane's own vec4s, 16, 8, 4 combine lanes (subgroupShuffle), 2 and 1
// combine components, as group_norm_cpu.wgsl does. tests/ops_misc.rs compares the two kernels.
// In place: every lane reads and overwrites only its own vec4s (indices ≡ lane mod 8).
//
// Needs cols % 4 == 0 and subgroups of 8; src/ops/softmax.rs sends other rows to softmax.wgsl.
// Work split: subgroup s = workgroup · num_subgroups + subgroup_id takes row s. Bindings: 0 data
// (vec4s, read_write), 1 params.
//
// Launcher: src/ops/softmax_cpu.rs (the registry line is in src/gpu/kernel.rs).

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> data: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> p: Params;

const LOWEST: f32 = -3.40282346638528859812e+38;

// Vec4 `i4` of the row, or `fill` past its end (the identity of the pass's reduction).
fn load(base4: u32, cols4: u32, i4: u32, fill: f32) -> vec4<f32> {
    let ok = i4 < cols4;
    return select(vec4<f32>(fill), data[select(0u, base4 + i4, ok)], ok);
}

// softmax.wgsl's workgroup_max tree over the partials held as described above.
fn tree_max(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, a4: vec4<f32>,
            a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>, lane: u32) -> f32 {
    let c0 = max(max(a0, a4), max(a2, a6));
    let c1 = max(max(a1, a5), max(a3, a7));
    var t = max(c0, c1);
    t = max(t, subgroupShuffle(t, min(lane + 4u, 7u)));
    t = max(t, subgroupShuffle(t, min(lane + 2u, 7u)));
    t = max(t, subgroupShuffle(t, min(lane + 1u, 7u)));
    return subgroupBroadcast(max(max(t.x, t.z), max(t.y, t.w)), 0u);
}

// softmax.wgsl's workgroup_sum tree: the same additions in the same order.
fn tree_sum(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, a4: vec4<f32>,
            a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>, lane: u32) -> f32 {
    let c0 = (a0 + a4) + (a2 + a6);
    let c1 = (a1 + a5) + (a3 + a7);
    var t = c0 + c1;
    t = t + subgroupShuffle(t, min(lane + 4u, 7u));
    t = t + subgroupShuffle(t, min(lane + 2u, 7u));
    t = t + subgroupShuffle(t, min(lane + 1u, 7u));
    return subgroupBroadcast((t.x + t.z) + (t.y + t.w), 0u);
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
    let cols4 = p.cols / 4u;
    let base4 = row * cols4;

    var m0 = vec4<f32>(LOWEST); var m1 = vec4<f32>(LOWEST);
    var m2 = vec4<f32>(LOWEST); var m3 = vec4<f32>(LOWEST);
    var m4 = vec4<f32>(LOWEST); var m5 = vec4<f32>(LOWEST);
    var m6 = vec4<f32>(LOWEST); var m7 = vec4<f32>(LOWEST);
    for (var j = lane; j < cols4 + lane; j += 64u) {
        m0 = max(m0, load(base4, cols4, j, LOWEST));
        m1 = max(m1, load(base4, cols4, j + 8u, LOWEST));
        m2 = max(m2, load(base4, cols4, j + 16u, LOWEST));
        m3 = max(m3, load(base4, cols4, j + 24u, LOWEST));
        m4 = max(m4, load(base4, cols4, j + 32u, LOWEST));
        m5 = max(m5, load(base4, cols4, j + 40u, LOWEST));
        m6 = max(m6, load(base4, cols4, j + 48u, LOWEST));
        m7 = max(m7, load(base4, cols4, j + 56u, LOWEST));
    }
    let row_max = tree_max(m0, m1, m2, m3, m4, m5, m6, m7, lane);
    let mv = vec4<f32>(row_max);

    var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0); var s3 = vec4<f32>(0.0);
    var s4 = vec4<f32>(0.0); var s5 = vec4<f32>(0.0);
    var s6 = vec4<f32>(0.0); var s7 = vec4<f32>(0.0);
    for (var j = lane; j < cols4 + lane; j += 64u) {
        // Past the row: +0 (exp is not taken there), which leaves a +0-started sum's bits alone.
        s0 = s0 + select(vec4<f32>(0.0), exp(load(base4, cols4, j, 0.0) - mv), j < cols4);
        s1 = s1 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 8u, 0.0) - mv), j + 8u < cols4);
        s2 = s2 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 16u, 0.0) - mv), j + 16u < cols4);
        s3 = s3 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 24u, 0.0) - mv), j + 24u < cols4);
        s4 = s4 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 32u, 0.0) - mv), j + 32u < cols4);
        s5 = s5 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 40u, 0.0) - mv), j + 40u < cols4);
        s6 = s6 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 48u, 0.0) - mv), j + 48u < cols4);
        s7 = s7 + select(vec4<f32>(0.0), exp(load(base4, cols4, j + 56u, 0.0) - mv), j + 56u < cols4);
    }
    let inv_sum = 1.0 / tree_sum(s0, s1, s2, s3, s4, s5, s6, s7, lane);

    for (var i = lane; i < cols4; i += 8u) {
        data[base4 + i] = exp(data[base4 + i] - mv) * inv_sum;
    }
}
