// Pointwise ops, one entry point each:
//   silu            out = x * sigmoid(x)                     F.silu(x)
//   add             out = (a + b) * scale                    (a + b) * scale (residual / skip sums)
//   affine          out = x * mul + add                      x * mul + add (center_input_sample: 2x − 1)
//   concat_channels out = [a, b] along dim 1                 torch.cat([a, b], dim=1)
//   embedding_add   out[n] = base[n] + table[labels[n]]      base + nn.Embedding(labels)
//   slice_channels  out = x[:, start:start + C_out]          x[:, start:start + C_out] (the
//                                                             mean half of a VAE's moments)
//   copy_rows       dst[:, :, d0:d0+R] = src[:, :, s0:s0+R]   row bands of NCHW tensors (a decode
//                                                             split into bands: halo and output)
//
// Bindings (per entry point; each entry point declares its own globals and uses all of them,
// because pipelines use wgpu's automatic layout):
//   silu:            0 x, 1 out, 2 params
//   add:             0 a, 1 b, 2 out, 3 params
//   affine:          0 x, 1 out, 2 params
//   concat_channels: 0 a [N, Ca·S], 1 b [N, Cb·S], 2 out [N, (Ca+Cb)·S], 3 params
//   embedding_add:   0 labels [N] (f32 holding integers), 1 base [N, D], 2 table [rows, D],
//                    3 out [N, D], 4 params
//   slice_channels:  0 x [N, Cx·S], 1 out [N, Co·S], 2 params
//   copy_rows:       0 src [N·C, Hs, W], 1 dst [N·C, Hd, W] (rows outside the copy are kept),
//                    2 params; one invocation per copied element
//
// One invocation per output element. The grid may be 2-D: the linear element index is
// (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid, and invocations past the end return.
//
// Numerics: f32; copies are bit-exact. SiLU is x / (1 + exp(−x)), which gives −0 (not NaN) when exp(−x) overflows for
// very negative x. embedding_add never reads outside `table`: the caller validates labels on the
// CPU, and the kernel still rounds the label, clamps it to [0, rows − 1] in f32, converts, and
// clamps again as an integer (a NaN label therefore reads some valid row instead of faulting).
//
// Launcher: src/ops/elementwise.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
}

// ---- silu -------------------------------------------------------------------------------------

struct SiluParams {
    // Number of elements.
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> silu_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> silu_out: array<f32>;
@group(0) @binding(2) var<uniform> silu_p: SiluParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn silu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= silu_p.count) {
        return;
    }
    let x = silu_x[i];
    silu_out[i] = x / (1.0 + exp(-x));
}

// ---- add --------------------------------------------------------------------------------------

struct AddParams {
    // Number of elements.
    count: u32,
    // Multiplies the sum (1 for a plain add; 1 / output_scale_factor in diffusers blocks).
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> add_a: array<f32>;
@group(0) @binding(1) var<storage, read> add_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> add_out: array<f32>;
@group(0) @binding(3) var<uniform> add_p: AddParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= add_p.count) {
        return;
    }
    add_out[i] = (add_a[i] + add_b[i]) * add_p.scale;
}

// ---- affine -----------------------------------------------------------------------------------

struct AffineParams {
    // Number of elements.
    count: u32,
    // Multiplier.
    mul: f32,
    // Addend.
    addend: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> affine_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> affine_out: array<f32>;
@group(0) @binding(2) var<uniform> affine_p: AffineParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn affine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= affine_p.count) {
        return;
    }
    affine_out[i] = affine_x[i] * affine_p.mul + affine_p.addend;
}

// ---- concat_channels --------------------------------------------------------------------------

struct ConcatParams {
    // Batch size N.
    batch: u32,
    // Elements of `a` per sample (Ca·S).
    a_len: u32,
    // Elements of `b` per sample (Cb·S).
    b_len: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> concat_a: array<f32>;
@group(0) @binding(1) var<storage, read> concat_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> concat_out: array<f32>;
@group(0) @binding(3) var<uniform> concat_p: ConcatParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn concat_channels(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    let row = concat_p.a_len + concat_p.b_len;
    if (i >= concat_p.batch * row) {
        return;
    }
    let n = i / row;
    let r = i % row;
    if (r < concat_p.a_len) {
        concat_out[i] = concat_a[n * concat_p.a_len + r];
    } else {
        concat_out[i] = concat_b[n * concat_p.b_len + (r - concat_p.a_len)];
    }
}

// ---- embedding_add ----------------------------------------------------------------------------

struct EmbeddingParams {
    // Number of output elements (N·D).
    count: u32,
    // Embedding width D.
    dim: u32,
    // Rows of the table (number of classes); at least 1.
    rows: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> embed_labels: array<f32>;
@group(0) @binding(1) var<storage, read> embed_base: array<f32>;
@group(0) @binding(2) var<storage, read> embed_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> embed_out: array<f32>;
@group(0) @binding(4) var<uniform> embed_p: EmbeddingParams;

// The table row for a label: rounded, clamped in f32, converted, clamped again as an integer.
fn table_row(label: f32, rows: u32) -> u32 {
    let last = rows - 1u;
    let clamped = clamp(round(label), 0.0, f32(last));
    return min(u32(clamped), last);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn embedding_add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= embed_p.count) {
        return;
    }
    let n = i / embed_p.dim;
    let d = i % embed_p.dim;
    let row = table_row(embed_labels[n], embed_p.rows);
    embed_out[i] = embed_base[i] + embed_table[row * embed_p.dim + d];
}

// ---- slice_channels ---------------------------------------------------------------------------

struct SliceParams {
    // Number of output elements (N·Co·S).
    count: u32,
    // Elements of `x` per sample (Cx·S).
    x_len: u32,
    // Elements of `out` per sample (Co·S).
    out_len: u32,
    // First element of the slice within a sample of `x` (start·S).
    offset: u32,
}

@group(0) @binding(0) var<storage, read> slice_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> slice_out: array<f32>;
@group(0) @binding(2) var<uniform> slice_p: SliceParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn slice_channels(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= slice_p.count) {
        return;
    }
    let n = i / slice_p.out_len;
    let r = i % slice_p.out_len;
    slice_out[i] = slice_x[n * slice_p.x_len + slice_p.offset + r];
}

// ---- copy_rows --------------------------------------------------------------------------------

struct CopyRowsParams {
    // Number of copied elements (N·C·rows·W).
    count: u32,
    // Row width W.
    width: u32,
    // Rows copied per plane.
    rows: u32,
    // Rows of a `src` plane (Hs).
    src_height: u32,
    // Rows of a `dst` plane (Hd).
    dst_height: u32,
    // First row read in each `src` plane.
    src_row: u32,
    // First row written in each `dst` plane.
    dst_row: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> rows_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> rows_dst: array<f32>;
@group(0) @binding(2) var<uniform> rows_p: CopyRowsParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= rows_p.count) {
        return;
    }
    let x = i % rows_p.width;
    let r = (i / rows_p.width) % rows_p.rows;
    let plane = i / (rows_p.width * rows_p.rows);
    let src_index = (plane * rows_p.src_height + rows_p.src_row + r) * rows_p.width + x;
    let dst_index = (plane * rows_p.dst_height + rows_p.dst_row + r) * rows_p.width + x;
    rows_dst[dst_index] = rows_src[src_index];
}
