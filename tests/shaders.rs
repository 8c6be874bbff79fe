//! Parses and validates every WGSL file of `shaders/` with naga (no GPU needed), so a shader
//! error fails `cargo test` with the file's name even on a machine without an adapter.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_diffusion::gpu::Kernel;

/// Parses and validates one kernel's source; the error names the file.
fn validate(kernel: Kernel) -> Result<naga::Module, String> {
    let file = format!("shaders/{}.wgsl", kernel.name());
    let source = kernel.source();
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{file}: parse error:\n{}", e.emit_to_string(source)))?;
    Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{file}: validation error:\n{}", e.emit_to_string(source)))?;
    Ok(module)
}

#[test]
fn every_shader_parses_and_validates() {
    let failures: Vec<String> = Kernel::ALL
        .iter()
        .filter_map(|&k| validate(k).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shader_has_an_entry_point() {
    for kernel in Kernel::ALL {
        let Ok(module) = validate(kernel) else {
            // Reported by `every_shader_parses_and_validates`.
            continue;
        };
        assert!(
            !module.entry_points.is_empty(),
            "shaders/{}.wgsl has no entry point",
            kernel.name()
        );
        assert!(
            module
                .entry_points
                .iter()
                .all(|ep| ep.stage == naga::ShaderStage::Compute),
            "shaders/{}.wgsl has a non-compute entry point",
            kernel.name()
        );
    }
}

/// The entry points the Rust launchers ask for (every constant of the registry's `entry`
/// modules, all kernels) exist (a typo would only fail at pipeline creation on a real device
/// otherwise). The reverse direction is in tests/kernel_layout.rs.
#[test]
fn op_entry_points_exist() {
    for kernel in Kernel::ALL {
        let module = validate(kernel).unwrap_or_else(|e| panic!("{e}"));
        for entry in kernel.entry_points() {
            let name = entry.name;
            assert!(
                module.entry_points.iter().any(|ep| ep.name == name),
                "shaders/{}.wgsl has no entry point {name:?}",
                kernel.name()
            );
        }
    }
}

/// Every file opens with the comment block STYLE.md asks for.
#[test]
fn every_shader_opens_with_a_comment() {
    for kernel in Kernel::ALL {
        assert!(
            kernel.source().trim_start().starts_with("//"),
            "shaders/{}.wgsl does not open with a comment",
            kernel.name()
        );
    }
}

/// Generated shaders (`scripts/gen_*.py`) carry `// body fnv1a64: HASH` over everything after that
/// line: a hand edit of the body (instead of the script) fails here.
#[test]
fn generated_shaders_match_their_checksum() {
    let mut generated = 0;
    for kernel in Kernel::ALL {
        let source = kernel.source();
        let Some(at) = source.find("// body fnv1a64: ") else {
            continue;
        };
        generated += 1;
        let line_end = source[at..].find('\n').map_or(source.len(), |i| at + i);
        let stated = &source[at + "// body fnv1a64: ".len()..line_end];
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &source.as_bytes()[line_end..] {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(
            stated,
            format!("{hash:016x}"),
            "shaders/{}.wgsl was edited by hand: edit its generator in scripts/ and regenerate",
            kernel.name()
        );
    }
    assert!(generated >= 1, "conv2d_cpu.wgsl is generated");
}
