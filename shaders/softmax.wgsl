// Row softmax, in place.
// PyTorch: x = torch.softmax(x.view(rows, cols), dim=-1) (attention probabilities).
//
// Bindings: 0 data [rows, cols] (read_write: the op overwrites its input, so the one buffer is
//           both input and output by necessity), 1 params.
//
// One workgroup per row; the grid may be 2-D (linear id = wid.x + wid.y * nwg.x) and workgroups
// past `rows` return at once. Every invocation strides over the row (cols from 1 up to ~16k and
// beyond; rows are re-read from memory rather than cached, since 16k floats exceed workgroup
// memory) in three passes: row max (tree reduction), sum of exp(x − max) (tree reduction), then
// each element is overwritten by exp(x − max) / sum.
//
// Numerics: f32 throughout. Subtracting the row max first makes every exponent ≤ 0, so exp never
// overflows (logits of ±80 or a spread of 1e4 stay finite), the sum is ≥ 1, and a row always sums
// to 1 within rounding. The per-thread partial sums are combined by a tree. In pass 3 each
// invocation overwrites only the elements it read itself in passes 1 and 2, and the barriers of
// the reductions order every earlier read before any write, so working in place is race-free.
//
// Launcher: src/ops/softmax.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup; must be a power of two (the tree halves it each step).
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // Number of rows.
    rows: u32,
    // Length of each row.
    cols: u32,
    _pad0: u32,
    _pad1: u32,
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
    if (row >= p.rows || p.cols == 0u) {
        return;
    }
    let base = row * p.cols;

    var m = LOWEST;
    for (var i = lid; i < p.cols; i = i + WORKGROUP_SIZE) {
        m = max(m, data[base + i]);
    }
    let row_max = workgroup_max(lid, m);

    var s = 0.0;
    for (var i = lid; i < p.cols; i = i + WORKGROUP_SIZE) {
        s = s + exp(data[base + i] - row_max);
    }
    let inv_sum = 1.0 / workgroup_sum(lid, s);

    for (var i = lid; i < p.cols; i = i + WORKGROUP_SIZE) {
        data[base + i] = exp(data[base + i] - row_max) * inv_sum;
    }
}
