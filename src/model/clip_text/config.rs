//! `CLIPTextConfig`: the typed, validated twin of a transformers `CLIPTextModel` config.json
//! (`text_encoder/config.json` of a Stable Diffusion pipeline), with transformers 5.24's
//! defaults (`models/clip/configuration_clip.py`). `projection_dim` and the other keys that only
//! the projection head or training use are ignored; values the GPU model cannot run are
//! rejected by name.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::activation::Activation;

/// The text encoder's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CLIPTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// `hidden_act`: `"quick_gelu"` (SD 1.x) or `"gelu"` (SD 2.x, OpenCLIP ViT-H).
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// The file the config came from (messages only).
    pub source: PathBuf,
}

impl Default for CLIPTextConfig {
    /// transformers' `CLIPTextConfig()` defaults.
    fn default() -> Self {
        CLIPTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
            pad_token_id: Some(1),
            source: PathBuf::new(),
        }
    }
}

impl CLIPTextConfig {
    /// Reads and validates `text_encoder/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingFile {
                    path: path.to_path_buf(),
                    what: "config.json (the transformers CLIPTextModel config)".to_owned(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::from_json_str(&text, path)
    }

    /// Parses and validates config JSON held in memory; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |key: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| err("(JSON syntax)", format!("invalid JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(err(
                "(top level)",
                "expected a JSON object of CLIPTextModel settings".to_owned(),
            ));
        };
        // A full CLIPModel config nests the text settings under "text_config".
        let object = match object.get("text_config").and_then(Value::as_object) {
            Some(inner) if !object.contains_key("hidden_act") => inner,
            _ => object,
        };
        let mut config = CLIPTextConfig {
            source: path.to_path_buf(),
            ..CLIPTextConfig::default()
        };
        let size = |key: &str, default: usize| -> Result<usize> {
            match object.get(key) {
                None => Ok(default),
                Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n > 0 => Ok(n),
                    _ => Err(err(
                        key,
                        format!("bad value {v}: expected a positive integer"),
                    )),
                },
            }
        };
        let token = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            match object.get(key) {
                None => Ok(default),
                Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => Ok(Some(n)),
                    None => Err(err(
                        key,
                        format!(
                            "bad value {v}: expected a token id (a non-negative integer) or null"
                        ),
                    )),
                },
            }
        };
        config.vocab_size = size("vocab_size", config.vocab_size)?;
        config.hidden_size = size("hidden_size", config.hidden_size)?;
        config.intermediate_size = size("intermediate_size", config.intermediate_size)?;
        config.num_hidden_layers = size("num_hidden_layers", config.num_hidden_layers)?;
        config.num_attention_heads = size("num_attention_heads", config.num_attention_heads)?;
        config.max_position_embeddings =
            size("max_position_embeddings", config.max_position_embeddings)?;
        config.bos_token_id = token("bos_token_id", config.bos_token_id)?;
        config.eos_token_id = token("eos_token_id", config.eos_token_id)?;
        config.pad_token_id = token("pad_token_id", config.pad_token_id)?;
        if let Some(v) = object.get("hidden_act") {
            config.hidden_act = match v.as_str() {
                Some("quick_gelu") => Activation::QuickGelu,
                Some("gelu") => Activation::Gelu,
                _ => {
                    return Err(err(
                        "hidden_act",
                        format!(
                            "unsupported activation {v}; supported: \"quick_gelu\", \"gelu\" \
                             (the exact erf form)"
                        ),
                    ))
                }
            };
        }
        if let Some(v) = object.get("layer_norm_eps") {
            config.layer_norm_eps = match v.as_f64() {
                Some(eps) if eps.is_finite() && eps >= 0.0 => eps,
                _ => {
                    return Err(err(
                        "layer_norm_eps",
                        format!("bad value {v}: expected a finite non-negative number"),
                    ))
                }
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings the GPU model relies on.
    pub fn validate(&self) -> Result<()> {
        let err = |key: &str, message: String| {
            Err(Error::Config {
                path: self.source.clone(),
                key: key.to_owned(),
                message,
            })
        };
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return err(
                "num_attention_heads",
                format!(
                    "hidden_size {} does not split into {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        for (key, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return err(
                        key,
                        format!(
                            "{id} is outside the vocabulary (vocab_size {})",
                            self.vocab_size
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
