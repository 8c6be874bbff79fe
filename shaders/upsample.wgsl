// Nearest-neighbour upsampling to a size.
// PyTorch: F.interpolate(x, scale_factor=2.0, mode="nearest"), or size=(OH, OW) as diffusers'
// Upsample2D does when a UNet2DConditionModel's sample is not a multiple of its overall factor,
// on NCHW input: out[n, c, y, x] = in[n, c, y·H / OH, x·W / OW] (integer division). torch's index
// is floor(dst · (float)in/out); the two agree exactly for OH = 2H (dst / 2) and for OH = 2H − 1
// (gcd(H, 2H − 1) = 1, so dst·H/OH is an integer only at dst = 0: no rounding edge).
//
// Bindings: 0 input [N, C, H, W], 1 output [N, C, OH, OW], 2 params.
//
// One invocation per output element. The grid may be 2-D: the linear element index is
// (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid, and invocations past the end return.
//
// Numerics: a pure copy, bit-exact.
//
// Launcher: src/ops/upsample.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // N·C: the number of planes.
    planes: u32,
    // Input height H.
    height: u32,
    // Input width W.
    width: u32,
    // Output height OH.
    out_height: u32,
    // Output width OW.
    out_width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
    let out_w = p.out_width;
    let out_h = p.out_height;
    if (i >= p.planes * out_h * out_w) {
        return;
    }
    let ox = i % out_w;
    let oy = (i / out_w) % out_h;
    let plane = i / (out_w * out_h);
    output[i] = input[(plane * p.height + oy * p.height / out_h) * p.width + ox * p.width / out_w];
}
