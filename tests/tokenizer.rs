//! CLIP tokenizer vs transformers 5's `CLIPTokenizer`: every prompt of
//! tests/fixtures/clip_tokenizer/expected.json (written by scripts/make_clip_fixtures.py) through
//! every fixture folder (SD 1.x / 2.x pad conventions, vocab.json + merges.txt and tokenizer.json
//! layouts) must give exactly transformers' input_ids and attention_mask; bad folders must fail
//! naming the file and what was expected.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use wgpu_diffusion::model::clip_text::tokenizer::ClipTokenizer;
use wgpu_diffusion::Error;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_tokenizer")
}

fn expected() -> Value {
    let path = fixtures().join("expected.json");
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

/// A complete copy of a fixture folder in a temporary directory: the `*_vocab` folders hold only
/// their configs, the real vocab.json / merges.txt are stored once beside them.
fn folder_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join(name);
    for entry in fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    if !source.join("tokenizer.json").exists() {
        for file in ["vocab.json", "merges.txt"] {
            fs::copy(fixtures().join(file), dir.path().join(file)).unwrap();
        }
    }
    dir
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn every_prompt_matches_transformers_in_every_folder() {
    let expected = expected();
    let folders = expected["folders"].as_object().unwrap();
    assert_eq!(
        folders.len(),
        5,
        "sd1/sd2 x vocab/json layouts + the v4 config"
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, folder) in folders {
        let dir = folder_copy(name);
        let tokenizer =
            ClipTokenizer::from_folder(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            tokenizer.pad_id() as u64,
            folder["pad_id"].as_u64().unwrap(),
            "{name} pad id"
        );
        assert_eq!(
            tokenizer.bos_id() as u64,
            folder["bos_id"].as_u64().unwrap(),
            "{name} bos id"
        );
        assert_eq!(
            tokenizer.eos_id() as u64,
            folder["eos_id"].as_u64().unwrap(),
            "{name} eos id"
        );
        assert_eq!(
            tokenizer.vocab_size() as u64,
            folder["len"].as_u64().unwrap(),
            "{name} size"
        );
        assert_eq!(tokenizer.model_max_length(), 77, "{name}");
        let cases = folder["cases"].as_array().unwrap();
        assert!(cases.len() >= 40, "{name}: {} prompts", cases.len());
        for case in cases {
            let prompt = case["prompt"].as_str().unwrap();
            let want_ids = ids(&case["input_ids"]);
            let want_mask = ids(&case["attention_mask"]);
            let got = tokenizer.encode(prompt);
            checked += 1;
            let want_length = want_mask.iter().filter(|&&m| m == 1).count();
            if got.input_ids != want_ids
                || got.attention_mask != want_mask
                || got.length != want_length
            {
                let first = (0..want_ids.len())
                    .find(|&i| got.input_ids.get(i) != Some(&want_ids[i]))
                    .unwrap_or(0);
                failures.push(format!(
                    "{name}: {prompt:?}: first difference at {first}\n  want {:?}\n  got  {:?}",
                    &want_ids[..want_length],
                    &got.input_ids[..got.length],
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} encodings differ from transformers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 200, "{checked}");
}

#[test]
fn tokenizer_json_folders_load_in_place() {
    // No copying needed: the tokenizer.json layout is self-contained.
    let tokenizer = ClipTokenizer::from_folder(&fixtures().join("sd2_json")).unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    let e = tokenizer.encode("hello!!");
    assert_eq!(
        e.input_ids[..5],
        [5512, 3306, 0, 0, 5513],
        "SD 2.x's pad `!` is cut out"
    );
}

#[test]
fn truncation_keeps_the_first_75_tokens_and_ends_with_eos() {
    let dir = folder_copy("sd1_vocab");
    let tokenizer = ClipTokenizer::from_folder(dir.path()).unwrap();
    let long = "a photo of a cat, ".repeat(20);
    let full = tokenizer.tokenize(&long);
    assert_eq!(full.len(), 120, "6 tokens per repeat");
    let e = tokenizer.encode(&long);
    assert_eq!(e.length, 77);
    assert_eq!(e.input_ids[0], 49406);
    assert_eq!(e.input_ids[1..76], full[..75]);
    assert_eq!(e.input_ids[76], 49407);
}

/// The error message for a folder, asserting it is an error.
fn load_error(dir: &Path) -> (Error, String) {
    let err = ClipTokenizer::from_folder(dir).expect_err("the folder is invalid");
    let message = err.to_string();
    (err, message)
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (err, message) = load_error(&dir.path().join("absent"));
    assert!(matches!(err, Error::MissingFile { .. }), "{message}");
    assert!(message.contains("tokenizer folder"), "{message}");

    // No tokenizer_config.json.
    let (err, message) = load_error(dir.path());
    assert!(matches!(err, Error::MissingFile { .. }), "{message}");
    assert!(
        message.contains("tokenizer_config.json: missing"),
        "{message}"
    );

    // A config but neither tokenizer.json nor vocab.json.
    let folder = folder_copy("sd1_vocab");
    fs::remove_file(folder.path().join("vocab.json")).unwrap();
    let (err, message) = load_error(folder.path());
    assert!(matches!(err, Error::MissingFile { .. }), "{message}");
    assert!(
        message.contains("vocab.json: missing BPE vocabulary"),
        "{message}"
    );
    assert!(
        message.contains("tokenizer.json, or vocab.json and merges.txt"),
        "{message}"
    );

    let folder = folder_copy("sd2_vocab");
    fs::remove_file(folder.path().join("merges.txt")).unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("merges.txt: missing BPE merges"),
        "{message}"
    );
}

#[test]
fn malformed_json_is_named() {
    let folder = folder_copy("sd1_vocab");
    fs::write(folder.path().join("vocab.json"), "{\"a\": 0,").unwrap();
    let (err, message) = load_error(folder.path());
    assert!(matches!(err, Error::Config { .. }), "{message}");
    assert!(
        message.contains("vocab.json: (file): not valid JSON"),
        "{message}"
    );

    let folder = folder_copy("sd1_json");
    fs::write(folder.path().join("tokenizer_config.json"), "[1, 2]").unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("tokenizer_config.json: (file): expected a JSON object, found a list"),
        "{message}"
    );

    let folder = folder_copy("sd1_vocab");
    fs::write(folder.path().join("vocab.json"), "{\"a\": -1}").unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("vocab.json: a: expected a token id"),
        "{message}"
    );
}

#[test]
fn vocab_merges_mismatch_is_named() {
    // The vocabulary of the truncated tokenizer.json (5000 merges) with CLIP's full merges.txt:
    // merge 5001 (line 5002) produces a token the vocabulary does not have.
    let folder = folder_copy("sd1_vocab");
    let small: Value = serde_json::from_str(
        &fs::read_to_string(fixtures().join("sd1_json/tokenizer.json")).unwrap(),
    )
    .unwrap();
    fs::write(
        folder.path().join("vocab.json"),
        serde_json::to_string(&small["model"]["vocab"]).unwrap(),
    )
    .unwrap();
    let (err, message) = load_error(folder.path());
    assert!(matches!(err, Error::Config { .. }), "{message}");
    assert!(
        message.contains("merges.txt: line 5002: merge"),
        "{message}"
    );
    assert!(message.contains("is not in the vocabulary"), "{message}");
    assert!(
        message.contains("expected vocabulary and merges from the same tokenizer"),
        "{message}"
    );

    let folder = folder_copy("sd1_vocab");
    let merges = fs::read_to_string(folder.path().join("merges.txt")).unwrap();
    fs::write(folder.path().join("merges.txt"), format!("{merges}a b c\n")).unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("merges.txt: line 48896: \"a b c\": expected two tokens"),
        "{message}"
    );
}

#[test]
fn unknown_pad_token_is_named() {
    let folder = folder_copy("sd1_vocab");
    let path = folder.path().join("special_tokens_map.json");
    let mut map: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    map["pad_token"] = Value::from("[PAD]");
    fs::write(&path, map.to_string()).unwrap();
    let (err, message) = load_error(folder.path());
    assert!(matches!(err, Error::Config { .. }), "{message}");
    assert!(
        message
            .contains("special_tokens_map.json: pad_token: \"[PAD]\" is neither in the vocabulary"),
        "{message}"
    );
    assert!(message.contains("SD 2.x with \"!\""), "{message}");
}

#[test]
fn unusable_configs_are_named() {
    let folder = folder_copy("sd1_json");
    let path = folder.path().join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("model_max_length");
    fs::write(&path, config.to_string()).unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("tokenizer_config.json: model_max_length: absent"),
        "{message}"
    );

    config["model_max_length"] = serde_json::json!(1e30);
    fs::write(&path, config.to_string()).unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("is not a usable sequence length"),
        "{message}"
    );

    let folder = folder_copy("sd2_json");
    let path = folder.path().join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["model"]["type"] = Value::from("WordPiece");
    fs::write(&path, tokenizer.to_string()).unwrap();
    let (_, message) = load_error(folder.path());
    assert!(
        message.contains("tokenizer.json: model.type: Some(\"WordPiece\"): expected \"BPE\""),
        "{message}"
    );
}
