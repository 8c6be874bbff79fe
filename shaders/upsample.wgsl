// Nearest-neighbour ×2 upsampling.
// PyTorch: F.interpolate(x, scale_factor=2.0, mode="nearest") on NCHW input
// (out[n, c, y, x] = in[n, c, y / 2, x / 2], integer division: torch's nearest index
// floor(dst · in/out) is exactly dst / 2 for a factor of 2).
//
// Bindings: 0 input [N, C, H, W], 1 output [N, C, 2H, 2W], 2 params.
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
    _pad0: u32,
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
    let out_w = 2u * p.width;
    let out_h = 2u * p.height;
    if (i >= p.planes * out_h * out_w) {
        return;
    }
    let ox = i % out_w;
    let oy = (i / out_w) % out_h;
    let plane = i / (out_w * out_h);
    output[i] = input[(plane * p.height + oy / 2u) * p.width + ox / 2u];
}
