// Nearest-codebook vector quantisation.
// PyTorch (diffusers VectorQuantizer.forward, without the loss and the straight-through
// estimator): z_q = embedding.weight[argmin_j ||z[n, :, p] − e_j||²] for every pixel p, written
// back in NCHW; `torch.argmin` picks the lowest index among equal distances.
//
// Bindings: 0 z [N, D, H·W], 1 codebook [K, D] (nn.Embedding weight), 2 output [N, D, H·W],
// 3 params.
//
// One invocation per pixel (n, p): it walks the K codebook rows in order, keeping the first row
// with the strictly smallest distance, then copies that row's D values into the pixel. The grid
// may be 2-D: the linear pixel index is (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid, and
// invocations past the end return.
//
// Numerics: the distance is Σ_c (z_c − e_c)² accumulated in f32 (not ||z||² + ||e||² − 2 z·e,
// which cancels badly near a codebook vector). The output is a bit-exact copy of a codebook row;
// only a pixel whose two nearest rows are within f32 rounding of each other can pick a different
// row than an f64 reference.
//
// Launcher: src/ops/vq_quantize.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // N·H·W: the number of pixels.
    pixels: u32,
    // H·W: pixels per image (the channel stride of z and output).
    hw: u32,
    // D: channels of z, width of a codebook row.
    dim: u32,
    // K: codebook rows; at least 1.
    entries: u32,
}

@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> codebook: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
    if (i >= p.pixels) {
        return;
    }
    let n = i / p.hw;
    let pixel = i % p.hw;
    let base = n * p.dim * p.hw + pixel;
    var best = 0u;
    var best_dist = 0.0;
    for (var j = 0u; j < p.entries; j++) {
        var dist = 0.0;
        for (var c = 0u; c < p.dim; c++) {
            let diff = z[base + c * p.hw] - codebook[j * p.dim + c];
            dist += diff * diff;
        }
        if (j == 0u || dist < best_dist) {
            best = j;
            best_dist = dist;
        }
    }
    for (var c = 0u; c < p.dim; c++) {
        output[base + c * p.hw] = codebook[best * p.dim + c];
    }
}
