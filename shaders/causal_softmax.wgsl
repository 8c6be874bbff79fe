// Causal row softmax of attention-score blocks, in place.
// PyTorch: x = torch.softmax(x + mask, dim=-1) on a [blocks, T, T] view, where mask[r, c] = −inf
// for c > r and 0 elsewhere (transformers' CLIP causal attention mask): row r of each T×T block
// attends to columns 0..=r only; the masked columns get probability exactly 0. A block may also be
// a window of query rows `query_offset .. query_offset + block_rows` of the T×T scores (attention
// chunked over query rows): local row i is query position r = query_offset + i.
//
// Bindings: 0 data [rows, cols] with rows a multiple of block_rows (read_write: the op overwrites
//           its input, so the one buffer is both input and output by necessity), 1 params.
//
// One workgroup per row; the grid may be 2-D (linear id = wid.x + wid.y * nwg.x) and workgroups
// past `rows` return at once. The row's query position is
// r = query_offset + row mod block_rows; every invocation strides over the columns in three
// passes: max over columns 0..=r (tree reduction), sum of
// exp(x − max) over 0..=r (tree reduction), then columns 0..=r are overwritten by
// exp(x − max) / sum and columns r+1.. by 0.
//
// Numerics: f32 throughout, as softmax.wgsl. Column 0 is never masked, so the max is finite and
// the sum ≥ 1 for finite rows; masked values are never read as numbers (a masked −inf or NaN
// cannot leak into the row), which is what the additive −inf mask gives in torch. Each invocation
// overwrites only the elements it read itself, after the barriers of the reductions, so working
// in place is race-free.
//
// Launcher: src/ops/causal_softmax.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup; must be a power of two (the tree halves it each step).
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // Number of rows (blocks · block_rows).
    rows: u32,
    // Length of each row (T keys).
    cols: u32,
    // Rows per block (T for whole square blocks).
    block_rows: u32,
    // Query position of each block's first row (0 for whole blocks).
    query_offset: u32,
}

@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

// The most negative finite f32: the identity of max for finite rows.
const LOWEST: f32 = -3.40282346638528859812e+38;

// Max of `value` over the workgroup; every invocation gets it. Call from uniform control flow.
fn workgroup_max(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = max(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Sum of `value` over the workgroup; every invocation gets it. Call from uniform control flow.
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
    if (row >= p.rows || p.cols == 0u || p.block_rows == 0u) {
        return;
    }
    let base = row * p.cols;
    // Columns 0..valid are attended to (never more than the row holds).
    let valid = min(p.query_offset + row % p.block_rows + 1u, p.cols);

    var m = LOWEST;
    for (var i = lid; i < valid; i = i + WORKGROUP_SIZE) {
        m = max(m, data[base + i]);
    }
    let row_max = workgroup_max(lid, m);

    var s = 0.0;
    for (var i = lid; i < valid; i = i + WORKGROUP_SIZE) {
        s = s + exp(data[base + i] - row_max);
    }
    let inv_sum = 1.0 / workgroup_sum(lid, s);

    for (var i = lid; i < p.cols; i = i + WORKGROUP_SIZE) {
        if (i < valid) {
            data[base + i] = exp(data[base + i] - row_max) * inv_sum;
        } else {
            data[base + i] = 0.0;
        }
    }
}
