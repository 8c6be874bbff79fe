//! The `encode-prompt` subcommand end to end on a pipeline folder built from the committed
//! fixtures (the SD 1.x tokenizer with the real vocabulary, the tiny random quick_gelu text
//! encoder): the saved `prompt_embeds` / `input_ids` match transformers' float64 results, the ids
//! are printed without `--save-tensor`, and bad folders fail with a named cause and no output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;

const BIN: &str = env!("CARGO_BIN_EXE_wgpu-diffusion");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tokenizer/` from `clip_tokenizer/<tokenizer>` (+ the real vocab files for `*_vocab`),
/// `text_encoder/` from `clip_text/quick_gelu`.
fn pipeline(tokenizer: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("clip_tokenizer");
    let tok = dir.path().join("tokenizer");
    std::fs::create_dir(&tok).unwrap();
    for entry in std::fs::read_dir(src.join(tokenizer)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tok.join(entry.file_name())).unwrap();
    }
    if tokenizer.ends_with("_vocab") {
        for f in ["vocab.json", "merges.txt"] {
            std::fs::copy(src.join(f), tok.join(f)).unwrap();
        }
    }
    let enc = dir.path().join("text_encoder");
    std::fs::create_dir(&enc).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("clip_text/quick_gelu").join(f), enc.join(f)).unwrap();
    }
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn f32s(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{key}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn i64s(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{key}");
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

#[test]
fn saves_prompt_embeds_and_input_ids_matching_transformers() {
    let dir = pipeline("sd1_vocab");
    let out_path = dir.path().join("embeds.safetensors");
    let model = dir.path().to_str().unwrap();
    // Prompts 2 and 0 of the fixture, in that order.
    let out = run(&[
        "encode-prompt",
        "--model",
        model,
        "--prompt",
        "A painting of a Fox, in the style of Hokusai; ukiyo-e!!! 1857",
        "--prompt",
        "a photo of an astronaut riding a horse on mars",
        "--save-tensor",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&out_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, embeds) = f32s(&st, "prompt_embeds");
    assert_eq!(shape, [2, 77, 8]);
    let (shape, ids) = i64s(&st, "input_ids");
    assert_eq!(shape, [2, 77]);

    let io_bytes = std::fs::read(fixtures().join("clip_text/quick_gelu/io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&io_bytes).unwrap();
    let (_, want) = f32s(&io, "last_hidden_state");
    let (_, want_ids) = i64s(&io, "input_ids");
    let row = 77 * 8;
    for (slot, fixture_row) in [(0, 2), (1, 0)] {
        assert_eq!(
            ids[slot * 77..(slot + 1) * 77],
            want_ids[fixture_row * 77..(fixture_row + 1) * 77]
        );
        let got = &embeds[slot * row..(slot + 1) * row];
        let want = &want[fixture_row * row..(fixture_row + 1) * row];
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(
            err <= 1e-4 * scale,
            "prompt {slot}: max err {err} vs max|ref| {scale}"
        );
    }
    let stdout = text(&out.stdout);
    assert!(stdout.contains("49406 320 1125 539 550 18376"), "{stdout}");
    assert!(stdout.contains("prompt_embeds [2, 77, 8]"), "{stdout}");
}

#[test]
fn prints_token_ids_without_save_tensor() {
    let dir = pipeline("sd1_vocab");
    let out = run(&[
        "encode-prompt",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "a photo of an astronaut riding a horse on mars",
        "--prompt",
        "",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let first: Vec<&str> = lines[0].rsplit(": ").next().unwrap().split(' ').collect();
    assert_eq!(first.len(), 77, "{stdout}");
    assert_eq!(
        &first[..12],
        [
            "49406", "320", "1125", "539", "550", "18376", "6765", "320", "4558", "525", "7496",
            "49407"
        ]
    );
    assert!(lines[1].starts_with("\"\": 49406 49407 49407"), "{stdout}");
}

#[test]
fn bad_folders_fail_with_a_named_cause_and_no_output() {
    // The tokenizer's vocabulary (5514 tokens) disagrees with the encoder's vocab_size (49 408).
    let dir = pipeline("sd1_json");
    let out_path = dir.path().join("embeds.safetensors");
    let args = |model: &str| {
        run(&[
            "encode-prompt",
            "--model",
            model,
            "--prompt",
            "a cat",
            "--save-tensor",
            out_path.to_str().unwrap(),
        ])
    };
    let out = args(dir.path().to_str().unwrap());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("vocab_size") && stderr.contains("5514"),
        "{stderr}"
    );
    // A folder without text_encoder/.
    std::fs::remove_dir_all(dir.path().join("text_encoder")).unwrap();
    let out = args(dir.path().to_str().unwrap());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("text_encoder"), "{stderr}");
    // Not a directory at all.
    let out = args(dir.path().join("nowhere").to_str().unwrap());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--model"),
        "{}",
        text(&out.stderr)
    );
    // No output and no stray temp file.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["tokenizer"], "{left:?}");
}
