//! Loading config.json and safetensors weights through the public API: valid diffusers inputs
//! parse, and every kind of broken input yields the right `Error` variant with a message naming
//! the file and the key or value at fault.

use std::path::{Path, PathBuf};

use wgpu_diffusion::model::unet_2d::config::{DownBlock, SampleSize, UNet2DConfig, UpBlock};
use wgpu_diffusion::model::weights::Weights;
use wgpu_diffusion::Error;

/// google/ddpm-cifar10-32's config.json, verbatim.
const CIFAR10_CONFIG: &str = r#"{"_class_name":"UNet2DModel","_diffusers_version":"0.0.4","act_fn":"silu","attention_head_dim":null,"block_out_channels":[128,256,256,256],"center_input_sample":false,"down_block_types":["DownBlock2D","AttnDownBlock2D","DownBlock2D","DownBlock2D"],"downsample_padding":0,"flip_sin_to_cos":false,"freq_shift":1,"in_channels":3,"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-06,"norm_num_groups":32,"out_channels":3,"sample_size":32,"time_embedding_type":"positional","up_block_types":["UpBlock2D","UpBlock2D","AttnUpBlock2D","UpBlock2D"]}"#;

// ---------------------------------------------------------------------------------------------
// helpers

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, text).unwrap();
    path
}

/// Parses `text` as a config file in a fresh tempdir; returns the path too, for message checks.
fn config_result(text: &str) -> (tempfile::TempDir, PathBuf, Result<UNet2DConfig, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), text);
    let result = UNet2DConfig::from_file(&path);
    (dir, path, result)
}

/// Asserts `text` fails with `Error::Config` for `key`, and that the message names the file,
/// the key and every string in `mentions`.
fn assert_config_error(text: &str, key: &str, mentions: &[&str]) {
    let (_dir, path, result) = config_result(text);
    let err = result.expect_err("config should be rejected");
    let msg = err.to_string();
    match &err {
        Error::Config {
            path: p, key: k, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(k, key, "wrong key in: {msg}");
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    assert!(
        msg.contains(&path.display().to_string()),
        "message lacks the path: {msg}"
    );
    assert!(msg.contains(key), "message lacks the key {key:?}: {msg}");
    for m in mentions {
        assert!(msg.contains(m), "message lacks {m:?}: {msg}");
    }
}

/// One tensor for the test safetensors writer.
struct T<'a> {
    key: &'a str,
    dtype: &'a str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32_tensor<'a>(key: &'a str, shape: &[usize], values: &[f32]) -> T<'a> {
    T {
        key,
        dtype: "F32",
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes `header` (JSON text) and `data` as a safetensors file with a correct length prefix.
fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// Writes a well-formed safetensors file holding `tensors` back to back.
fn write_safetensors(path: &Path, tensors: &[T]) {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for t in tensors {
        let begin = data.len();
        data.extend_from_slice(&t.data);
        entries.push(format!(
            "\"{}\":{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{},{}]}}",
            t.key,
            t.dtype,
            t.shape,
            begin,
            data.len()
        ));
    }
    let header = format!(
        "{{\"__metadata__\":{{\"format\":\"pt\"}},{}}}",
        entries.join(",")
    );
    write_raw(path, &header, &data);
}

fn weights_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("diffusion_pytorch_model.safetensors")
}

/// Opens a file made by `make`, expecting `Error::SafeTensors` whose message names the file and
/// every string in `mentions`.
fn assert_safetensors_error(make: impl FnOnce(&Path), mentions: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    make(&path);
    let err = Weights::open(&path).expect_err("file should be rejected");
    let msg = err.to_string();
    assert!(
        matches!(err, Error::SafeTensors { .. }),
        "expected SafeTensors, got {err:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()),
        "message lacks the path: {msg}"
    );
    for m in mentions {
        assert!(msg.contains(m), "message lacks {m:?}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// config.json

#[test]
fn cifar10_config_parses() {
    let (_dir, path, result) = config_result(CIFAR10_CONFIG);
    let c = result.unwrap();
    assert_eq!(c.source, path);
    assert_eq!(c.sample_size, Some(SampleSize::Square(32)));
    assert_eq!(c.sample_hw(), Some((32, 32)));
    assert_eq!(c.in_channels, 3);
    assert_eq!(c.out_channels, 3);
    assert_eq!(c.block_out_channels, vec![128, 256, 256, 256]);
    assert_eq!(
        c.down_block_types,
        vec![
            DownBlock::Down,
            DownBlock::AttnDown,
            DownBlock::Down,
            DownBlock::Down
        ]
    );
    assert_eq!(
        c.up_block_types,
        vec![UpBlock::Up, UpBlock::Up, UpBlock::AttnUp, UpBlock::Up]
    );
    assert_eq!(c.attention_head_dim, None);
    assert_eq!(c.num_heads(256), 1);
    assert_eq!(c.head_dim(256), 256);
    assert_eq!(c.downsample_padding, 0);
    assert!(!c.flip_sin_to_cos);
    assert_eq!(c.freq_shift, 1.0);
    assert_eq!(c.mid_block_scale_factor, 1.0);
    assert_eq!(c.norm_eps, 1e-6);
    assert_eq!(c.norm_num_groups, 32);
    assert_eq!(c.attn_groups(), 32);
    assert_eq!(c.time_embed_dim(), 512);
    assert!(c.has_mid_block());
    assert!(c.add_attention);
    assert_eq!(c.mid_block_type.as_deref(), Some("UNetMidBlock2D"));
    assert_eq!(c.layers_per_block, 2);
    assert_eq!(c.num_class_embeds, None);
    c.check_resolution(32, 32).unwrap();
}

#[test]
fn empty_object_gets_diffusers_defaults() {
    let c = UNet2DConfig::from_json_str("{}", Path::new("mem.json")).unwrap();
    assert_eq!(c.sample_size, None);
    assert_eq!((c.in_channels, c.out_channels), (3, 3));
    assert!(!c.center_input_sample);
    assert_eq!(c.time_embedding_type, "positional");
    assert_eq!(c.time_embedding_dim, None);
    assert_eq!(c.freq_shift, 0.0);
    assert!(c.flip_sin_to_cos);
    assert_eq!(
        c.down_block_types,
        vec![
            DownBlock::Down,
            DownBlock::AttnDown,
            DownBlock::AttnDown,
            DownBlock::AttnDown
        ]
    );
    assert_eq!(c.mid_block_type.as_deref(), Some("UNetMidBlock2D"));
    assert_eq!(
        c.up_block_types,
        vec![
            UpBlock::AttnUp,
            UpBlock::AttnUp,
            UpBlock::AttnUp,
            UpBlock::Up
        ]
    );
    assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
    assert_eq!(c.layers_per_block, 2);
    assert_eq!(c.mid_block_scale_factor, 1.0);
    assert_eq!(c.downsample_padding, 1);
    assert_eq!(
        (c.downsample_type.as_str(), c.upsample_type.as_str()),
        ("conv", "conv")
    );
    assert_eq!(c.dropout, 0.0);
    assert_eq!(c.act_fn, "silu");
    assert_eq!(c.attention_head_dim, Some(8));
    assert_eq!(c.norm_num_groups, 32);
    assert_eq!(c.attn_norm_num_groups, None);
    assert_eq!(c.norm_eps, 1e-5);
    assert_eq!(c.resnet_time_scale_shift, "default");
    assert!(c.add_attention);
    assert_eq!(c.class_embed_type, None);
    assert_eq!(c.num_class_embeds, None);
    assert_eq!(c.num_train_timesteps, None);
    assert_eq!(c.time_embed_dim(), 896);
    assert_eq!(c.num_heads(448), 56);
    assert_eq!(c.head_dim(448), 8);
    assert_eq!(c.source, Path::new("mem.json"));
}

#[test]
fn attention_head_dim_null_vs_absent() {
    let null = UNet2DConfig::from_json_str(r#"{"attention_head_dim": null}"#, Path::new("a.json"))
        .unwrap();
    assert_eq!(null.attention_head_dim, None);
    assert_eq!(null.num_heads(448), 1);
    assert_eq!(null.head_dim(448), 448);
    let absent = UNet2DConfig::from_json_str(r#"{"in_channels": 3}"#, Path::new("b.json")).unwrap();
    assert_eq!(absent.attention_head_dim, Some(8));
    let explicit =
        UNet2DConfig::from_json_str(r#"{"attention_head_dim": 32}"#, Path::new("c.json")).unwrap();
    assert_eq!(explicit.attention_head_dim, Some(32));
    assert_eq!(explicit.num_heads(448), 14);
}

#[test]
fn mid_block_null_means_no_mid_block() {
    let c =
        UNet2DConfig::from_json_str(r#"{"mid_block_type": null}"#, Path::new("m.json")).unwrap();
    assert!(!c.has_mid_block());
}

#[test]
fn sample_size_pair_and_float_freq_shift() {
    let c = UNet2DConfig::from_json_str(
        r#"{"sample_size": [64, 32], "freq_shift": 0.5, "attn_norm_num_groups": 16, "num_class_embeds": 10}"#,
        Path::new("s.json"),
    )
    .unwrap();
    assert_eq!(c.sample_hw(), Some((64, 32)));
    assert_eq!(c.freq_shift, 0.5);
    assert_eq!(c.attn_groups(), 16);
    assert_eq!(c.num_class_embeds, Some(10));
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let err = UNet2DConfig::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn malformed_json() {
    assert_config_error(
        "{\"in_channels\": 3,\n \"out_channels\" 3}",
        "(JSON syntax)",
        &["line 2", "column"],
    );
}

#[test]
fn top_level_not_an_object() {
    assert_config_error("[1, 2]", "(top level)", &["an array"]);
}

#[test]
fn wrong_type_for_key() {
    assert_config_error(
        r#"{"in_channels": 3, "layers_per_block": "two"}"#,
        "layers_per_block",
        &["\"two\"", "line 1"],
    );
}

#[test]
fn unknown_block_type() {
    assert_config_error(
        r#"{"down_block_types": ["DownBlock2D", "SkipDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]}"#,
        "down_block_types",
        &["SkipDownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    );
    assert_config_error(
        r#"{"up_block_types": ["CrossAttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}"#,
        "up_block_types",
        &["CrossAttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"],
    );
}

#[test]
fn mismatched_list_lengths() {
    assert_config_error(
        r#"{"block_out_channels": [64, 128, 256]}"#,
        "down_block_types",
        &["4 entries", "[64, 128, 256]", "has 3"],
    );
    assert_config_error(
        r#"{"block_out_channels": [64, 128], "down_block_types": ["DownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D"]}"#,
        "up_block_types",
        &["1 entries", "2"],
    );
}

#[test]
fn empty_block_out_channels() {
    assert_config_error(
        r#"{"block_out_channels": [], "down_block_types": [], "up_block_types": []}"#,
        "block_out_channels",
        &["empty"],
    );
}

#[test]
fn norm_groups_not_dividing_channels() {
    assert_config_error(
        r#"{"block_out_channels": [64, 48], "down_block_types": ["DownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
        "norm_num_groups",
        &["32", "block_out_channels[1] = 48"],
    );
    assert_config_error(
        r#"{"attn_norm_num_groups": 5}"#,
        "attn_norm_num_groups",
        &["5", "896"],
    );
}

#[test]
fn bad_norm_eps() {
    assert_config_error(
        r#"{"norm_eps": 0}"#,
        "norm_eps",
        &["is 0", "greater than 0"],
    );
    assert_config_error(r#"{"norm_eps": -1e-5}"#, "norm_eps", &["-0.00001"]);
}

#[test]
fn attention_head_dim_must_divide_attention_channels() {
    assert_config_error(
        r#"{"attention_head_dim": 48}"#,
        "attention_head_dim",
        &["48", "448", "down block 1"],
    );
    // Only blocks with attention count: 48 divides no block here, but none has attention.
    UNet2DConfig::from_json_str(
        r#"{"attention_head_dim": 48, "down_block_types": ["DownBlock2D","DownBlock2D","DownBlock2D","DownBlock2D"],
            "up_block_types": ["UpBlock2D","UpBlock2D","UpBlock2D","UpBlock2D"], "add_attention": false}"#,
        Path::new("ok.json"),
    )
    .unwrap();
}

#[test]
fn unsupported_settings_name_key_and_value() {
    assert_config_error(r#"{"layers_per_block": 0}"#, "layers_per_block", &["is 0"]);
    assert_config_error(r#"{"in_channels": 0}"#, "in_channels", &["is 0"]);
    assert_config_error(r#"{"out_channels": 0}"#, "out_channels", &["is 0"]);
    assert_config_error(
        r#"{"time_embedding_type": "fourier"}"#,
        "time_embedding_type",
        &["\"fourier\"", "positional"],
    );
    assert_config_error(r#"{"act_fn": "gelu"}"#, "act_fn", &["\"gelu\"", "silu"]);
    assert_config_error(
        r#"{"resnet_time_scale_shift": "scale_shift"}"#,
        "resnet_time_scale_shift",
        &["\"scale_shift\"", "default"],
    );
    assert_config_error(
        r#"{"downsample_type": "resnet"}"#,
        "downsample_type",
        &["\"resnet\"", "conv"],
    );
    assert_config_error(
        r#"{"upsample_type": "resnet"}"#,
        "upsample_type",
        &["\"resnet\"", "conv"],
    );
    assert_config_error(
        r#"{"mid_block_type": "UNetMidBlock2DCrossAttn"}"#,
        "mid_block_type",
        &["\"UNetMidBlock2DCrossAttn\"", "UNetMidBlock2D", "null"],
    );
    assert_config_error(
        r#"{"class_embed_type": "timestep"}"#,
        "class_embed_type",
        &["\"timestep\"", "num_class_embeds"],
    );
    assert_config_error(r#"{"num_class_embeds": 0}"#, "num_class_embeds", &["is 0"]);
    assert_config_error(
        r#"{"block_out_channels": [33, 66], "norm_num_groups": 1, "attention_head_dim": null,
            "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
        "block_out_channels",
        &["33", "even"],
    );
    assert_config_error(r#"{"downsample_padding": 2}"#, "downsample_padding", &["2"]);
}

#[test]
fn resolution_checks() {
    // Three blocks: two downsamplings, factor 4.
    let c = UNet2DConfig::from_json_str(
        r#"{"block_out_channels": [32, 64, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "sample_size": 28}"#,
        Path::new("r.json"),
    )
    .unwrap();
    assert_eq!(c.num_downsamples(), 2);
    c.check_resolution(28, 28).unwrap();
    c.check_resolution(4, 64).unwrap();
    let err = c.check_resolution(30, 28).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Resolution {
                height: 30,
                width: 28,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("30x28"), "{msg}");
    assert!(msg.contains("multiple of 4"), "{msg}");
    assert!(msg.contains("28 or 32"), "{msg}");
    assert!(!msg.contains("width 28"), "{msg}");
    let err = c.check_resolution(0, 2).unwrap_err().to_string();
    assert!(err.contains("height 0") && err.contains("width 2"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// safetensors weights

#[test]
fn missing_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    let err = Weights::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
}

#[test]
fn empty_weights_file() {
    assert_safetensors_error(|p| std::fs::write(p, b"").unwrap(), &["0 bytes", "8 byte"]);
    assert_safetensors_error(|p| std::fs::write(p, b"\x05\0\0").unwrap(), &["3 bytes"]);
}

#[test]
fn file_shorter_than_header_length() {
    assert_safetensors_error(
        |p| {
            let mut bytes = 1000u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{\"a\":");
            std::fs::write(p, bytes).unwrap();
        },
        &["1000", "only 5 bytes"],
    );
    // A length prefix near u64::MAX must not overflow.
    assert_safetensors_error(
        |p| std::fs::write(p, u64::MAX.to_le_bytes()).unwrap(),
        &["18446744073709551615"],
    );
}

#[test]
fn offsets_past_end_truncated_data() {
    assert_safetensors_error(
        |p| {
            write_raw(
                p,
                r#"{"conv_in.weight":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#,
                &[0u8; 3000],
            )
        },
        &[
            "\"conv_in.weight\"",
            "[0, 4096]",
            "3000 byte data section",
            "truncated",
        ],
    );
}

#[test]
fn reversed_offsets() {
    assert_safetensors_error(
        |p| {
            write_raw(
                p,
                r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
                &[0u8; 8],
            )
        },
        &["\"w\"", "[8, 4]", "reversed"],
    );
}

#[test]
fn numel_bytes_mismatch() {
    assert_safetensors_error(
        |p| {
            write_raw(
                p,
                r#"{"conv.bias":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
                &[0u8; 20],
            )
        },
        &[
            "\"conv.bias\"",
            "[2, 3]",
            "6 element",
            "24 bytes",
            "span 20 bytes",
        ],
    );
}

#[test]
fn overlapping_tensors() {
    assert_safetensors_error(
        |p| {
            write_raw(
                p,
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                &[0u8; 24],
            )
        },
        &["\"a\"", "\"b\"", "overlap", "[8, 24]"],
    );
}

#[test]
fn non_json_header() {
    assert_safetensors_error(
        |p| write_raw(p, "this is not json", &[]),
        &["not valid JSON"],
    );
    assert_safetensors_error(|p| write_raw(p, "\u{0}\u{ff}", &[]), &["not valid JSON"]);
    assert_safetensors_error(
        |p| {
            let mut bytes = 2u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(&[0xff, 0xfe]);
            std::fs::write(p, bytes).unwrap();
        },
        &["not UTF-8"],
    );
    assert_safetensors_error(|p| write_raw(p, "[1,2]", &[]), &["not an object"]);
    assert_safetensors_error(
        |p| write_raw(p, r#"{"x":{"dtype":"F32","shape":[1]}}"#, &[0u8; 4]),
        &["\"x\"", "data_offsets"],
    );
}

#[test]
fn garbage_bytes_never_panic() {
    // A crude fuzz: every prefix of a valid file, and byte flips in it, must error or load, not panic.
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_safetensors(
        &path,
        &[
            f32_tensor("a.weight", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            f32_tensor("b", &[1], &[5.0]),
        ],
    );
    let good = std::fs::read(&path).unwrap();
    for cut in 0..good.len() {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(
            Weights::open(&path).is_err(),
            "prefix of {cut} bytes should not load"
        );
    }
    for i in 0..good.len() {
        let mut bytes = good.clone();
        bytes[i] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(w) = Weights::open(&path) {
            for key in w.keys().map(str::to_owned).collect::<Vec<_>>() {
                let shape = w.shape_of(&key).unwrap().to_vec();
                let _ = w.get(&key, &shape);
            }
        }
    }
}

#[test]
fn valid_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_safetensors(
        &path,
        &[
            f32_tensor("conv_in.weight", &[2, 1, 1, 2], &[1.0, -2.0, 3.5, 0.25]),
            f32_tensor("conv_in.bias", &[2], &[7.0, 8.0]),
        ],
    );
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.path(), path);
    assert_eq!(w.len(), 2);
    assert!(!w.is_empty());
    assert_eq!(w.total_bytes(), 24);
    assert!(w.contains("conv_in.bias"));
    assert!(!w.contains("__metadata__"));
    assert_eq!(
        w.keys().collect::<Vec<_>>(),
        vec!["conv_in.bias", "conv_in.weight"]
    );
    assert_eq!(w.dtype_of("conv_in.weight"), Some("F32"));
    assert_eq!(w.dtype_of("nope"), None);
    assert_eq!(
        w.get("conv_in.weight", &[2, 1, 1, 2]).unwrap(),
        vec![1.0, -2.0, 3.5, 0.25]
    );
    assert_eq!(w.get("conv_in.bias", &[2]).unwrap(), vec![7.0, 8.0]);
    w.finish().unwrap();
}

#[test]
fn missing_tensor_with_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_safetensors(
        &path,
        &[
            f32_tensor("down_blocks.0.resnets.0.conv1.weight", &[1], &[0.0]),
            f32_tensor("down_blocks.0.resnets.0.conv1.bias", &[1], &[0.0]),
            f32_tensor("down_blocks.0.resnets.0.conv2.weight", &[1], &[0.0]),
            f32_tensor("time_embedding.linear_1.weight", &[1], &[0.0]),
            f32_tensor("conv_out.weight", &[1], &[0.0]),
        ],
    );
    let w = Weights::open(&path).unwrap();
    let err = w
        .get("down_blocks.0.resnets.0.norm1.weight", &[1])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::MissingTensor { key, .. } if key == "down_blocks.0.resnets.0.norm1.weight"),
        "{err:?}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("\"down_blocks.0.resnets.0.norm1.weight\""),
        "{msg}"
    );
    assert!(msg.contains("similar keys in the file"), "{msg}");
    assert!(
        msg.contains("down_blocks.0.resnets.0.conv1.weight"),
        "{msg}"
    );
    assert!(
        !msg.contains("conv_out.weight"),
        "only the 3 closest keys: {msg}"
    );
}

#[test]
fn wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_safetensors(&path, &[f32_tensor("conv_in.weight", &[2, 3], &[0.0; 6])]);
    let w = Weights::open(&path).unwrap();
    let err = w.get("conv_in.weight", &[3, 2]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::ShapeMismatch { expected, found, .. } if expected == &[3, 2] && found == &[2, 3]),
        "{err:?}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("\"conv_in.weight\""), "{msg}");
    assert!(
        msg.contains("[2, 3]") && msg.contains("expected [3, 2]"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    let t = T {
        key: "class_embedding.weight",
        dtype: "I64",
        shape: vec![2],
        data: [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    write_safetensors(&path, &[t]);
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.dtype_of("class_embedding.weight"), Some("I64"));
    let err = w.get("class_embedding.weight", &[2]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::UnsupportedDtype { dtype, .. } if dtype == "I64"),
        "{err:?}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("\"class_embedding.weight\"") && msg.contains("I64"),
        "{msg}"
    );
}

#[test]
fn unused_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_safetensors(
        &path,
        &[
            f32_tensor("used", &[1], &[1.0]),
            f32_tensor("extra.weight", &[1], &[2.0]),
        ],
    );
    let w = Weights::open(&path).unwrap();
    w.get("used", &[1]).unwrap();
    let err = w.finish().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::UnusedTensors { count: 1, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("\"extra.weight\""), "{msg}");
    assert!(!msg.contains("\"used\""), "{msg}");
}

#[test]
fn unused_tensors_list_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    let keys: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let tensors: Vec<T> = keys.iter().map(|k| f32_tensor(k, &[1], &[0.0])).collect();
    write_safetensors(&path, &tensors);
    let w = Weights::open(&path).unwrap();
    let msg = w.finish().unwrap_err().to_string();
    assert!(msg.contains("12 tensor(s)"), "{msg}");
    assert!(
        msg.contains("\"t09\"") && !msg.contains("\"t10\"") && msg.contains('…'),
        "{msg}"
    );
}

#[test]
fn legacy_attention_names_through_get_any() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_safetensors(
        &path,
        &[
            f32_tensor("mid_block.attentions.0.query.weight", &[1, 1], &[0.5]),
            f32_tensor("mid_block.attentions.0.proj_attn.weight", &[1, 1], &[1.5]),
        ],
    );
    let w = Weights::open(&path).unwrap();
    let q = w
        .get_any(
            &[
                "mid_block.attentions.0.to_q.weight",
                "mid_block.attentions.0.query.weight",
            ],
            &[1, 1],
        )
        .unwrap();
    assert_eq!(q, vec![0.5]);
    let o = w
        .get_any(
            &[
                "mid_block.attentions.0.to_out.0.weight",
                "mid_block.attentions.0.proj_attn.weight",
            ],
            &[1, 1],
        )
        .unwrap();
    assert_eq!(o, vec![1.5]);
    w.finish().unwrap();

    let err = w
        .get_any(
            &[
                "mid_block.attentions.0.to_k.weight",
                "mid_block.attentions.0.key.weight",
            ],
            &[1, 1],
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::MissingTensor { key, .. } if key == "mid_block.attentions.0.to_k.weight"),
        "{err:?}"
    );
    assert!(
        msg.contains("also tried: \"mid_block.attentions.0.key.weight\""),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn f16_and_bf16_convert_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    // f16: 1.5 = 0x3E00, -2.25 = 0xC080, 65504 = 0x7BFF, 2^-24 (smallest subnormal) = 0x0001.
    let f16_bits: [u16; 4] = [0x3E00, 0xC080, 0x7BFF, 0x0001];
    // bf16: 3.140625 = 0x4049, -1.0 = 0xBF80.
    let bf16_bits: [u16; 2] = [0x4049, 0xBF80];
    write_safetensors(
        &path,
        &[
            T {
                key: "h",
                dtype: "F16",
                shape: vec![4],
                data: f16_bits.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
            T {
                key: "b",
                dtype: "BF16",
                shape: vec![2],
                data: bf16_bits.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        ],
    );
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.dtype_of("h"), Some("F16"));
    assert_eq!(w.total_bytes(), 12);
    assert_eq!(
        w.get("h", &[4]).unwrap(),
        vec![1.5, -2.25, 65504.0, 2f32.powi(-24)]
    );
    assert_eq!(w.get("b", &[2]).unwrap(), vec![3.140625, -1.0]);
    w.finish().unwrap();
}

#[test]
fn no_tensors_file_is_valid_but_hints_emptiness() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(&dir);
    write_raw(&path, r#"{"__metadata__":{"format":"pt"}}"#, &[]);
    let w = Weights::open(&path).unwrap();
    assert!(w.is_empty());
    let msg = w.get("x", &[1]).unwrap_err().to_string();
    assert!(msg.contains("holds no tensors"), "{msg}");
    w.finish().unwrap();
}
