"""Shared pieces of the WGSL generators (scripts/gen_*_cpu.py): the checksum line that
tests/shaders.rs verifies, and the opening of a subgroup-tiled compute entry point."""


def fnv1a64(data):
    """FNV-1a, 64 bits: tests/shaders.rs computes the same over the body after the header."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def emit(header, body):
    """Prints header, the `// body fnv1a64: ...` line, then body."""
    print(header + f"// body fnv1a64: {fnv1a64(body.encode()):016x}", end="")
    print(body, end="")


def subgroup_entry(name, workgroup=64):
    """Lines opening `fn name` with the builtins every subgroup-tiled kernel takes, up to and
    including `let s = ...` (this subgroup's linear index over the grid)."""
    return [
        f"@compute @workgroup_size({workgroup})",
        f"fn {name}(",
        "    @builtin(workgroup_id) wid: vec3<u32>,",
        "    @builtin(num_workgroups) nwg: vec3<u32>,",
        "    @builtin(subgroup_id) sid: u32,",
        "    @builtin(num_subgroups) nsg: u32,",
        "    @builtin(subgroup_invocation_id) lane: u32,",
        ") {",
        "    let s = (wid.x + wid.y * nwg.x) * nsg + sid;",
    ]
