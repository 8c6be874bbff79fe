//! The typed, validated twins of a diffusers `AutoencoderKL` and `VQModel` config.json (diffusers
//! 0.42 `models/autoencoders/autoencoder_kl.py` and `vq_model.py`, `__init__` and its defaults).
//! Both share the encoder/decoder shape ([`CoderConfig`]); unsupported values are rejected by
//! name, as `UNet2DConfig` does.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::unet_2d::config::SampleSize;

/// `down_block_types` entry: only `"DownEncoderBlock2D"` (resnets, then a downsampler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DownEncoderBlock {
    #[serde(rename = "DownEncoderBlock2D")]
    DownEncoder,
}

/// `up_block_types` entry: only `"UpDecoderBlock2D"` (resnets, then an upsampler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpDecoderBlock {
    #[serde(rename = "UpDecoderBlock2D")]
    UpDecoder,
}

/// The keys `AutoencoderKL` and `VQModel` share: the shape of the `Encoder` and `Decoder`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CoderConfig {
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<DownEncoderBlock>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<UpDecoderBlock>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    /// The training resolution, if recorded (informational).
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    /// Whether the mid blocks have their self-attention layer.
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    /// A precision hint for half-precision pipelines; ignored (everything runs in f32).
    #[serde(default)]
    pub force_upcast: Option<bool>,
}

/// diffusers `AutoencoderKL` config.json.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(flatten)]
    pub coder: CoderConfig,
    #[serde(default = "default_kl_latent_channels")]
    pub latent_channels: usize,
    /// Latents are `z · scaling_factor` for the denoiser; the caller divides before decoding.
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// Only `null` is supported.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Only `null` is supported.
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    /// Only `null` is supported.
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    /// The file this config was read from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// diffusers `VQModel` config.json.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VQModelConfig {
    #[serde(flatten)]
    pub coder: CoderConfig,
    #[serde(default = "default_vq_latent_channels")]
    pub latent_channels: usize,
    /// Codebook size: `quantize.embedding.weight` is `[num_vq_embeddings, vq_embed_dim]`.
    #[serde(default = "default_num_vq_embeddings")]
    pub num_vq_embeddings: usize,
    /// Width of the codebook vectors; `None` means `latent_channels`.
    #[serde(default)]
    pub vq_embed_dim: Option<usize>,
    /// Absent means 1.0 here, not diffusers' 0.18215: see [`VQModelConfig::scaling_factor`].
    #[serde(default)]
    pub scaling_factor: Option<f64>,
    /// `"group"` only (`"spatial"`, MoVQ's conditioned norm, is not supported).
    #[serde(default = "default_norm_type")]
    pub norm_type: String,
    /// With `force_not_quantize`, diffusers reads the decode input as codebook indices; we
    /// accept the key, and such a decode is rejected by name.
    #[serde(default)]
    pub lookup_from_codebook: bool,
    /// The file this config was read from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_channels() -> usize {
    3
}
fn default_down_block_types() -> Vec<DownEncoderBlock> {
    vec![DownEncoderBlock::DownEncoder]
}
fn default_up_block_types() -> Vec<UpDecoderBlock> {
    vec![UpDecoderBlock::UpDecoder]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_layers_per_block() -> usize {
    1
}
fn default_act_fn() -> String {
    "silu".to_owned()
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_true() -> bool {
    true
}
fn default_kl_latent_channels() -> usize {
    4
}
fn default_vq_latent_channels() -> usize {
    3
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_num_vq_embeddings() -> usize {
    256
}
fn default_norm_type() -> String {
    "group".to_owned()
}

/// The supported block type names, for messages.
const DOWN_BLOCK_NAMES: &str = "\"DownEncoderBlock2D\"";
const UP_BLOCK_NAMES: &str = "\"UpDecoderBlock2D\"";

impl AutoencoderKLConfig {
    /// Reads and validates a diffusers `AutoencoderKL` config.json.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config(path, "AutoencoderKL")?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates config JSON held in memory; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let mut config: Self = parse_config(text, path, "AutoencoderKL")?;
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting the GPU model relies on.
    pub fn validate(&self) -> Result<()> {
        let err = |key: &str, message: String| config_error(&self.source, key, message);
        self.coder.validate(&self.source)?;
        if self.latent_channels == 0 {
            return Err(err(
                "latent_channels",
                "is 0; must be at least 1".to_owned(),
            ));
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            return Err(err(
                "scaling_factor",
                format!("is {}; must be finite and nonzero", self.scaling_factor),
            ));
        }
        if let Some(shift) = self.shift_factor {
            return Err(err(
                "shift_factor",
                format!("{shift} is not supported; only null (no shift) is"),
            ));
        }
        for (key, value) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if value.is_some() {
                return Err(err(
                    key,
                    "is not supported; only null (one scaling_factor for every channel) is"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }
}

impl VQModelConfig {
    /// Reads and validates a diffusers `VQModel` config.json.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config(path, "VQModel")?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates config JSON held in memory; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let mut config: Self = parse_config(text, path, "VQModel")?;
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting the GPU model relies on.
    pub fn validate(&self) -> Result<()> {
        let err = |key: &str, message: String| config_error(&self.source, key, message);
        self.coder.validate(&self.source)?;
        if self.latent_channels == 0 {
            return Err(err(
                "latent_channels",
                "is 0; must be at least 1".to_owned(),
            ));
        }
        if self.num_vq_embeddings == 0 {
            return Err(err(
                "num_vq_embeddings",
                "is 0; the codebook needs at least 1 vector".to_owned(),
            ));
        }
        if self.vq_embed_dim == Some(0) {
            return Err(err(
                "vq_embed_dim",
                "is 0; must be at least 1 (or null for latent_channels)".to_owned(),
            ));
        }
        if let Some(s) = self.scaling_factor {
            if !s.is_finite() || s == 0.0 {
                return Err(err(
                    "scaling_factor",
                    format!("is {s}; must be finite and nonzero (or absent for 1.0)"),
                ));
            }
        }
        if self.norm_type != "group" {
            return Err(err(
                "norm_type",
                format!(
                    "{:?} is not supported; only \"group\" (GroupNorm) is",
                    self.norm_type
                ),
            ));
        }
        Ok(())
    }

    /// Width of the codebook vectors (`vq_embed_dim`, else `latent_channels`).
    pub fn embed_dim(&self) -> usize {
        self.vq_embed_dim.unwrap_or(self.latent_channels)
    }

    /// The latent scale: `scaling_factor` when the config sets it, else **1.0**. diffusers
    /// falls back to its class default 0.18215 when the key is absent, but the VQ checkpoints
    /// that predate the key (CompVis/ldm-celebahq-256's `vqvae`) were trained unscaled: their
    /// `LDMPipeline` output is garbage with 0.18215 and right with 1.
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor.unwrap_or(1.0)
    }
}

impl CoderConfig {
    /// Checks the shared keys; errors name the key, the value and what is supported.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let err = |key: &str, message: String| Err(config_error(source, key, message));
        let n = self.block_out_channels.len();
        if n == 0 {
            return err(
                "block_out_channels",
                "is empty; at least one block is required".to_owned(),
            );
        }
        for (key, len) in [
            ("down_block_types", self.down_block_types.len()),
            ("up_block_types", self.up_block_types.len()),
        ] {
            if len != n {
                return err(
                    key,
                    format!(
                        "has {len} entries but block_out_channels {:?} has {n}; they must have the \
                         same length",
                        self.block_out_channels
                    ),
                );
            }
        }
        for (key, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
        ] {
            if value == 0 {
                return err(key, "is 0; must be at least 1".to_owned());
            }
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 {
                return err(
                    "block_out_channels",
                    format!("entry {i} is 0; channel counts must be at least 1"),
                );
            }
            if !c.is_multiple_of(self.norm_num_groups) {
                return err(
                    "norm_num_groups",
                    format!(
                        "{} does not divide block_out_channels[{i}] = {c}; GroupNorm needs every \
                         block's channel count to be a multiple of the group count",
                        self.norm_num_groups
                    ),
                );
            }
        }
        if self.act_fn != "silu" {
            return err(
                "act_fn",
                format!("{:?} is not supported; only \"silu\" is", self.act_fn),
            );
        }
        Ok(())
    }

    /// Number of 2× down (encoder) or up (decoder) samplings.
    pub fn num_resamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }
}

fn config_error(path: &Path, key: &str, message: String) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        key: key.to_owned(),
        message,
    }
}

/// The text of `path`; a missing file names the class it should describe.
fn read_config(path: &Path, class: &str) -> Result<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                what: format!("config.json (the diffusers {class} config)"),
            })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    String::from_utf8(bytes)
        .map_err(|e| config_error(path, "(file)", format!("not UTF-8 text: {e}")))
}

/// Parses `text` as `T`; a value that fails names its key (serde_json names none for type
/// errors, so the key whose value alone fails in a one-key object is the culprit: every field
/// has a default).
fn parse_config<T: DeserializeOwned>(text: &str, path: &Path, class: &str) -> Result<T> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| config_error(path, "(JSON syntax)", format!("invalid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(config_error(
            path,
            "(top level)",
            format!("expected a JSON object of {class} settings"),
        ));
    };
    match serde_json::from_value::<T>(value.clone()) {
        Ok(config) => Ok(config),
        Err(e) => {
            let key = object.iter().find(|(k, v)| {
                let mut single = serde_json::Map::new();
                single.insert((*k).clone(), (*v).clone());
                serde_json::from_value::<T>(serde_json::Value::Object(single)).is_err()
            });
            Err(match key {
                Some((key, v)) => {
                    let hint = match key.as_str() {
                        "down_block_types" => {
                            format!("; supported down block types: {DOWN_BLOCK_NAMES}")
                        }
                        "up_block_types" => format!("; supported up block types: {UP_BLOCK_NAMES}"),
                        _ => String::new(),
                    };
                    let mut shown = v.to_string();
                    if let Some((cut, _)) = shown.char_indices().nth(80) {
                        shown = format!("{}…", &shown[..cut]);
                    }
                    config_error(path, key, format!("bad value {shown}: {e}{hint}"))
                }
                None => config_error(path, "(unknown key)", e.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kl(text: &str) -> Result<AutoencoderKLConfig> {
        AutoencoderKLConfig::from_json_str(text, Path::new("vae/config.json"))
    }

    fn vq(text: &str) -> Result<VQModelConfig> {
        VQModelConfig::from_json_str(text, Path::new("vqvae/config.json"))
    }

    #[test]
    fn defaults_are_diffusers() {
        let c = kl("{}").unwrap();
        assert_eq!(c.latent_channels, 4);
        assert_eq!(c.scaling_factor, 0.18215);
        assert_eq!(c.coder.block_out_channels, vec![64]);
        assert_eq!(c.coder.layers_per_block, 1);
        assert!(c.use_quant_conv && c.use_post_quant_conv && c.coder.mid_block_add_attention);
        let v = vq("{}").unwrap();
        assert_eq!(v.latent_channels, 3);
        assert_eq!(v.num_vq_embeddings, 256);
        assert_eq!(v.embed_dim(), 3);
        // Absent means 1.0 here (diffusers: 0.18215), present is taken as is.
        assert_eq!(v.scaling_factor(), 1.0);
        assert_eq!(
            vq(r#"{"scaling_factor": 0.5}"#).unwrap().scaling_factor(),
            0.5
        );
    }

    #[test]
    fn unsupported_values_are_named() {
        let cases: [(&str, &str); 10] = [
            (
                r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#,
                "down_block_types",
            ),
            (
                r#"{"up_block_types": ["AttnUpDecoderBlock2D"]}"#,
                "up_block_types",
            ),
            (r#"{"act_fn": "gelu"}"#, "act_fn"),
            (r#"{"shift_factor": 0.1159}"#, "shift_factor"),
            (r#"{"latents_mean": [0.1, 0.2, 0.3, 0.4]}"#, "latents_mean"),
            (r#"{"norm_num_groups": 5}"#, "norm_num_groups"),
            (r#"{"block_out_channels": [64, 128]}"#, "down_block_types"),
            (r#"{"latent_channels": 0}"#, "latent_channels"),
            (r#"{"scaling_factor": 0}"#, "scaling_factor"),
            (r#"{"layers_per_block": "two"}"#, "layers_per_block"),
        ];
        for (text, key) in cases {
            let e = kl(text).unwrap_err().to_string();
            assert!(
                e.contains(key) && e.contains("vae/config.json"),
                "{text}: {e}"
            );
        }
        let e = kl(r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AttnDownEncoderBlock2D") && e.contains("DownEncoderBlock2D"),
            "{e}"
        );
        for (text, key) in [
            (r#"{"norm_type": "spatial"}"#, "norm_type"),
            (r#"{"num_vq_embeddings": 0}"#, "num_vq_embeddings"),
            (r#"{"vq_embed_dim": 0}"#, "vq_embed_dim"),
            (r#"{"act_fn": "relu"}"#, "act_fn"),
        ] {
            let e = vq(text).unwrap_err().to_string();
            assert!(
                e.contains(key) && e.contains("vqvae/config.json"),
                "{text}: {e}"
            );
        }
        let e = vq(r#"{"norm_type": "spatial"}"#).unwrap_err().to_string();
        assert!(e.contains("\"spatial\"") && e.contains("\"group\""), "{e}");
    }

    #[test]
    fn ignored_and_optional_keys() {
        let c = vq(
            r#"{"_class_name": "VQModel", "force_upcast": true, "lookup_from_codebook": true,
                      "sample_size": [256, 128], "vq_embed_dim": 5}"#,
        )
        .unwrap();
        assert!(c.lookup_from_codebook);
        assert_eq!(c.embed_dim(), 5);
    }
}
