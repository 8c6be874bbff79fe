// Layer normalisation over the last dimension.
// PyTorch: y = F.layer_norm(x, (cols,), gamma, beta, eps) on a [rows, cols] view (the
// layer_norm1 / layer_norm2 / final_layer_norm of transformers' CLIP text encoder).
//
// Bindings: 0 input [rows, cols], 1 gamma [cols], 2 beta [cols], 3 output [rows, cols], 4 params.
//
// One workgroup per row; the grid may be 2-D (linear id = wid.x + wid.y * nwg.x) and workgroups
// past `rows` return at once. Every invocation strides over the row (any length, 1 included) in
// three passes:
//   1. sum of (x − pivot), pivot = the row's first value; shared-memory tree reduction;
//   2. sum of (x − mean)², with the mean kept as the pair pivot + delta; tree reduction;
//   3. y = (x − mean) · rstd · gamma[c] + beta[c], one store per element.
//
// Numerics: f32 statistics. The variance is the biased mean of squared deviations from the
// already-known mean (two passes, never E[x²] − E[x]²), as torch computes it; the pivot shift keeps
// the sums small when a row sits on a large common offset (x = 1000 + noise), so the normalised
// output keeps full precision there. Partial sums are combined by a tree, so rounding grows with
// log2(WORKGROUP_SIZE), not with the row length. rstd = 1 / sqrt(var + eps).
//
// Launcher: src/ops/layer_norm.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup; must be a power of two (the tree halves it each step).
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // Number of rows (tokens).
    rows: u32,
    // Length of each row (channels); gamma and beta have this many values.
    cols: u32,
    // Added to the variance before the square root.
    eps: f32,
    _pad0: u32,
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
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows || p.cols == 0u) {
        return;
    }
    let base = row * p.cols;
    let inv_count = 1.0 / f32(p.cols);

    // Pass 1: mean, as pivot + delta.
    let pivot = input[base];
    var acc = 0.0;
    for (var c = lid; c < p.cols; c = c + WORKGROUP_SIZE) {
        acc = acc + (input[base + c] - pivot);
    }
    let delta = workgroup_sum(lid, acc) * inv_count;

    // Pass 2: biased variance from the deviations.
    acc = 0.0;
    for (var c = lid; c < p.cols; c = c + WORKGROUP_SIZE) {
        let d = (input[base + c] - pivot) - delta;
        acc = acc + d * d;
    }
    let variance = workgroup_sum(lid, acc) * inv_count;
    let rstd = 1.0 / sqrt(variance + p.eps);

    // Pass 3: normalise, scale, shift.
    for (var c = lid; c < p.cols; c = c + WORKGROUP_SIZE) {
        let d = (input[base + c] - pivot) - delta;
        output[base + c] = d * rstd * gamma[c] + beta[c];
    }
}
