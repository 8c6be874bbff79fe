//! The `wgpu-diffusion` binary end to end: `sample` on the tiny fixture models (seeds,
//! `--save-tensor` / `--init-noise`, PNG outputs, class conditioning and guidance), its errors for
//! bad arguments (non-zero exit, a message naming the flag, no output file and no stray temp
//! file), and the `adapters` / `inspect` subcommands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_wgpu-diffusion");
/// Unconditional, 3×16×16.
const UNCOND: &str = "google_flags";
/// Class-conditional (num_class_embeds = 11), 3×16×16, no classes.json.
const CLASS_COND: &str = "class_conditional";
const NUM_CLASS_EMBEDS: usize = 11;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the binary in `cwd` with `args`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// `sample --model <model> -q <args>` in `cwd`.
fn sample(cwd: &Path, model: &Path, args: &[&str]) -> Output {
    let model = model.to_str().unwrap();
    let mut all = vec!["sample", "--model", model, "-q"];
    all.extend_from_slice(args);
    run_in(cwd, &all)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Samples with the unconditional model and returns the `--save-tensor` bytes.
fn tensor_bytes(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let mut all = vec!["--save-tensor", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = sample(dir, &fixture(UNCOND), &all);
    assert_ok(&out, &format!("sample {args:?}"));
    std::fs::read(&path).unwrap()
}

/// The one tensor of a safetensors file: name, shape and f32 values.
fn parse_tensor(bytes: &[u8]) -> (String, Vec<usize>, Vec<f32>) {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("valid safetensors");
    let names = st.names();
    assert_eq!(names.len(), 1, "one tensor, got {names:?}");
    let name = names[0].to_string();
    let view = st.tensor(&name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (name, view.shape().to_vec(), values)
}

/// safetensors bytes of one f32 tensor.
fn tensor_file(name: &str, shape: &[usize], data: &[f32]) -> Vec<u8> {
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        shape.to_vec(),
        bytemuck::cast_slice(data),
    )
    .unwrap();
    safetensors::tensor::serialize([(name, view)], None).unwrap()
}

/// Standard-normal values (SplitMix64 + Box–Muller).
fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (1.0 - uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

fn decode_png(path: &Path) -> image::DynamicImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_png(path: &Path, width: u32, height: u32) {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 13) as u8, (y * 11) as u8, ((x + y) * 7) as u8])
    })
    .save_with_format(path, image::ImageFormat::Png)
    .unwrap();
}

/// Temp files `AtomicFile` leaves behind if it fails to clean up (`.<name>.<pid>.tmp`).
fn stray_temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

/// The class-conditional fixture with a classes.json: cat = 0, dog = 1, null = the last label.
fn class_model_with_names() -> TempDir {
    let dir = TempDir::new().unwrap();
    for entry in std::fs::read_dir(fixture(CLASS_COND)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("classes.json"),
        format!(
            r#"{{"cat": 0, "dog": 1, "null": {}}}"#,
            NUM_CLASS_EMBEDS - 1
        ),
    )
    .unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Seeds and the saved tensor

#[test]
fn seeds_reproduce_independent_of_count_and_batch() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let base = ["--steps", "3", "--num-images", "4"];
    let a = tensor_bytes(dir, "a.st", &[&base[..], &["--seed", "7"]].concat());
    let b = tensor_bytes(dir, "b.st", &[&base[..], &["--seed", "7"]].concat());
    assert!(a == b, "the same seed gave different tensors");
    let other = tensor_bytes(dir, "c.st", &[&base[..], &["--seed", "8"]].concat());
    assert!(a != other, "seeds 7 and 8 gave identical tensors");
    let batched = tensor_bytes(
        dir,
        "d.st",
        &[&base[..], &["--seed", "7", "--batch-size", "3"]].concat(),
    );
    assert!(a == batched, "--batch-size 3 changed the images");

    let two = tensor_bytes(
        dir,
        "e.st",
        &["--steps", "3", "--num-images", "2", "--seed", "7"],
    );
    let (_, shape4, four) = parse_tensor(&a);
    let (_, shape2, two) = parse_tensor(&two);
    assert_eq!(shape4, [4, 3, 16, 16]);
    assert_eq!(shape2, [2, 3, 16, 16]);
    let len = two.len();
    assert!(
        four[..len] == two[..],
        "the first 2 of 4 images differ from a 2-image run"
    );
    assert!(four[len..] != four[..len], "images 2 and 3 repeat 0 and 1");
}

#[test]
fn save_tensor_and_init_noise_round_trip() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let bytes = tensor_bytes(dir, "s.st", &["--steps", "2", "--num-images", "3"]);
    let (name, shape, values) = parse_tensor(&bytes);
    assert_eq!(name, "sample");
    assert_eq!(shape, [3, 3, 16, 16]);
    assert_eq!(values.len(), 3 * 3 * 16 * 16);
    assert!(values.iter().all(|v| v.is_finite()));
    // Unclamped: the f32 samples, not the quantised PNG values.
    assert!(values.iter().any(|&v| v != (v * 127.5).round() / 127.5));

    // A standard-normal tensor as --init-noise.
    let n = 2;
    let noise = normal(n * 3 * 16 * 16, 42);
    let noise_path = dir.join("noise.st");
    std::fs::write(&noise_path, tensor_file("noise", &[n, 3, 16, 16], &noise)).unwrap();
    let noise_arg = noise_path.to_str().unwrap();
    let args = [
        "--steps",
        "2",
        "--num-images",
        "2",
        "--init-noise",
        noise_arg,
    ];
    let first = tensor_bytes(dir, "n1.st", &args);
    let (_, shape, from_noise) = parse_tensor(&first);
    assert_eq!(shape, [2, 3, 16, 16]);
    assert!(from_noise.iter().all(|v| v.is_finite()));
    // The noise, not the seed, decides the images.
    let reseeded = tensor_bytes(dir, "n2.st", &[&args[..], &["--seed", "99"]].concat());
    assert!(first == reseeded, "--seed changed an --init-noise run");
    let seeded = tensor_bytes(dir, "n3.st", &["--steps", "2", "--num-images", "2"]);
    assert!(first != seeded, "--init-noise was ignored");

    // A wrongly shaped tensor names the expected shape; nothing is written.
    let out_path = dir.join("bad.st");
    let out = sample(
        dir,
        &fixture(UNCOND),
        &[
            "--steps",
            "2",
            "--num-images",
            "3",
            "--init-noise",
            noise_arg,
            "--save-tensor",
            out_path.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a [2,3,16,16] noise for 3 images ran"
    );
    assert!(
        err.contains("--init-noise") && err.contains("[3, 3, 16, 16]"),
        "{err}"
    );
    assert!(!out_path.exists());
    assert_eq!(stray_temp_files(dir), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// PNG outputs

#[test]
fn grid_per_image_pngs_and_trajectory_strip() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let n = 5;
    let out = sample(
        dir,
        &fixture(UNCOND),
        &[
            "--steps",
            "4",
            "--num-images",
            "5",
            "-o",
            "grid.png",
            "--out-dir",
            "each",
            "--trajectory",
            "strip.png",
            "--trajectory-every",
            "2",
            "--scale",
            "1",
            "--no-captions",
        ],
    );
    assert_ok(&out, "sample with every PNG output");
    let (h, w, gap) = (16u32, 16u32, 2u32);

    // 5 images: 3 columns (ceil √5), 2 rows, 2 px gaps.
    let grid = decode_png(&dir.join("grid.png")).to_rgb8();
    assert_eq!(grid.dimensions(), (3 * w + 2 * gap, 2 * h + gap));

    let each = dir.join("each");
    let mut names: Vec<String> = std::fs::read_dir(&each)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..n).map(|i| format!("{i:05}.png")).collect();
    assert_eq!(names, expected);
    for (i, name) in names.iter().enumerate() {
        let img = decode_png(&each.join(name)).to_rgb8();
        assert_eq!(img.dimensions(), (w, h), "{name}");
        // Each PNG is its cell of the grid.
        let (gx, gy) = ((i as u32 % 3) * (w + gap), (i as u32 / 3) * (h + gap));
        for (x, y, px) in img.enumerate_pixels() {
            assert_eq!(px, grid.get_pixel(gx + x, gy + y), "{name} at ({x}, {y})");
        }
    }
    // The gap between cells is the light border gray (issue 19; it was black).
    assert_eq!(grid.get_pixel(w, 0), &image::Rgb([BORDER_GRAY; 3]));

    // Snapshots after steps 0, 2 and the last (3): 3 columns; x_t and x̂₀ rows per image.
    let strip = decode_png(&dir.join("strip.png")).to_rgb8();
    let rows = 2 * n as u32;
    assert_eq!(
        strip.dimensions(),
        (3 * w + 2 * gap, rows * h + (rows - 1) * gap)
    );
    assert_eq!(stray_temp_files(dir), Vec::<String>::new());
    assert_eq!(stray_temp_files(&each), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Bad arguments

/// One invocation that must fail: the extra `sample` arguments (`{dir}` is replaced by the
/// run's temp directory) and strings stderr must contain.
struct Bad<'a> {
    model: PathBuf,
    args: &'a [&'a str],
    needles: &'a [&'a str],
}

fn bad(
    model: &Path,
    args: &'static [&'static str],
    needles: &'static [&'static str],
) -> Bad<'static> {
    Bad {
        model: model.to_path_buf(),
        args,
        needles,
    }
}

/// Runs each case in a fresh directory (holding `setup`'s files) with `-o out.png` unless the case
/// names its own `-o`; checks exit, message, that out.png (or the case's `-o`) does not exist
/// and that no temp file is left. Reports every failing case at once.
fn check_bad(cases: &[Bad], setup: &dyn Fn(&Path)) {
    let mut failures = Vec::new();
    for case in cases {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        setup(dir);
        let before: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let dir_str = dir.to_str().unwrap();
        let mut args: Vec<String> = case
            .args
            .iter()
            .map(|a| a.replace("{dir}", dir_str))
            .collect();
        let own_output = args.iter().any(|a| a == "-o");
        if !own_output {
            args.extend(["-o".into(), dir.join("out.png").to_str().unwrap().into()]);
        }
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sample(dir, &case.model, &arg_refs);
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.success() {
            problems.push("exited 0".to_string());
        }
        if out.status.code().is_none() {
            problems.push(format!("killed: {:?}", out.status));
        }
        if err.contains("panicked") {
            problems.push("panicked".into());
        }
        for needle in case.needles {
            let needle = needle.replace("{dir}", dir_str);
            if !err.contains(&needle) {
                problems.push(format!("stderr lacks {needle:?}"));
            }
        }
        if err.matches("(os error").count() > 1 {
            problems.push("the OS error is repeated".into());
        }
        let target = args
            .iter()
            .position(|a| a == "-o")
            .map(|i| PathBuf::from(&args[i + 1]))
            .unwrap();
        if target.is_file() {
            problems.push(format!("{} was written", target.display()));
        }
        let after: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !before.contains(n))
            .collect();
        // An --out-dir may be created before the failure, but must hold no file.
        for name in &after {
            let path = dir.join(name);
            if path.is_dir() && std::fs::read_dir(&path).unwrap().next().is_none() {
                continue;
            }
            problems.push(format!("left {}", path.display()));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "sample {:?}: {}\nstderr: {err}",
                case.args,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn bad_numbers_and_sampler_options_fail_cleanly() {
    let u = fixture(UNCOND);
    check_bad(
        &[
            bad(&u, &["--steps", "0"], &["--steps", "0"]),
            bad(&u, &["--num-images", "0"], &["--num-images", "0"]),
            bad(
                &u,
                &["--steps", "5000", "--out-dir", "{dir}/each"],
                &["5000", "num_train_timesteps (1000)"],
            ),
            bad(
                &u,
                &["--scheduler", "nonsense"],
                &[
                    "--scheduler",
                    "nonsense",
                    "ddim",
                    "euler",
                    "dpm++2m",
                    "flow-euler",
                ],
            ),
            bad(
                &u,
                &["--eta", "0.5", "--scheduler", "euler"],
                &["--eta", "euler"],
            ),
            bad(
                &u,
                &["--karras", "--scheduler", "ddim"],
                &["--karras", "ddim"],
            ),
            bad(
                &u,
                &["--strength", "0", "--init-image", "{dir}/ok.png"],
                &["--strength", "got 0"],
            ),
        ],
        &|dir| write_png(&dir.join("ok.png"), 16, 16),
    );
}

#[test]
fn bad_models_and_classes_fail_cleanly() {
    let u = fixture(UNCOND);
    let cc = fixture(CLASS_COND);
    let named = class_model_with_names();
    check_bad(
        &[
            bad(
                Path::new("/nonexistent"),
                &[],
                &["/nonexistent", "config.json"],
            ),
            bad(
                &cc,
                &["--class-label", "99"],
                &["--class-label", "99", "num_class_embeds = 11"],
            ),
            bad(
                &u,
                &["--class-label", "0"],
                &["--class-label", "not class-conditional"],
            ),
            bad(
                &u,
                &["--guidance-scale", "3"],
                &["--guidance-scale", "class-conditional"],
            ),
            bad(
                named.path(),
                &["--class", "nosuchname"],
                &["--class", "nosuchname", "cat", "dog"],
            ),
            bad(&cc, &[], &["null"]),
        ],
        &|_| {},
    );
}

#[test]
fn bad_input_files_fail_cleanly() {
    let u = fixture(UNCOND);
    check_bad(
        &[
            bad(
                &u,
                &["--init-image", "/nonexistent.png"],
                &["--init-image", "/nonexistent.png"],
            ),
            bad(
                &u,
                &["--init-image", "{dir}/text.png"],
                &["--init-image", "{dir}/text.png"],
            ),
            bad(
                &u,
                &["--init-image", "{dir}/wide.png"],
                &["--init-image", "20×16", "16×16"],
            ),
            bad(
                &u,
                &["--num-images", "1", "--init-noise", "{dir}/trunc.st"],
                &["--init-noise", "{dir}/trunc.st"],
            ),
            bad(
                &u,
                &["--init-noise", "{dir}/missing.st"],
                &["--init-noise", "{dir}/missing.st"],
            ),
        ],
        &|dir| {
            std::fs::write(dir.join("text.png"), "this is not an image\n").unwrap();
            write_png(&dir.join("wide.png"), 20, 16);
            let full = tensor_file("noise", &[1, 3, 16, 16], &normal(3 * 16 * 16, 1));
            std::fs::write(dir.join("trunc.st"), &full[..full.len() / 2]).unwrap();
        },
    );
}

#[test]
fn unwritable_outputs_fail_before_sampling() {
    let u = fixture(UNCOND);
    check_bad(
        &[
            bad(
                &u,
                &["-o", "/nonexistent-dir/x.png"],
                &["/nonexistent-dir/x.png", "does not exist"],
            ),
            bad(&u, &["-o", "{dir}/sub"], &["{dir}/sub", "directory"]),
            // The second output is unwritable: the first must not be written either.
            bad(
                &u,
                &["--save-tensor", "{dir}/sub", "--steps", "2"],
                &["{dir}/sub", "directory"],
            ),
        ],
        &|dir| std::fs::create_dir(dir.join("sub")).unwrap(),
    );
}

// ---------------------------------------------------------------------------------------------
// Class conditioning

#[test]
fn class_names_guidance_and_unit_guidance() {
    let model = class_model_with_names();
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let run = |name: &str, args: &[&str]| -> Vec<u8> {
        let path = dir.join(name);
        let mut all = vec!["--steps", "2", "--save-tensor", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = sample(dir, model.path(), &all);
        assert_ok(&out, &format!("class-conditional sample {args:?}"));
        std::fs::read(&path).unwrap()
    };

    let guided = run(
        "g.st",
        &[
            "--class",
            "cat,dog",
            "--guidance-scale",
            "2",
            "--num-images",
            "2",
        ],
    );
    let (_, shape, values) = parse_tensor(&guided);
    assert_eq!(shape, [2, 3, 16, 16]);
    assert!(values.iter().all(|v| v.is_finite()));
    let by_label = run("l.st", &["--class-label", "0,1", "--num-images", "2"]);
    let by_name = run("n.st", &["--class", "CAT,dog", "--num-images", "2"]);
    assert!(by_label == by_name, "--class cat,dog != --class-label 0,1");
    assert!(guided != by_name, "--guidance-scale 2 changed nothing");

    let plain = run("p.st", &["--class-label", "0", "--num-images", "1"]);
    let unit = run(
        "u.st",
        &[
            "--class-label",
            "0",
            "--guidance-scale",
            "1",
            "--num-images",
            "1",
        ],
    );
    assert!(plain == unit, "--guidance-scale 1 differs from no guidance");
    let (_, _, first_of_two) = parse_tensor(&by_label);
    let (_, _, single) = parse_tensor(&plain);
    assert!(first_of_two[..single.len()] == single[..]);
}

// ---------------------------------------------------------------------------------------------
// Other subcommands

#[test]
fn adapters_lists_at_least_one() {
    let tmp = TempDir::new().unwrap();
    let out = run_in(tmp.path(), &["adapters"]);
    assert_ok(&out, "adapters");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("[0] ")), "{text}");
    assert!(text.contains("max storage binding"), "{text}");
}

/// `--shader-checks` / `WGPU_DIFFUSION_SHADER_CHECKS`: `adapters` says which is in force, and a
/// value other than on/off is an error naming the flag, the variable and the accepted values
/// (from `adapters` and from `sample`, which writes nothing).
#[test]
fn shader_checks_flag_and_variable() {
    let tmp = TempDir::new().unwrap();
    let run = |env: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(tmp.path())
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env_remove("WGPU_DIFFUSION_SHADER_CHECKS");
        if let Some(v) = env {
            cmd.env("WGPU_DIFFUSION_SHADER_CHECKS", v);
        }
        cmd.output().expect("run the binary")
    };
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let out = run(None, &["adapters"]);
    assert_ok(&out, "adapters");
    assert!(
        stdout(&out).contains("shader runtime checks on"),
        "{}",
        stdout(&out)
    );
    for (env, args) in [
        (None, &["--shader-checks", "OFF", "adapters"][..]),
        (Some("off"), &["adapters"][..]),
    ] {
        let out = run(env, args);
        assert_ok(&out, "adapters, checks off");
        assert!(
            stdout(&out).contains("shader runtime checks off"),
            "{}",
            stdout(&out)
        );
    }
    // The flag wins over the variable.
    let out = run(Some("off"), &["adapters", "--shader-checks", "on"]);
    assert_ok(&out, "adapters --shader-checks on");
    assert!(
        stdout(&out).contains("shader runtime checks on"),
        "{}",
        stdout(&out)
    );
    let model = fixture(UNCOND);
    let png = tmp.path().join("out.png");
    let sample_args = [
        "sample",
        "--model",
        model.to_str().unwrap(),
        "-q",
        "-o",
        png.to_str().unwrap(),
    ];
    let with_flag: Vec<&str> = ["--shader-checks", "maybe"]
        .into_iter()
        .chain(sample_args)
        .collect();
    for (env, args, value) in [
        (None, &["adapters", "--shader-checks", "maybe"][..], "maybe"),
        (Some("unchecked"), &["adapters"][..], "unchecked"),
        (None, &with_flag[..], "maybe"),
        (Some("true"), &sample_args[..], "true"),
    ] {
        let out = run(env, args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} {env:?}: exited 0");
        assert!(!err.contains("panicked"), "{err}");
        for needle in [
            "--shader-checks",
            "WGPU_DIFFUSION_SHADER_CHECKS",
            "on or off",
            value,
        ] {
            assert!(
                err.contains(needle),
                "{args:?} {env:?}: stderr lacks {needle:?}: {err}"
            );
        }
        assert!(!png.exists(), "{args:?} {env:?}: wrote {}", png.display());
    }
}

#[test]
fn inspect_prints_parameters_and_macs() {
    let tmp = TempDir::new().unwrap();
    let model = fixture(UNCOND);
    let out = run_in(tmp.path(), &["inspect", "--model", model.to_str().unwrap()]);
    assert_ok(&out, "inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in\n{text}"))
            .to_string()
    };
    let params: u64 = field("parameters")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(params > 0, "{text}");
    assert!(field("MACs").contains(" G per image"), "{text}");
    assert!(
        field("in/out").contains("3 -> 3 channels, sample 16x16"),
        "{text}"
    );

    let missing = run_in(tmp.path(), &["inspect", "--model", "/nonexistent"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("/nonexistent"));
}

/// Option errors come from the library's checks (no copy in the CLI), run before the GPU is
/// opened: with an adapter that does not exist, a bad argument still reports itself (naming the
/// flag, not the library's field), writes nothing, and never reaches the adapter search.
#[test]
fn bad_options_fail_before_the_gpu_is_opened() {
    let u = fixture(UNCOND);
    let cc = fixture(CLASS_COND);
    let cases: &[(&Path, &[&str], &[&str], &str)] = &[
        (
            &u,
            &["--num-images", "0"],
            &["--num-images", "got 0"],
            "num_images",
        ),
        (
            &u,
            &["--batch-size", "0"],
            &["--batch-size", "got 0"],
            "batch_size",
        ),
        (&u, &["--steps", "0"], &["--steps", "got 0"], "steps"),
        (&u, &["--eta=-1"], &["--eta", "got -1"], "eta"),
        (
            &u,
            &["--trajectory", "{dir}/t.png", "--trajectory-every", "0"],
            &["--trajectory-every", "got 0"],
            "trajectory_every",
        ),
        (
            &u,
            &[
                "--steps",
                "10",
                "--strength",
                "0.01",
                "--init-image",
                "{dir}/ok.png",
            ],
            &["--strength", "rounds down to 0 steps"],
            "init_image.strength",
        ),
        (
            &u,
            &["--clip-sample", "true", "--scheduler", "euler"],
            &["--clip-sample", "euler"],
            "overrides.clip_sample",
        ),
        (
            &cc,
            &["--class-label", "0", "--guidance-scale", "NaN"],
            &["--guidance-scale", "finite"],
            "guidance_scale",
        ),
        (
            &cc,
            &["--class-label", "0", "--guidance-scale", "2"],
            &["--guidance-scale", "null label"],
            "guidance_scale",
        ),
        (&u, &["--height", "17"], &["resolution 17x16"], "height"),
    ];
    let mut failures = Vec::new();
    for (model, args, needles, field) in cases {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        write_png(&dir.join("ok.png"), 16, 16);
        let dir_str = dir.to_str().unwrap();
        let out_png = dir.join("out.png");
        let mut all: Vec<String> = [
            "--adapter",
            "no-such-adapter-anywhere",
            "sample",
            "--model",
            model.to_str().unwrap(),
            "-q",
            "-o",
            out_png.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|a| a.replace("{dir}", dir_str)));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run_in(dir, &refs);
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit {:?}", out.status));
        }
        for needle in *needles {
            if !err.contains(needle) {
                problems.push(format!("stderr lacks {needle:?}"));
            }
        }
        if err.contains("adapter") {
            problems.push("the GPU was opened (adapter search reached)".into());
        }
        if err.contains(&format!(" {field}:")) {
            problems.push(format!("stderr names the library field {field:?}"));
        }
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "ok.png")
            .collect();
        if !left.is_empty() {
            problems.push(format!("left {left:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{args:?}: {}\nstderr: {err}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));

    // The control: good arguments with that adapter do reach the adapter search.
    let tmp = TempDir::new().unwrap();
    let out = run_in(
        tmp.path(),
        &[
            "--adapter",
            "no-such-adapter-anywhere",
            "sample",
            "--model",
            u.to_str().unwrap(),
            "-q",
            "--steps",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no adapter matches"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("samples.png").exists());
}

// ---------------------------------------------------------------------------------------------
// Pictures: scale, captions, borders, strip header (issue 19)

use wgpu_diffusion::sampling::io::{Canvas, BORDER, BORDER_GRAY, GLYPH, TEXT_GRAY};

/// Pixels of `img` in [x0, x1) × [y0, y1) whose every channel is `gray`.
fn count_gray(img: &image::RgbImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32), gray: u8) -> u32 {
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            if img.get_pixel(x, y).0 == [gray; 3] {
                n += 1;
            }
        }
    }
    n
}

/// Default pictures (auto scale, captions) against `--scale 3 --no-captions --cols 3`: sizes,
/// borders, caption bands and strip header / labels where asked and absent where not, tiles
/// that are the per-image PNGs upscaled, and per-image PNGs and tensors unchanged by the scale.
#[test]
fn pictures_scale_captions_and_borders_leave_per_image_files_alone() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let run = |tag: &str, extra: &[&str]| {
        let (grid, each, tensor, strip) = (
            format!("{tag}.png"),
            format!("{tag}-each"),
            format!("{tag}.st"),
            format!("{tag}-strip.png"),
        );
        let mut args = vec![
            "--steps",
            "2",
            "--num-images",
            "3",
            "-o",
            &grid,
            "--out-dir",
            &each,
            "--save-tensor",
            &tensor,
            "--trajectory",
            &strip,
            "--trajectory-every",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = sample(dir, &fixture(UNCOND), &args);
        assert_ok(&out, &format!("sample {extra:?}"));
    };
    run("auto", &[]);
    run("small", &["--scale", "3", "--no-captions", "--cols", "3"]);

    // Per-image PNGs and the tensor: byte-identical, at the model's 16 × 16.
    let each: Vec<image::RgbImage> = (0..3)
        .map(|i| {
            let name = format!("{i:05}.png");
            let auto = std::fs::read(dir.join("auto-each").join(&name)).unwrap();
            let small = std::fs::read(dir.join("small-each").join(&name)).unwrap();
            assert!(auto == small, "{name} changed with --scale");
            let img = decode_png(&dir.join("auto-each").join(&name)).to_rgb8();
            assert_eq!(img.dimensions(), (16, 16), "{name}");
            img
        })
        .collect();
    let tensor = std::fs::read(dir.join("auto.st")).unwrap();
    assert!(tensor == std::fs::read(dir.join("small.st")).unwrap());
    assert_eq!(parse_tensor(&tensor).1, [3, 3, 16, 16]);

    let b = BORDER as u32;
    // Default: scale 8 (16 px → 128 px tiles), 2 × 2 cells, a 12 px caption band under each tile.
    let grid = decode_png(&dir.join("auto.png")).to_rgb8();
    let (tile, band) = (128u32, 12u32);
    assert_eq!(grid.dimensions(), (2 * tile + b, 2 * (tile + band) + b));
    for (i, img) in each.iter().enumerate() {
        let (x0, y0) = (
            (i as u32 % 2) * (tile + b),
            (i as u32 / 2) * (tile + band + b),
        );
        for (x, y) in [(0, 0), (15, 15), (3, 11), (12, 7)] {
            for (dx, dy) in [(0, 0), (7, 7), (3, 5)] {
                assert_eq!(
                    grid.get_pixel(x0 + 8 * x + dx, y0 + 8 * y + dy),
                    img.get_pixel(x, y),
                    "tile {i} pixel ({x}, {y}) sub ({dx}, {dy})"
                );
            }
        }
        // The caption band under the tile: "#i" in dark text on the border gray, centred.
        let mut want = Canvas::filled(tile as usize, band as usize, 3, BORDER_GRAY);
        want.draw_text(
            &format!("#{i}"),
            (tile as usize - 2 * GLYPH) / 2,
            2,
            1,
            TEXT_GRAY,
        );
        for y in 0..band {
            for x in 0..tile {
                assert_eq!(
                    grid.get_pixel(x0 + x, y0 + tile + y).0,
                    want.pixel(x as usize, y as usize),
                    "caption {i} at ({x}, {y})"
                );
            }
        }
        assert!(
            count_gray(
                &grid,
                (x0, x0 + tile),
                (y0 + tile, y0 + tile + band),
                TEXT_GRAY
            ) > 10
        );
    }
    // The border between the columns runs the full height; the empty fourth cell is blank.
    assert_eq!(
        count_gray(&grid, (tile, tile + b), (0, grid.height()), BORDER_GRAY),
        b * grid.height()
    );
    let (x3, y3) = (tile + b, tile + band + b);
    assert_eq!(
        count_gray(&grid, (x3, x3 + tile), (y3, y3 + tile + band), BORDER_GRAY),
        tile * (tile + band)
    );

    // --scale 3 --no-captions --cols 3: one row of 48 px tiles, exactly the upscaled images
    // and the border, no caption band.
    let small = decode_png(&dir.join("small.png")).to_rgb8();
    assert_eq!(small.dimensions(), (3 * 48 + 2 * b, 48));
    for (x, y, px) in small.enumerate_pixels() {
        let (i, within) = (x / (48 + b), x % (48 + b));
        let want = if within >= 48 {
            image::Rgb([BORDER_GRAY; 3])
        } else {
            *each[i as usize].get_pixel(within / 3, y / 3)
        };
        assert_eq!(*px, want, "small grid at ({x}, {y})");
    }

    // The strip: 2 columns (after steps 0 and 1), 6 rows (x_t, x̂₀ per image); with captions a
    // 20 px label band on the left and a 22 px header band on top, each with text.
    let strip = decode_png(&dir.join("auto-strip.png")).to_rgb8();
    let (left, top) = (20 + b, 22 + b);
    assert_eq!(
        strip.dimensions(),
        (left + 2 * (tile + b) - b, top + 6 * (tile + b) - b)
    );
    for j in 0..2 {
        let x0 = left + j * (tile + b);
        assert!(
            count_gray(&strip, (x0, x0 + tile), (0, 22), TEXT_GRAY) > 20,
            "header {j}"
        );
    }
    for row in 0..6 {
        let y0 = top + row * (tile + b);
        assert!(
            count_gray(&strip, (0, 20), (y0, y0 + tile), TEXT_GRAY) > 5,
            "label {row}"
        );
        assert_eq!(
            count_gray(&strip, (0, 20), (y0, y0 + 40), TEXT_GRAY),
            0,
            "label {row} centred"
        );
    }
    // --scale 3 --no-captions: tiles and borders only.
    let small_strip = decode_png(&dir.join("small-strip.png")).to_rgb8();
    assert_eq!(small_strip.dimensions(), (2 * 48 + b, 6 * 48 + 5 * b));
    assert_eq!(stray_temp_files(dir), Vec::<String>::new());
}

/// A class-conditional grid captions each tile with the class name as typed, or `class N`
/// for a label classes.json does not name.
#[test]
fn grid_captions_name_the_class() {
    let model = class_model_with_names();
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let out = sample(
        dir,
        model.path(),
        &[
            "--steps",
            "1",
            "--num-images",
            "3",
            "--class",
            "cat,dog,7",
            "--cols",
            "3",
            "-o",
            "g.png",
        ],
    );
    assert_ok(&out, "class-conditional grid");
    let grid = decode_png(&dir.join("g.png")).to_rgb8();
    let (tile, band, b) = (128u32, 12u32, BORDER as u32);
    assert_eq!(grid.dimensions(), (3 * tile + 2 * b, tile + band));
    for (i, caption) in ["cat #0", "dog #1", "class 7 #2"].iter().enumerate() {
        let x0 = i as u32 * (tile + b);
        let cells = caption.chars().count();
        let mut want = Canvas::filled(tile as usize, band as usize, 3, BORDER_GRAY);
        want.draw_text(
            caption,
            (tile as usize - cells * GLYPH) / 2,
            2,
            1,
            TEXT_GRAY,
        );
        for y in 0..band {
            for x in 0..tile {
                assert_eq!(
                    grid.get_pixel(x0 + x, tile + y).0,
                    want.pixel(x as usize, y as usize),
                    "caption {caption:?} at ({x}, {y})"
                );
            }
        }
    }
}

/// Bad picture flags fail before the GPU is opened, naming the flag, writing nothing.
#[test]
fn bad_picture_flags_fail_before_the_gpu_is_opened() {
    let u = fixture(UNCOND);
    let cases: &[(&[&str], &[&str])] = &[
        (&["--scale", "0"], &["--scale", "got 0"]),
        (&["--scale", "33"], &["--scale", "1 to 32"]),
        (&["--cols", "0"], &["--cols", "got 0"]),
        (
            &[
                "--trajectory",
                "{dir}/t.png",
                "--scale",
                "0",
                "--out-dir",
                "{dir}/each",
            ],
            &["--scale", "got 0"],
        ),
        (
            &["--num-images", "5000", "--scale", "32"],
            &["--scale", "MiB limit"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, needles) in cases {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        let dir_str = dir.to_str().unwrap();
        let mut all: Vec<String> = [
            "--adapter",
            "no-such-adapter-anywhere",
            "sample",
            "--model",
            u.to_str().unwrap(),
            "-q",
            "-o",
            dir.join("out.png").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|a| a.replace("{dir}", dir_str)));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run_in(dir, &refs);
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit {:?}", out.status));
        }
        for needle in *needles {
            if !err.contains(needle) {
                problems.push(format!("stderr lacks {needle:?}"));
            }
        }
        if err.contains("adapter") || err.contains("grid.") {
            problems.push("reached the GPU or named the library field".into());
        }
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        if !left.is_empty() {
            problems.push(format!("left {left:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{args:?}: {}\nstderr: {err}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A latent pipeline folder through the binary: the grid shows decoded images, `--save-tensor`
/// holds `sample` (the decoded image) and `latents`, and `inspect` describes the decoder.
#[test]
fn latent_pipeline_folder_samples_and_saves_latents() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("ldm_pipeline/pipeline");
    let tensor = dir.path().join("out.safetensors");
    let grid = dir.path().join("grid.png");
    let out = sample(
        dir.path(),
        &model,
        &[
            "--num-images",
            "2",
            "--steps",
            "2",
            "--scale",
            "1",
            "--no-captions",
            "-o",
            grid.to_str().unwrap(),
            "--save-tensor",
            tensor.to_str().unwrap(),
        ],
    );
    assert_ok(&out, "LDM sample");
    let bytes = std::fs::read(&tensor).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("sample").unwrap().shape(), &[2, 3, 16, 16]);
    assert_eq!(st.tensor("latents").unwrap().shape(), &[2, 3, 8, 8]);
    let img = decode_png(&grid);
    // Two 16-px tiles side by side with the 2-px border between them.
    assert_eq!((img.width(), img.height()), (16 * 2 + 2, 16));
    let out = run_in(dir.path(), &["inspect", "--model", model.to_str().unwrap()]);
    assert_ok(&out, "LDM inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decoder") && text.contains("VQModel"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Slices: --first-image

/// safetensors bytes of one f32 tensor with `__metadata__` pairs.
fn tensor_file_with_metadata(
    name: &str,
    shape: &[usize],
    data: &[f32],
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        shape.to_vec(),
        bytemuck::cast_slice(data),
    )
    .unwrap();
    let metadata = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    safetensors::tensor::serialize([(name, view)], Some(metadata)).unwrap()
}

/// The `__metadata__` of a safetensors file.
fn tensor_metadata(bytes: &[u8]) -> std::collections::HashMap<String, String> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    metadata.metadata().clone().unwrap_or_default()
}

/// Samples `args` with `model` into `tensor` (and `--out-dir out_dir`), returning the tensor
/// file's bytes.
fn slice_run(dir: &Path, model: &Path, tensor: &str, out_dir: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(tensor);
    let out_dir = dir.join(out_dir);
    let mut all = vec![
        "--save-tensor",
        path.to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = sample(dir, model, &all);
    assert_ok(&out, &format!("sample {args:?}"));
    std::fs::read(&path).unwrap()
}

#[test]
fn first_image_slices_equal_one_run_bit_for_bit() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let model = fixture(CLASS_COND);
    let n = 5;
    let image_len = 3 * 16 * 16;
    // Stochastic (every step draws noise keyed by the global image index) and deterministic;
    // three labels cycle over 5 images, so every slice starts mid-cycle.
    for scheduler in ["ddpm", "ddim"] {
        let common = [
            "--scheduler",
            scheduler,
            "--steps",
            "2",
            "--seed",
            "11",
            "--class-label",
            "3,5,7",
        ];
        let whole_dir = format!("{scheduler}-whole");
        let whole = slice_run(
            dir,
            &model,
            &format!("{scheduler}-whole.st"),
            &whole_dir,
            &[&common[..], &["--num-images", "5"]].concat(),
        );
        let (_, shape, whole_values) = parse_tensor(&whole);
        assert_eq!(shape, [n, 3, 16, 16]);
        assert_eq!(tensor_metadata(&whole)["first_image"], "0");
        // Slices 0..2, 2..4 (two batches of 1) and 4..5.
        for (first, count, batch) in [(0, 2, "2"), (2, 2, "1"), (4, 1, "1")] {
            let part_dir = format!("{scheduler}-part{first}");
            let bytes = slice_run(
                dir,
                &model,
                &format!("{scheduler}-part{first}.st"),
                &part_dir,
                &[
                    &common[..],
                    &[
                        "--num-images",
                        &count.to_string(),
                        "--first-image",
                        &first.to_string(),
                        "--batch-size",
                        batch,
                    ],
                ]
                .concat(),
            );
            let (_, shape, values) = parse_tensor(&bytes);
            assert_eq!(shape, [count, 3, 16, 16]);
            let want = &whole_values[first * image_len..(first + count) * image_len];
            let same = values.len() == want.len()
                && values
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{scheduler}: images {first}..{} of a slice differ from one run",
                first + count
            );
            let metadata = tensor_metadata(&bytes);
            assert_eq!(metadata["first_image"], first.to_string(), "{scheduler}");
            // Per-image files carry the global index and equal the whole run's.
            let mut names: Vec<String> = std::fs::read_dir(dir.join(&part_dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let want_names: Vec<String> = (first..first + count)
                .map(|i| format!("{i:05}.png"))
                .collect();
            assert_eq!(names, want_names, "{scheduler}");
            for name in &names {
                let part = std::fs::read(dir.join(&part_dir).join(name)).unwrap();
                let one = std::fs::read(dir.join(&whole_dir).join(name)).unwrap();
                assert!(part == one, "{scheduler}: {name} differs from one run's");
            }
        }
    }

    // Given noise that says it holds images 3 .. 5 runs as that slice.
    let noise = normal(2 * image_len, 5);
    let noise_path = dir.join("noise3.st");
    std::fs::write(
        &noise_path,
        tensor_file_with_metadata("noise", &[2, 3, 16, 16], &noise, &[("first_image", "3")]),
    )
    .unwrap();
    let base = ["--steps", "2", "--num-images", "2"];
    let noise_arg = noise_path.to_str().unwrap();
    let given = tensor_bytes(
        dir,
        "given.st",
        &[
            &base[..],
            &["--init-noise", noise_arg, "--first-image", "3"],
        ]
        .concat(),
    );
    assert_eq!(tensor_metadata(&given)["first_image"], "3");
    let seeded = tensor_bytes(
        dir,
        "seeded3.st",
        &[&base[..], &["--first-image", "3"]].concat(),
    );
    assert!(
        given != seeded,
        "--init-noise was ignored with --first-image"
    );

    // File names widen past 5 digits when the slice's last index needs it.
    let wide = dir.join("wide");
    let out = sample(
        dir,
        &fixture(UNCOND),
        &[
            "--steps",
            "1",
            "--num-images",
            "2",
            "--first-image",
            "99999",
            "--out-dir",
            wide.to_str().unwrap(),
        ],
    );
    assert_ok(&out, "--first-image 99999");
    let mut names: Vec<String> = std::fs::read_dir(&wide)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["099999.png", "100000.png"]);
}

#[test]
fn bad_first_image_fails_cleanly() {
    let u = fixture(UNCOND);
    check_bad(
        &[
            bad(
                &u,
                &["--first-image", "18446744073709551616"],
                &["--first-image", "18446744073709551616"],
            ),
            bad(
                &u,
                &["--first-image", "18446744073709551615", "--num-images", "2"],
                &["--first-image", "18446744073709551615"],
            ),
            bad(
                &u,
                &["--first-image", "4294967295", "--num-images", "2"],
                &["--first-image", "4294967295", "4294967296"],
            ),
            bad(
                &u,
                &[
                    "--first-image",
                    "3",
                    "--num-images",
                    "1",
                    "--init-noise",
                    "{dir}/plain.st",
                ],
                &["--init-noise", "--first-image", "first_image"],
            ),
            bad(
                &u,
                &[
                    "--first-image",
                    "4",
                    "--num-images",
                    "1",
                    "--init-noise",
                    "{dir}/at3.st",
                ],
                &["--init-noise", "--first-image", "\"3\"", "expected 4"],
            ),
            bad(
                &u,
                &["--num-images", "1", "--init-noise", "{dir}/at3.st"],
                &["--init-noise", "--first-image", "expected 0"],
            ),
        ],
        &|dir| {
            let noise = normal(3 * 16 * 16, 1);
            std::fs::write(
                dir.join("plain.st"),
                tensor_file("noise", &[1, 3, 16, 16], &noise),
            )
            .unwrap();
            std::fs::write(
                dir.join("at3.st"),
                tensor_file_with_metadata(
                    "noise",
                    &[1, 3, 16, 16],
                    &noise,
                    &[("first_image", "3")],
                ),
            )
            .unwrap();
        },
    );
}

/// `--scheduler pndm`: a folder whose scheduler_config.json names `PNDMScheduler` samples with
/// it by default (the same tensor as `--scheduler pndm`, not DDIM's); a config without
/// `skip_prk_steps` gets PNDM's Runge–Kutta warm-up, which needs 4 steps; the unknown-sampler
/// error lists pndm.
#[test]
fn pndm_from_the_folder_class_and_its_bad_inputs() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let model = dir.join("sd_like");
    std::fs::create_dir(&model).unwrap();
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture(UNCOND).join(name), model.join(name)).unwrap();
    }
    std::fs::write(
        model.join("scheduler_config.json"),
        r#"{"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1}"#,
    )
    .unwrap();
    let run = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let mut args = vec![
            "--steps",
            "5",
            "--num-images",
            "2",
            "--seed",
            "3",
            "--save-tensor",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = sample(dir, &model, &args);
        assert_ok(&out, &format!("sample {extra:?}"));
        std::fs::read(&path).unwrap()
    };
    let default = run("default.st", &[]);
    let explicit = run("pndm.st", &["--scheduler", "pndm"]);
    let ddim = run("ddim.st", &["--scheduler", "ddim"]);
    assert!(
        default == explicit,
        "the PNDMScheduler folder did not sample with pndm"
    );
    assert!(default != ddim, "pndm and ddim gave the same tensor");
    let (_, shape, values) = parse_tensor(&default);
    assert_eq!(shape, [2, 3, 16, 16]);
    assert!(
        values.iter().all(|v| v.is_finite()),
        "non-finite pndm output"
    );

    let u = fixture(UNCOND);
    check_bad(
        &[
            bad(
                &u,
                &["--scheduler", "pndm", "--steps", "3"],
                &["skip_prk_steps", "at least 4", "got 3"],
            ),
            bad(
                &u,
                &["--scheduler", "plms"],
                &["--scheduler", "plms", "pndm"],
            ),
        ],
        &|_| {},
    );
}

/// `WGPU_DIFFUSION_TILES` picks the GPU-shaped GEMMs' tile policy (`adapters` says which; `auto`
/// is fixed on CPU adapters such as llvmpipe); a bad value fails naming the variable and the
/// accepted values, before anything is printed or written.
#[test]
fn tile_policy_variable() {
    let tmp = TempDir::new().unwrap();
    let run = |env: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(tmp.path())
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env_remove("WGPU_DIFFUSION_TILES");
        if let Some(v) = env {
            cmd.env("WGPU_DIFFUSION_TILES", v);
        }
        cmd.output().expect("run the binary")
    };
    let out = run(None, &["adapters"]);
    assert_ok(&out, "adapters");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("GEMM tiles fixed"), "{text}");
    let out = run(Some("Adaptive"), &["adapters"]);
    assert_ok(&out, "adapters, adaptive tiles");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("GEMM tiles adaptive"), "{text}");
    for args in [
        &["adapters"][..],
        &["sample", "--num-images", "1", "-o", "t.png"][..],
    ] {
        let out = run(Some("big"), args);
        assert!(
            !out.status.success(),
            "{args:?} accepted WGPU_DIFFUSION_TILES=big"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed before failing");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("WGPU_DIFFUSION_TILES") && err.contains("big") && err.contains("adaptive"),
            "{args:?}: {err}"
        );
        assert!(!tmp.path().join("t.png").exists());
    }
}
