//! Bad input through the real binary (issue 18): every case fails with a non-zero exit and a
//! message naming the flag, file or key to change, leaves no output, temp file or directory
//! behind, and never aborts; and the inputs that used to fight their defaults now work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_wgpu-diffusion");
/// Unconditional, 3×16×16, no scheduler_config.json.
const UNCOND: &str = "google_flags";

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
        "{what}: exit {:?}\nstderr:\n{}",
        out.status,
        stderr(out)
    );
}

/// Every entry of `dir` (recursively), as paths relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A copy of fixture `name` in a fresh directory, for corrupting.
fn model_copy(name: &str) -> TempDir {
    let tmp = TempDir::new().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    tmp
}

/// One invocation that must fail cleanly: its `sample` arguments (`{dir}` is the run's temp
/// directory) and the strings stderr must contain.
struct Case<'a> {
    model: PathBuf,
    args: Vec<String>,
    needles: &'a [&'a str],
}

fn case<'a>(model: &Path, args: &[&str], needles: &'a [&'a str]) -> Case<'a> {
    Case {
        model: model.to_path_buf(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        needles,
    }
}

/// Runs each case in a fresh directory (holding `setup`'s files): it must exit 1 (not abort,
/// not panic), name each needle, and leave the directory exactly as `setup` made it — no
/// output, no temp file, no created directory. Reports every failing case at once.
fn check_clean_failures(cases: &[Case], setup: &dyn Fn(&Path)) {
    let mut failures = Vec::new();
    for case in cases {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        setup(dir);
        let before = tree(dir);
        let dir_str = dir.to_str().unwrap();
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| a.replace("{dir}", dir_str))
            .collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let model = PathBuf::from(case.model.to_str().unwrap().replace("{dir}", dir_str));
        let out = sample(dir, &model, &refs);
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit {:?}, expected 1", out.status));
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
        let after = tree(dir);
        if after != before {
            problems.push(format!("the directory changed: {before:?} -> {after:?}"));
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

// ---------------------------------------------------------------------------------------------
// Class 2: atomic outputs

#[test]
fn clashing_and_impossible_outputs_are_refused_before_the_gpu() {
    let u = fixture(UNCOND);
    check_clean_failures(
        &[
            case(
                &u,
                &["-o", "{dir}/x.png", "--save-tensor", "{dir}/x.png"],
                &["-o", "--save-tensor", "same file"],
            ),
            case(
                &u,
                &["-o", "{dir}/x.png", "--trajectory", "{dir}/./x.png"],
                &["--trajectory", "same file"],
            ),
            case(
                &u,
                &["--save-tensor", "{dir}/t.png", "--trajectory", "t.png"],
                &["--save-tensor", "--trajectory", "same file"],
            ),
            // -o names the file --out-dir would write for image 1.
            case(
                &u,
                &[
                    "--num-images",
                    "2",
                    "--out-dir",
                    "{dir}/sub",
                    "-o",
                    "{dir}/sub/00001.png",
                ],
                &["-o", "--out-dir", "image 1"],
            ),
            case(
                &u,
                &["--out-dir", "{dir}/x.png", "-o", "{dir}/x.png"],
                &["-o", "--out-dir"],
            ),
            // A trailing slash names a directory: refused at once, not after the run.
            case(
                &u,
                &["-o", "{dir}/new/"],
                &["-o", "{dir}/new/", "directory"],
            ),
            case(
                &u,
                &["-o", "{dir}/grid.gif"],
                &["-o", ".gif", ".png", ".jpg", ".webp"],
            ),
            case(&u, &["-o", "{dir}/grid"], &["-o", "no file extension"]),
            case(
                &u,
                &[
                    "--trajectory",
                    "{dir}/strip.bmp",
                    "--save-tensor",
                    "{dir}/t.st",
                ],
                &["--trajectory", ".bmp"],
            ),
            // --out-dir under a file.
            case(
                &u,
                &["--out-dir", "{dir}/file.txt/each"],
                &["--out-dir", "file.txt", "not a directory"],
            ),
        ],
        &|dir| {
            std::fs::create_dir(dir.join("sub")).unwrap();
            std::fs::write(dir.join("file.txt"), "x").unwrap();
        },
    );
}

/// A run that fails after its outputs were checked (the weights do not load) leaves no temp file
/// and creates no --out-dir.
#[test]
fn a_failed_load_leaves_no_temp_file_and_no_out_dir() {
    let model = model_copy(UNCOND);
    let weights = model.path().join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    // The header intact, the data cut: the config loads, the weights do not.
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).unwrap();
    check_clean_failures(
        &[case(
            model.path(),
            &[
                "--steps",
                "2",
                "-o",
                "{dir}/grid.png",
                "--save-tensor",
                "{dir}/t.st",
                "--trajectory",
                "{dir}/strip.png",
                "--out-dir",
                "{dir}/each/deeper",
            ],
            &["diffusion_pytorch_model.safetensors"],
        )],
        &|_| {},
    );
}

/// `-o` and `--trajectory` are encoded as their extension says.
#[test]
fn picture_format_follows_the_extension() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let out = sample(
        dir,
        &fixture(UNCOND),
        &[
            "--steps",
            "2",
            "--num-images",
            "2",
            "-o",
            "grid.JPG",
            "--trajectory",
            "strip.webp",
            "--out-dir",
            "each",
        ],
    );
    assert_ok(&out, "jpg grid, webp strip");
    let grid = std::fs::read(dir.join("grid.JPG")).unwrap();
    assert!(
        grid.starts_with(&[0xFF, 0xD8, 0xFF]),
        "grid.JPG is not JPEG"
    );
    let decoded = image::load_from_memory_with_format(&grid, image::ImageFormat::Jpeg).unwrap();
    assert!(decoded.width() > 16 && decoded.height() > 16);
    let strip = std::fs::read(dir.join("strip.webp")).unwrap();
    assert!(
        strip.starts_with(b"RIFF") && &strip[8..12] == b"WEBP",
        "strip.webp is not WebP"
    );
    image::load_from_memory_with_format(&strip, image::ImageFormat::WebP).unwrap();
    // Per-image files stay PNG, and the directory was made when they were written.
    let each = tree(&dir.join("each"));
    assert_eq!(each, ["00000.png", "00001.png"]);
    assert_eq!(
        tree(dir),
        [
            "each",
            "each/00000.png",
            "each/00001.png",
            "grid.JPG",
            "strip.webp"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Class 4: one strict safetensors parser for weights and tensor files

/// A safetensors file from raw header text and data bytes (length prefix included).
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Files the reference implementation refuses and that used to load: a duplicate key (the last
/// won), bytes no tensor references between two tensors, and bytes after the last tensor.
fn lax_files() -> Vec<(&'static str, Vec<u8>, &'static [&'static str])> {
    let one = |v: f32| v.to_le_bytes().to_vec();
    vec![
        (
            "duplicate key",
            raw_safetensors(
                r#"{"noise":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"noise":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[one(1.0), one(2.0)].concat(),
            ),
            &["\"noise\"", "more than once"],
        ),
        (
            "gap",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                &[0u8; 12],
            ),
            &["[4, 8]", "\"a\"", "\"b\"", "belong to no tensor"],
        ),
        (
            "leading gap",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0u8; 8],
            ),
            &["[0, 4]", "start of the data section"],
        ),
        (
            "trailing bytes",
            raw_safetensors(
                r#"{"noise":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0u8; 7],
            ),
            &["3 trailing byte(s)", "7 byte data section"],
        ),
        (
            "metadata not strings",
            raw_safetensors(
                r#"{"__metadata__":{"first_image":0},"noise":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0u8; 4],
            ),
            &["__metadata__", "string"],
        ),
    ]
}

#[test]
fn weights_parser_refuses_what_the_reference_refuses() {
    use wgpu_diffusion::model::weights::Weights;
    let tmp = TempDir::new().unwrap();
    for (what, bytes, needles) in lax_files() {
        let path = tmp
            .path()
            .join(format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::write(&path, &bytes).unwrap();
        let err = Weights::open(&path).expect_err(what).to_string();
        assert!(err.contains(&path.display().to_string()), "{what}: {err}");
        for n in needles {
            assert!(err.contains(n), "{what}: lacks {n:?}: {err}");
        }
        // The reference implementation agrees.
        assert!(
            safetensors::SafeTensors::deserialize(&bytes).is_err(),
            "{what}: the reference accepts it"
        );
    }
    // A directory in the weights file's place names the path and says what it is.
    let dir = tmp.path().join("dir.safetensors");
    std::fs::create_dir(&dir).unwrap();
    let err = Weights::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("dir.safetensors") && err.contains("is a directory"),
        "{err}"
    );
    assert!(!err.contains("No such device"), "{err}");
}

/// --init-noise goes through the same parser: the same files are refused through the binary.
#[test]
fn init_noise_files_are_parsed_as_strictly_as_weights() {
    let u = fixture(UNCOND);
    let files = lax_files();
    let cases: Vec<Case> = files
        .iter()
        .map(|(what, _, needles)| Case {
            model: u.clone(),
            args: vec![
                "--num-images".into(),
                "1".into(),
                "--init-noise".into(),
                format!("{{dir}}/{}.st", what.replace(' ', "_")),
            ],
            needles,
        })
        .chain([case(
            &u,
            &["--init-noise", "{dir}/noise_dir"],
            &["--init-noise", "noise_dir", "is a directory"],
        )])
        .collect();
    check_clean_failures(&cases, &|dir| {
        for (what, bytes, _) in lax_files() {
            std::fs::write(dir.join(format!("{}.st", what.replace(' ', "_"))), bytes).unwrap();
        }
        std::fs::create_dir(dir.join("noise_dir")).unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Class 5: messages name the file, key or flag to change

/// A copy of fixture `name` with `file` written into it.
fn model_with(name: &str, file: &str, text: &str) -> TempDir {
    let model = model_copy(name);
    std::fs::write(model.path().join(file), text).unwrap();
    model
}

#[test]
fn messages_blame_the_file_or_key_at_fault() {
    let classes = model_with(
        "class_conditional",
        "classes.json",
        r#"{"cat": 0, "dog": 99, "null": 10}"#,
    );
    let betas = model_with(
        UNCOND,
        "scheduler_config.json",
        r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 3, "trained_betas": [0.1, 0.5, 1.0]}"#,
    );
    let cases = [
        // The bad label is classes.json's, whichever class the run asked for.
        case(
            classes.path(),
            &["--class", "cat"],
            &["classes.json", "dog", "99", "num_class_embeds = 11"],
        ),
        case(
            classes.path(),
            &["--class", "all"],
            &["classes.json", "dog"],
        ),
        // A beta of 1 leaves no signal: the key is named, not a sampler's arithmetic.
        case(
            betas.path(),
            &["--steps", "2", "--scheduler", "ddim"],
            &["scheduler_config.json", "trained_betas", "1", "[0, 1)"],
        ),
        case(
            Path::new("{dir}/m"),
            &[],
            &["diffusion_pytorch_model.safetensors", "is a directory"],
        ),
    ];
    check_clean_failures(&cases, &|dir| {
        let m = dir.join("m");
        std::fs::create_dir(&m).unwrap();
        std::fs::copy(fixture(UNCOND).join("config.json"), m.join("config.json")).unwrap();
        std::fs::create_dir(m.join("diffusion_pytorch_model.safetensors")).unwrap();
    });
    // And the messages no longer blame the flag or the OS.
    let tmp = TempDir::new().unwrap();
    let err = stderr(&sample(tmp.path(), classes.path(), &["--class", "cat"]));
    assert!(!err.contains("--class"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Class 6: --init-noise decides the image count

/// safetensors bytes of one tensor of `dtype` ("F32" or "F16") from f32 values.
fn noise_file(shape: &[usize], values: &[f32], dtype: &str) -> Vec<u8> {
    let data: Vec<u8> = match dtype {
        "F32" => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
    };
    let header = format!(
        r#"{{"noise":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[0,{}]}}}}"#,
        data.len()
    );
    raw_safetensors(&header, &data)
}

/// Values exactly representable in f16, roughly standard normal.
fn f16_values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
            half::f16::from_f32(3.0 * x).to_f32()
        })
        .collect()
}

#[test]
fn init_noise_sets_the_image_count_and_may_be_f16() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let shape = [3, 3, 16, 16];
    let values = f16_values(shape.iter().product());
    std::fs::write(dir.join("n32.st"), noise_file(&shape, &values, "F32")).unwrap();
    std::fs::write(dir.join("n16.st"), noise_file(&shape, &values, "F16")).unwrap();
    let run = |noise: &str, out: &str| {
        let o = sample(
            dir,
            &fixture(UNCOND),
            &["--steps", "2", "--init-noise", noise, "--save-tensor", out],
        );
        assert_ok(&o, noise);
        std::fs::read(dir.join(out)).unwrap()
    };
    // No --num-images: three images, as the tensor holds (the default 16 used to clash).
    let from_f32 = run("n32.st", "a.st");
    let st = safetensors::SafeTensors::deserialize(&from_f32).unwrap();
    assert_eq!(st.tensor("sample").unwrap().shape(), &shape[..]);
    // The same values stored as F16 give the same samples.
    assert!(
        run("n16.st", "b.st") == from_f32,
        "F16 noise sampled differently"
    );
    // An explicit count that disagrees is still an error naming the flag.
    check_clean_failures(
        &[case(
            &fixture(UNCOND),
            &["--num-images", "2", "--init-noise", "{dir}/n.st"],
            &[
                "--init-noise",
                "[3, 3, 16, 16]",
                "[2, 3, 16, 16]",
                "--num-images",
            ],
        )],
        &|d| std::fs::write(d.join("n.st"), noise_file(&shape, &values, "F32")).unwrap(),
    );
}

// ---------------------------------------------------------------------------------------------
// Class 7: bench checks everything before measuring

#[test]
fn bench_refuses_bad_arguments_before_measuring() {
    let u = fixture(UNCOND);
    let u = u.to_str().unwrap();
    let quick = ["bench", "--runs", "1", "--warmup", "0", "--batch", "1"];
    let cases: &[(&[&str], &[&str])] = &[
        // The default workload (cifar10-32) would measure for minutes before these failed.
        (
            &["--json", "/nonexistent-dir/r.json"],
            &["--json", "/nonexistent-dir", "does not exist"],
        ),
        (&["--json", "{dir}/"], &["--json", "is a directory"]),
        (&["--steps", "0"], &["--steps", "got 0"]),
        (
            &["--model", u, "--steps", "5000"],
            &["--steps", "5000", "num_train_timesteps"],
        ),
        (
            &["--model", u, "--scheduler", "nonsense"],
            &["--scheduler", "nonsense"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, needles) in cases {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().to_str().unwrap();
        let mut all: Vec<String> = quick.iter().map(|s| (*s).to_owned()).collect();
        all.extend(args.iter().map(|a| a.replace("{dir}", dir)));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let out = run_in(tmp.path(), &refs);
        let secs = start.elapsed().as_secs_f64();
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit {:?}", out.status));
        }
        for n in *needles {
            if !err.contains(n) {
                problems.push(format!("stderr lacks {n:?}"));
            }
        }
        // Nothing measured: no adapter opened, so well under a second on any machine.
        if secs > 20.0 {
            problems.push(format!("took {secs:.1} s"));
        }
        if !tree(tmp.path()).is_empty() {
            problems.push(format!("left {:?}", tree(tmp.path())));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "bench {args:?}: {}\nstderr: {err}",
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));

    // A good --json is written (atomically) after measuring.
    let tmp = TempDir::new().unwrap();
    let mut all = quick.to_vec();
    all.extend(["--model", u, "--json", "r.json"]);
    let out = run_in(tmp.path(), &all);
    assert_ok(&out, "bench --json");
    let text = std::fs::read_to_string(tmp.path().join("r.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema"], wgpu_diffusion::bench::SCHEMA);
    assert_eq!(tree(tmp.path()), ["r.json"]);
}

// ---------------------------------------------------------------------------------------------
// Class 3: non-finite numbers are errors, never a black image

/// A copy of the unconditional fixture whose `conv_out.bias` is all `value`.
fn model_with_bias(value: f32) -> TempDir {
    let model = model_copy(UNCOND);
    let path = model.path().join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            if name == "conv_out.bias" {
                assert_eq!(view.dtype(), safetensors::Dtype::F32);
                data = data
                    .chunks_exact(4)
                    .flat_map(|_| value.to_le_bytes())
                    .collect();
            }
            (name, view.shape().to_vec(), data)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    model
}

#[test]
fn non_finite_weights_arguments_and_samples_are_errors() {
    let u = fixture(UNCOND);
    let nan = model_with_bias(f32::NAN);
    // Finite weights whose output overflows f32: euler and ddim used to write all-NaN
    // (black) images with exit 0.
    let huge = model_with_bias(3e38);
    let cases = [
        case(
            nan.path(),
            &["--steps", "2"],
            &[
                "conv_out.bias",
                "non-finite",
                "NaN",
                "diffusion_pytorch_model.safetensors",
            ],
        ),
        case(
            &u,
            &["--eta", "1e300", "--scheduler", "ddim"],
            &["--eta", "1e300", "f32"],
        ),
        case(
            &u,
            &["--guidance-scale", "1e300"],
            &["--guidance-scale", "f32"],
        ),
        case(
            huge.path(),
            &[
                "--steps",
                "3",
                "--num-images",
                "2",
                "--scheduler",
                "euler",
                "-o",
                "{dir}/g.png",
                "--save-tensor",
                "{dir}/t.st",
                "--out-dir",
                "{dir}/each",
            ],
            &[
                "final samples",
                "non-finite",
                "image 0",
                "first seen after step 1 of 3)",
                "nothing was written",
            ],
        ),
        // The step where it first showed is named (the GPU checks x after every step).
        case(
            huge.path(),
            &[
                "--steps",
                "3",
                "--num-images",
                "1",
                "--scheduler",
                "ddim",
                "--trajectory",
                "{dir}/s.png",
                "--trajectory-every",
                "1",
            ],
            &[
                "final samples",
                "non-finite",
                "first seen after step ",
                "of 3)",
            ],
        ),
    ];
    check_clean_failures(&cases, &|_| {});
}

// ---------------------------------------------------------------------------------------------
// Cancellation

/// Ctrl-C (and SIGTERM) during sampling: a prompt non-zero exit and no temp file or output.
#[cfg(unix)]
#[test]
fn interrupting_a_run_leaves_no_temp_file() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        let model = fixture(UNCOND);
        let mut child = Command::new(BIN)
            .args(["sample", "--model", model.to_str().unwrap(), "-q"])
            .args(["--num-images", "64", "--steps", "200", "--batch-size", "8"])
            .args(["-o", "g.png", "--save-tensor", "t.st", "--out-dir", "each"])
            .current_dir(dir)
            .env("XDG_RUNTIME_DIR", "/tmp")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the outputs' temp files exist: the run is past its checks.
        let start = std::time::Instant::now();
        while tree(dir).iter().filter(|n| n.ends_with(".tmp")).count() < 2 {
            assert!(
                start.elapsed().as_secs() < 60,
                "no temp files: {:?}",
                tree(dir)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let sent = std::time::Instant::now();
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = child.wait().unwrap();
        let waited = sent.elapsed().as_secs_f64();
        assert_eq!(status.code(), Some(code), "signal {signal}: {status:?}");
        assert!(waited < 5.0, "signal {signal}: took {waited:.1} s to exit");
        assert!(tree(dir).is_empty(), "signal {signal} left {:?}", tree(dir));
    }
}

// ---------------------------------------------------------------------------------------------
// Class 1: sizes checked before anything is allocated; --out-dir streams

#[test]
fn sizes_are_checked_before_allocating() {
    let u = fixture(UNCOND);
    let timesteps = model_with(
        UNCOND,
        "scheduler_config.json",
        r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000000000000}"#,
    );
    let cases = [
        // Used to abort: "memory allocation of 8000000000000 bytes failed".
        case(
            timesteps.path(),
            &["--steps", "2"],
            &[
                "scheduler_config.json",
                "num_train_timesteps",
                "1000000000000",
                "at most",
            ],
        ),
        // Every image kept for --save-tensor: refused against the machine's memory, at once.
        case(
            &u,
            &["--num-images", "4000000000", "--save-tensor", "{dir}/t.st"],
            &["--num-images 4000000000", "available", "--out-dir"],
        ),
        case(
            &u,
            &[
                "--height",
                "1048576",
                "--width",
                "1048576",
                "--save-tensor",
                "{dir}/t.st",
            ],
            &["--num-images 16 at 3x1048576x1048576", "available"],
        ),
    ];
    check_clean_failures(&cases, &|_| {});
}

/// --out-dir alone is written batch by batch: the same files as a run that keeps everything,
/// and a trajectory strip gathered over batches is the strip of one batch.
#[test]
fn streamed_out_dir_matches_a_kept_run() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let u = fixture(UNCOND);
    let common = ["--steps", "3", "--num-images", "5", "--seed", "3"];
    let mut streamed = common.to_vec();
    streamed.extend([
        "--batch-size",
        "2",
        "--out-dir",
        "a",
        "--trajectory",
        "sa.png",
    ]);
    streamed.extend(["--trajectory-every", "1"]);
    assert_ok(&sample(dir, &u, &streamed), "streamed");
    let mut kept = common.to_vec();
    kept.extend([
        "--batch-size",
        "5",
        "--out-dir",
        "b",
        "-o",
        "g.png",
        "--trajectory",
    ]);
    kept.extend(["sb.png", "--trajectory-every", "1"]);
    assert_ok(&sample(dir, &u, &kept), "kept");
    let names = tree(&dir.join("a"));
    assert_eq!(names.len(), 5);
    assert_eq!(names, tree(&dir.join("b")));
    for name in &names {
        let a = std::fs::read(dir.join("a").join(name)).unwrap();
        let b = std::fs::read(dir.join("b").join(name)).unwrap();
        assert!(
            a == b,
            "{name} differs between the streamed and the kept run"
        );
    }
    let a = std::fs::read(dir.join("sa.png")).unwrap();
    let b = std::fs::read(dir.join("sb.png")).unwrap();
    assert!(a == b, "the strip differs between batch sizes 2 and 5");
}
