// Non-finite detection: whether any element of x is NaN or ±inf, reduced into three u32 words
// that a run reads back once at its end (12 bytes instead of the whole sample).
// PyTorch: (~torch.isfinite(x)).any(), .sum() and .nonzero()[0] of the flattened x; `step` says
// after which inference step this launch looks.
//
// Bindings: 0 x [numel] (read), 1 status [4] u32 words (read_write, atomics), 2 params (read at a
// dynamic offset: one block per inference step of a run).
//   status[0]: the smallest `p.step` of the launches that saw a non-finite element
//              (0xffffffff: none yet) — the first step where the run went non-finite
//   status[1]: with FLAG_COUNT, the number of non-finite elements
//   status[2]: with FLAG_COUNT, the smallest index of a non-finite element (0xffffffff: none)
//   status[3]: unused (padding)
// The launcher sets status to [0xffffffff, 0, 0xffffffff, 0] before the first launch.
//
// One invocation per element; the grid may be 2-D: the linear index is
// (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid, and invocations past the end test nothing.
// Each workgroup first reduces in workgroup memory (an atomic count and minimum index); then its
// first invocation, if the group saw a non-finite element, updates status. A finite x costs one
// read of x and no global atomic. atomicMin and atomicAdd do not depend on the order in which
// workgroups run, so the words are deterministic.
//
// Numerics: the test reads the bits (exponent all ones: ±inf or NaN) rather than `v != v`, which
// a compiler may fold to false under WGSL's finite-math assumptions.
//
// Launcher: src/ops/non_finite.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

// Also count the non-finite elements and record the first one's index (the final check).
const FLAG_COUNT: u32 = 1u;

// An f32's exponent bits: all ones for ±inf and NaN.
const EXPONENT_MASK: u32 = 0x7f800000u;

struct Params {
    // Elements of x to test.
    numel: u32,
    // The inference step index recorded in status[0] when x holds a non-finite element.
    step: u32,
    flags: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> status: array<atomic<u32>, 4>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> group_count: atomic<u32>;
var<workgroup> group_first: atomic<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        atomicStore(&group_count, 0u);
        atomicStore(&group_first, 0xffffffffu);
    }
    workgroupBarrier();
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
    if (i < p.numel) {
        if ((bitcast<u32>(x[i]) & EXPONENT_MASK) == EXPONENT_MASK) {
            atomicAdd(&group_count, 1u);
            atomicMin(&group_first, i);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        let count = atomicLoad(&group_count);
        if (count != 0u) {
            atomicMin(&status[0], p.step);
            if ((p.flags & FLAG_COUNT) != 0u) {
                atomicAdd(&status[1], count);
                atomicMin(&status[2], atomicLoad(&group_first));
            }
        }
    }
}
