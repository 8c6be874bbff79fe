//! The Rust ↔ WGSL boundary, checked without a GPU: for every kernel of the registry, the
//! parameter blocks its launcher declares (`uniform_struct!`) against the structs naga parses
//! from the shader (member names, byte offsets, scalar types, total size), its `FLAG_*` bits
//! against the shader's constants, its entry-point constants against the shader's entry points,
//! and the `shaders/X.wgsl` ↔ `src/ops/X.rs` pairing with the shader header naming its launcher.

use std::collections::BTreeMap;
use std::path::Path;

use naga::{AddressSpace, Expression, Literal, Module, ScalarKind, TypeInner};
use wgpu_diffusion::gpu::{Kernel, UniformLayout};

fn parse(kernel: Kernel) -> Module {
    let source = kernel.source();
    naga::front::wgsl::parse_str(source).unwrap_or_else(|e| {
        panic!(
            "{}: parse error:\n{}",
            kernel.shader_path(),
            e.emit_to_string(source)
        )
    })
}

/// A WGSL struct member as (name, offset, scalar type).
type Member = (String, usize, String);

/// The members of struct `name` in `module`, with their WGSL scalar type (or a description of a
/// non-scalar type, which no parameter block may hold), and the struct's size.
fn wgsl_struct(module: &Module, name: &str) -> Option<(Vec<Member>, usize)> {
    module.types.iter().find_map(|(_, ty)| {
        if ty.name.as_deref() != Some(name) {
            return None;
        }
        let TypeInner::Struct { members, span } = &ty.inner else {
            return None;
        };
        let fields = members
            .iter()
            .map(|m| {
                let scalar = match &module.types[m.ty].inner {
                    TypeInner::Scalar(s) => match (s.kind, s.width) {
                        (ScalarKind::Uint, 4) => "u32".to_string(),
                        (ScalarKind::Sint, 4) => "i32".to_string(),
                        (ScalarKind::Float, 4) => "f32".to_string(),
                        other => format!("{other:?}"),
                    },
                    other => format!("non-scalar {other:?}"),
                };
                (
                    m.name.clone().unwrap_or_default(),
                    m.offset as usize,
                    scalar,
                )
            })
            .collect();
        Some((fields, *span as usize))
    })
}

/// The differences between a Rust parameter block and the WGSL struct it mirrors (empty: equal).
fn layout_differences(kernel: Kernel, module: &Module, layout: &UniformLayout) -> Vec<String> {
    let at = format!(
        "{} `{}` vs {} `struct {}`",
        kernel.launcher_path(),
        layout.rust_name,
        kernel.shader_path(),
        layout.wgsl_name
    );
    let Some((wgsl, wgsl_size)) = wgsl_struct(module, layout.wgsl_name) else {
        return vec![format!("{at}: the shader declares no such struct")];
    };
    let rust: Vec<Member> = layout
        .fields
        .iter()
        .map(|f| (f.name.to_string(), f.offset, f.scalar.wgsl().to_string()))
        .collect();
    let mut diffs = Vec::new();
    for i in 0..rust.len().max(wgsl.len()) {
        match (rust.get(i), wgsl.get(i)) {
            (Some(r), Some(w)) if r == w => {}
            (r, w) => diffs.push(format!(
                "{at}: member {i}: Rust {} ≠ WGSL {}",
                describe(r),
                describe(w)
            )),
        }
    }
    if layout.size != wgsl_size {
        diffs.push(format!(
            "{at}: size {} bytes in Rust, {wgsl_size} in WGSL",
            layout.size
        ));
    }
    diffs
}

fn describe(member: Option<&Member>) -> String {
    match member {
        Some((name, offset, ty)) => format!("`{name}: {ty}` at byte {offset}"),
        None => "(none)".to_string(),
    }
}

/// The WGSL struct names bound as `var<uniform>` in `module`.
fn uniform_struct_names(module: &Module) -> Vec<String> {
    module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == AddressSpace::Uniform)
        .filter_map(|(_, g)| module.types[g.ty].name.clone())
        .collect()
}

#[test]
fn uniform_structs_match_the_shaders() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for kernel in Kernel::ALL {
        let module = parse(kernel);
        for layout in kernel.uniforms() {
            failures.extend(layout_differences(kernel, &module, layout));
            checked += 1;
        }
        // The other direction: every uniform the shader binds has a registered Rust twin.
        for name in uniform_struct_names(&module) {
            if !kernel.uniforms().iter().any(|l| l.wgsl_name == name) {
                failures.push(format!(
                    "{} binds `var<uniform>` of struct {name}, but {} registers no \
                     uniform_struct! for it in UNIFORMS",
                    kernel.shader_path(),
                    kernel.launcher_path()
                ));
            }
        }
    }
    println!("{checked} parameter blocks compared with their WGSL structs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The `const FLAG_*: u32` values of `module`, by name.
fn wgsl_flags(kernel: Kernel, module: &Module) -> BTreeMap<String, u32> {
    module
        .constants
        .iter()
        .filter_map(|(_, c)| {
            let name = c.name.clone()?;
            if !name.starts_with("FLAG_") {
                return None;
            }
            let value = match module.global_expressions[c.init] {
                Expression::Literal(Literal::U32(v)) => v,
                ref other => panic!(
                    "{}: const {name} is {other:?}, expected a u32 literal",
                    kernel.shader_path()
                ),
            };
            Some((name, value))
        })
        .collect()
}

#[test]
fn flag_constants_match_the_shaders() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for kernel in Kernel::ALL {
        let module = parse(kernel);
        let wgsl = wgsl_flags(kernel, &module);
        let rust: BTreeMap<String, u32> = kernel
            .flags()
            .iter()
            .map(|&(name, value)| (name.to_string(), value))
            .collect();
        let names: std::collections::BTreeSet<&String> = rust.keys().chain(wgsl.keys()).collect();
        for name in names {
            if !name.starts_with("FLAG_") {
                failures.push(format!(
                    "{}: flag {name} must be named FLAG_*",
                    kernel.launcher_path()
                ));
            }
            match (rust.get(name), wgsl.get(name)) {
                (Some(r), Some(w)) if r == w => checked += 1,
                (r, w) => failures.push(format!(
                    "{name}: {} says {r:?}, {} says {w:?}",
                    kernel.launcher_path(),
                    kernel.shader_path()
                )),
            }
        }
    }
    println!("{checked} flags agree");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn entry_point_constants_match_the_shaders() {
    let mut failures = Vec::new();
    for kernel in Kernel::ALL {
        let module = parse(kernel);
        let shader: Vec<&str> = module
            .entry_points
            .iter()
            .map(|ep| ep.name.as_str())
            .collect();
        let declared: Vec<&str> = kernel.entry_points().iter().map(|e| e.name).collect();
        for e in kernel.entry_points() {
            if e.kernel != kernel {
                failures.push(format!("{e} is listed under kernel {kernel}"));
            }
        }
        for name in &declared {
            if !shader.contains(name) {
                failures.push(format!(
                    "entry::{kernel}::{} names `fn {name}`, which {} does not declare",
                    name.to_uppercase(),
                    kernel.shader_path()
                ));
            }
        }
        for name in &shader {
            if !declared.contains(name) {
                failures.push(format!(
                    "{} declares entry point `{name}`, missing from its registry line in \
                     src/gpu/kernel.rs",
                    kernel.shader_path()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shader_has_its_launcher_and_names_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for kernel in Kernel::ALL {
        assert_eq!(kernel.shader_path(), format!("shaders/{kernel}.wgsl"));
        assert_eq!(kernel.launcher_path(), format!("src/ops/{kernel}.rs"));
        if !root.join(kernel.shader_path()).is_file() {
            failures.push(format!("{} does not exist", kernel.shader_path()));
        }
        if !root.join(kernel.launcher_path()).is_file() {
            failures.push(format!(
                "{} (the launcher of {}) does not exist",
                kernel.launcher_path(),
                kernel.shader_path()
            ));
        }
        // The header is the leading comment block.
        let header: Vec<&str> = kernel
            .source()
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect();
        let wanted = format!("// Launcher: {}", kernel.launcher_path());
        if !header.iter().any(|l| l.starts_with(&wanted)) {
            failures.push(format!(
                "{}: the header comment has no line starting with `{wanted}`",
                kernel.shader_path()
            ));
        }
    }
    // No orphans either way: every shader and every launcher file belongs to a kernel.
    for (dir, ext, path_of) in [
        (
            "shaders",
            "wgsl",
            Kernel::shader_path as fn(Kernel) -> &'static str,
        ),
        ("src/ops", "rs", Kernel::launcher_path),
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect(dir) {
            let path = entry.expect(dir).path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.extension().and_then(|e| e.to_str()) != Some(ext) || name == "mod.rs" {
                continue;
            }
            let rel = format!("{dir}/{name}");
            if !Kernel::ALL.iter().any(|&k| path_of(k) == rel) {
                failures.push(format!(
                    "{rel} belongs to no kernel of the registry (src/gpu/kernel.rs)"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
