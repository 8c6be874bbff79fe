//! `UNet2DConditionConfig`: the typed, validated twin of a diffusers `UNet2DConditionModel`
//! config.json (diffusers 0.42 `models/unets/unet_2d_condition.py`, `__init__` and its defaults,
//! and `get_down_block` / `get_mid_block` / `get_up_block`).
//!
//! Every `__init__` key is read. Keys that select what Stable Diffusion 1.x/2.x and SD-Turbo do
//! not use (class or addition embeddings, `time_cond_proj_dim`, dual cross-attention, GLIGEN
//! attention, …) are accepted at their defaults and rejected by name otherwise. Keys diffusers
//! does not know (and `_class_name`-style metadata) are ignored, as diffusers ignores them.
//!
//! diffusers' naming quirk: in this class `attention_head_dim` is the number of heads of each
//! block's transformer (`num_attention_heads = num_attention_heads or attention_head_dim`), and
//! each head is `channels / heads` wide. diffusers itself refuses a non-null
//! `num_attention_heads`, and so does this reader, with the same reason.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A down block type of `down_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondDownBlock {
    /// `"CrossAttnDownBlock2D"`: resnets each followed by a `Transformer2DModel`.
    CrossAttnDown,
    /// `"DownBlock2D"`: resnets only.
    Down,
}

/// An up block type of `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondUpBlock {
    /// `"CrossAttnUpBlock2D"`.
    CrossAttnUp,
    /// `"UpBlock2D"`.
    Up,
}

/// The settings of one down or up block, resolved from the per-block lists (up blocks read the
/// lists reversed, as diffusers does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSettings {
    /// Whether the block has cross-attention transformers.
    pub cross_attention: bool,
    /// Resnets in the block (`layers_per_block`, + 1 in up blocks).
    pub layers: usize,
    /// Heads of each transformer (diffusers' `attention_head_dim` entry).
    pub heads: usize,
    /// `transformer_layers_per_block` entry.
    pub transformer_layers: usize,
    /// `cross_attention_dim` entry.
    pub cross_attention_dim: usize,
    /// `only_cross_attention` entry.
    pub only_cross_attention: bool,
}

/// diffusers `UNet2DConditionModel` config.json, per-block lists expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct UNet2DConditionConfig {
    pub sample_size: Option<(usize, usize)>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<CondDownBlock>,
    /// `None`: JSON null, no mid block.
    pub has_mid_block: bool,
    pub up_block_types: Vec<CondUpBlock>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    /// Heads per block (the quirk: diffusers' `attention_head_dim`).
    pub attention_head_dim: Vec<usize>,
    pub only_cross_attention: Vec<bool>,
    pub use_linear_projection: bool,
    /// Read; attention runs in f32 regardless.
    pub upcast_attention: bool,
    pub time_embedding_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    /// The file this config was read from, for error messages.
    pub source: PathBuf,
}

/// The keys a `UNet2DConditionModel` accepts that this crate supports only at their default,
/// with that default (JSON) and what the key would enable.
const DEFAULT_ONLY: &[(&str, &str, &str)] = &[
    ("act_fn", "\"silu\"", "another resnet activation"),
    (
        "resnet_time_scale_shift",
        "\"default\"",
        "scale-shift time conditioning",
    ),
    (
        "resnet_skip_time_act",
        "false",
        "skipping the time activation",
    ),
    ("resnet_out_scale_factor", "1.0", "scaled resnet outputs"),
    (
        "time_embedding_type",
        "\"positional\"",
        "Fourier time embeddings",
    ),
    (
        "time_embedding_act_fn",
        "null",
        "an activation after the time embedding",
    ),
    (
        "timestep_post_act",
        "null",
        "an activation inside the time embedding",
    ),
    (
        "time_cond_proj_dim",
        "null",
        "a timestep-condition projection (LCM guidance embedding)",
    ),
    (
        "encoder_hid_dim",
        "null",
        "an encoder hidden-state projection",
    ),
    (
        "encoder_hid_dim_type",
        "null",
        "an encoder hidden-state projection",
    ),
    ("class_embed_type", "null", "class embeddings"),
    ("num_class_embeds", "null", "class embeddings"),
    (
        "addition_embed_type",
        "null",
        "addition embeddings (SDXL text_time)",
    ),
    (
        "addition_time_embed_dim",
        "null",
        "addition time embeddings (SDXL)",
    ),
    (
        "projection_class_embeddings_input_dim",
        "null",
        "projected class embeddings",
    ),
    (
        "class_embeddings_concat",
        "false",
        "concatenated class embeddings",
    ),
    ("dual_cross_attention", "false", "dual cross-attention"),
    ("attention_type", "\"default\"", "gated (GLIGEN) attention"),
    (
        "mid_block_only_cross_attention",
        "null",
        "a mid block attending only to the context",
    ),
    (
        "cross_attention_norm",
        "null",
        "normalised cross-attention context",
    ),
    (
        "reverse_transformer_layers_per_block",
        "null",
        "separate up-block transformer depths",
    ),
];

/// Keys read for their values (the rest of `__init__`'s signature).
const READ: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "dropout",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "attention_head_dim",
    "num_attention_heads",
    "use_linear_projection",
    "upcast_attention",
    "time_embedding_dim",
    "conv_in_kernel",
    "conv_out_kernel",
    "addition_embed_type_num_heads",
];

/// Reads typed values out of the config object, naming the key in every error.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The value, `None` when absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn usize_of(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, found {v}")))
    }

    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => self.usize_of(key, v),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.usize_of(key, v).map(Some),
        }
    }

    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    /// An int applying to every block, or a list of one per block.
    fn per_block_usize(&self, key: &str, default: usize, n: usize) -> Result<Vec<usize>> {
        match self.get(key) {
            None => Ok(vec![default; n]),
            Some(Value::Array(items)) => {
                if items.len() != n {
                    return Err(self.err(
                        key,
                        format!(
                            "has {} entries but there are {n} blocks (len(down_block_types))",
                            items.len()
                        ),
                    ));
                }
                items.iter().map(|v| self.usize_of(key, v)).collect()
            }
            Some(v) => Ok(vec![self.usize_of(key, v)?; n]),
        }
    }

    fn per_block_bool(&self, key: &str, n: usize) -> Result<Vec<bool>> {
        let one = |v: &Value| {
            v.as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}")))
        };
        match self.get(key) {
            None => Ok(vec![false; n]),
            Some(Value::Array(items)) => {
                if items.len() != n {
                    return Err(self.err(
                        key,
                        format!("has {} entries but there are {n} blocks", items.len()),
                    ));
                }
                items.iter().map(one).collect()
            }
            Some(v) => Ok(vec![one(v)?; n]),
        }
    }

    fn strings(&self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        match self.get(key) {
            None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        self.err(key, format!("expected block type names, found {v}"))
                    })
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a list of block types, found {v}"))),
        }
    }
}

impl UNet2DConditionConfig {
    /// Reads and validates `path` (a `unet/config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingFile {
                    path: path.to_path_buf(),
                    what: "config.json (the diffusers UNet2DConditionModel config)".to_owned(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON held in memory; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            key: "(JSON syntax)".to_owned(),
            message: format!("invalid JSON: {e}"),
        })?;
        let Some(map) = value.as_object() else {
            return Err(Error::Config {
                path: path.to_path_buf(),
                key: "(top level)".to_owned(),
                message: "expected a JSON object of UNet2DConditionModel settings".to_owned(),
            });
        };
        let r = Reader { map, path };
        for (key, default, what) in DEFAULT_ONLY {
            if let Some(v) = r.get(key) {
                let want: Value = serde_json::from_str(default).unwrap_or(Value::Null);
                let same = match (v.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => *v == want,
                };
                if !same {
                    return Err(r.err(
                        key,
                        format!(
                            "{v} is not supported ({what}); only {default} (the Stable Diffusion \
                             1.x/2.x setting) is"
                        ),
                    ));
                }
            }
        }
        debug_assert!(READ.iter().all(|k| !DEFAULT_ONLY.iter().any(|d| d.0 == *k)));
        if let Some(v) = r.get("num_attention_heads") {
            if !v.is_null() {
                return Err(r.err(
                    "num_attention_heads",
                    "diffusers' UNet2DConditionModel refuses it too: in this class \
                     `attention_head_dim` holds the number of heads (a naming issue, diffusers \
                     issue #2011); set attention_head_dim and leave num_attention_heads null",
                ));
            }
        }

        let down = r.strings(
            "down_block_types",
            &[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
        )?;
        let down_block_types = down
            .iter()
            .map(|s| match s.as_str() {
                "CrossAttnDownBlock2D" => Ok(CondDownBlock::CrossAttnDown),
                "DownBlock2D" => Ok(CondDownBlock::Down),
                other => Err(r.err(
                    "down_block_types",
                    format!(
                        "\"{other}\" is not supported; supported: \"CrossAttnDownBlock2D\", \
                         \"DownBlock2D\""
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up = r.strings(
            "up_block_types",
            &[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ],
        )?;
        let up_block_types = up
            .iter()
            .map(|s| match s.as_str() {
                "CrossAttnUpBlock2D" => Ok(CondUpBlock::CrossAttnUp),
                "UpBlock2D" => Ok(CondUpBlock::Up),
                other => Err(r.err(
                    "up_block_types",
                    format!(
                        "\"{other}\" is not supported; supported: \"CrossAttnUpBlock2D\", \
                         \"UpBlock2D\""
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let has_mid_block = match r.get("mid_block_type") {
            None => true,
            Some(Value::Null) => false,
            Some(Value::String(s)) if s == "UNetMidBlock2DCrossAttn" => true,
            Some(v) => {
                return Err(r.err(
                    "mid_block_type",
                    format!("{v} is not supported; supported: \"UNetMidBlock2DCrossAttn\" or null"),
                ))
            }
        };
        let block_out_channels = match r.get("block_out_channels") {
            None => vec![320, 640, 1280, 1280],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| r.usize_of("block_out_channels", v))
                .collect::<Result<Vec<_>>>()?,
            Some(v) => {
                return Err(r.err(
                    "block_out_channels",
                    format!("expected a list of channel counts, found {v}"),
                ))
            }
        };
        let n = block_out_channels.len();
        if n == 0 {
            return Err(r.err(
                "block_out_channels",
                "is empty; at least one block is required",
            ));
        }
        for (key, len) in [
            ("down_block_types", down_block_types.len()),
            ("up_block_types", up_block_types.len()),
        ] {
            if len != n {
                return Err(r.err(
                    key,
                    format!("has {len} entries but block_out_channels has {n}; they must agree"),
                ));
            }
        }
        let norm_num_groups = match r.get("norm_num_groups") {
            Some(Value::Null) => {
                return Err(r.err(
                    "norm_num_groups",
                    "null (no output group norm) is not supported; expected a group count",
                ))
            }
            _ => r.usize("norm_num_groups", 32)?,
        };
        if let Some(Value::Array(items)) = r.get("transformer_layers_per_block") {
            if items.iter().any(Value::is_array) {
                return Err(r.err(
                    "transformer_layers_per_block",
                    "nested lists (per-layer depths, SDXL refiner style) are not supported; \
                     expected an int or one int per block",
                ));
            }
        }
        let sample_size = match r.get("sample_size") {
            None | Some(Value::Null) => None,
            Some(Value::Array(hw)) if hw.len() == 2 => Some((
                r.usize_of("sample_size", &hw[0])?,
                r.usize_of("sample_size", &hw[1])?,
            )),
            Some(v) => {
                let s = r.usize_of("sample_size", v)?;
                Some((s, s))
            }
        };
        let config = UNet2DConditionConfig {
            sample_size,
            in_channels: r.usize("in_channels", 4)?,
            out_channels: r.usize("out_channels", 4)?,
            center_input_sample: r.bool("center_input_sample", false)?,
            flip_sin_to_cos: r.bool("flip_sin_to_cos", true)?,
            freq_shift: r.f64("freq_shift", 0.0)?,
            down_block_types,
            has_mid_block,
            up_block_types,
            layers_per_block: r.per_block_usize("layers_per_block", 2, n)?,
            downsample_padding: r.usize("downsample_padding", 1)?,
            mid_block_scale_factor: r.f64("mid_block_scale_factor", 1.0)?,
            norm_num_groups,
            norm_eps: r.f64("norm_eps", 1e-5)?,
            cross_attention_dim: r.per_block_usize("cross_attention_dim", 1280, n)?,
            transformer_layers_per_block: r.per_block_usize(
                "transformer_layers_per_block",
                1,
                n,
            )?,
            attention_head_dim: r.per_block_usize("attention_head_dim", 8, n)?,
            only_cross_attention: r.per_block_bool("only_cross_attention", n)?,
            use_linear_projection: r.bool("use_linear_projection", false)?,
            upcast_attention: r.bool("upcast_attention", false)?,
            time_embedding_dim: r.opt_usize("time_embedding_dim")?,
            conv_in_kernel: r.usize("conv_in_kernel", 3)?,
            conv_out_kernel: r.usize("conv_out_kernel", 3)?,
            block_out_channels,
            source: path.to_path_buf(),
        };
        r.f64("dropout", 0.0)?;
        r.usize("addition_embed_type_num_heads", 64)?;
        config.validate()?;
        Ok(config)
    }

    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.source.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Checks what the blocks rely on: group and head divisibility, odd kernels, one context
    /// width.
    pub fn validate(&self) -> Result<()> {
        let g = self.norm_num_groups;
        if g == 0 {
            return Err(self.err("norm_num_groups", "must be at least 1"));
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || !c.is_multiple_of(g) {
                return Err(self.err(
                    "block_out_channels",
                    format!("block {i} has {c} channels, not a positive multiple of norm_num_groups {g}"),
                ));
            }
            let heads = self.attention_head_dim[i];
            if heads == 0 || !c.is_multiple_of(heads) {
                return Err(self.err(
                    "attention_head_dim",
                    format!(
                        "block {i}: {heads} heads (diffusers' attention_head_dim is the head count \
                         in this class) do not divide its {c} channels"
                    ),
                ));
            }
        }
        for (key, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k.is_multiple_of(2) {
                return Err(self.err(key, format!("{k} is even; expected an odd kernel size")));
            }
        }
        if self.layers_per_block.contains(&0) {
            return Err(self.err("layers_per_block", "every block needs at least one resnet"));
        }
        if self.transformer_layers_per_block.contains(&0) {
            return Err(self.err(
                "transformer_layers_per_block",
                "every transformer needs at least one block",
            ));
        }
        let first = self.cross_attention_dim[0];
        if self
            .cross_attention_dim
            .iter()
            .any(|&d| d != first || d == 0)
        {
            return Err(self.err(
                "cross_attention_dim",
                format!(
                    "{:?}: one text encoder conditions every block, so every entry must be the \
                     same positive width",
                    self.cross_attention_dim
                ),
            ));
        }
        Ok(())
    }

    /// The width of the text embeddings the model attends to.
    pub fn context_dim(&self) -> usize {
        self.cross_attention_dim[0]
    }

    /// Width of the time embedding (`time_embedding_dim` or 4·`block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Settings of down block `i`.
    pub fn down_block(&self, i: usize) -> BlockSettings {
        BlockSettings {
            cross_attention: self.down_block_types[i] == CondDownBlock::CrossAttnDown,
            layers: self.layers_per_block[i],
            heads: self.attention_head_dim[i],
            transformer_layers: self.transformer_layers_per_block[i],
            cross_attention_dim: self.cross_attention_dim[i],
            only_cross_attention: self.only_cross_attention[i],
        }
    }

    /// Settings of up block `i` (the per-block lists reversed; `layers_per_block + 1` resnets).
    pub fn up_block(&self, i: usize) -> BlockSettings {
        let r = self.block_out_channels.len() - 1 - i;
        BlockSettings {
            cross_attention: self.up_block_types[i] == CondUpBlock::CrossAttnUp,
            layers: self.layers_per_block[r] + 1,
            heads: self.attention_head_dim[r],
            transformer_layers: self.transformer_layers_per_block[r],
            cross_attention_dim: self.cross_attention_dim[r],
            only_cross_attention: self.only_cross_attention[r],
        }
    }

    /// Settings of the mid block (the last entry of every list; never only-cross).
    pub fn mid_block(&self) -> BlockSettings {
        let last = self.block_out_channels.len() - 1;
        BlockSettings {
            cross_attention: true,
            layers: 1,
            heads: self.attention_head_dim[last],
            transformer_layers: self.transformer_layers_per_block[last],
            cross_attention_dim: self.cross_attention_dim[last],
            only_cross_attention: false,
        }
    }

    /// Factor between the sample and the smallest activation: `2^(blocks − 1)`.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1).min(16)
    }

    /// Checks the sample size: any positive height and width. Sizes that are not multiples of
    /// [`UNet2DConditionConfig::downscale`] run as diffusers runs them: the stride-2 convolutions
    /// round up, and each up block upsamples to the size of the skip it meets next
    /// (`forward_upsample_size`).
    pub fn check_resolution(&self, height: usize, width: usize) -> Result<()> {
        if height == 0 || width == 0 {
            return Err(Error::Resolution {
                height,
                width,
                message: "height and width must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<UNet2DConditionConfig> {
        UNet2DConditionConfig::from_json_str(json, Path::new("unet/config.json"))
    }

    #[test]
    fn sd15_defaults_and_reversed_up_blocks() {
        let c = parse(r#"{"_class_name": "UNet2DConditionModel", "cross_attention_dim": 768}"#)
            .unwrap();
        assert_eq!(c.block_out_channels, [320, 640, 1280, 1280]);
        assert_eq!(c.down_block(0).heads, 8);
        assert!(c.down_block(0).cross_attention && !c.down_block(3).cross_attention);
        assert!(!c.up_block(0).cross_attention && c.up_block(1).cross_attention);
        assert_eq!(c.up_block(0).layers, 3);
        assert_eq!(c.context_dim(), 768);
        assert_eq!(c.time_embed_dim(), 1280);
    }

    #[test]
    fn per_block_heads_reverse_for_up_blocks() {
        let c = parse(
            r#"{"attention_head_dim": [5, 10, 20, 20], "use_linear_projection": true,
                "cross_attention_dim": 1024}"#,
        )
        .unwrap();
        assert_eq!(c.down_block(0).heads, 5);
        assert_eq!(c.up_block(3).heads, 5);
        assert_eq!(c.up_block(0).heads, 20);
        assert_eq!(c.mid_block().heads, 20);
    }

    #[test]
    fn unsupported_keys_are_named() {
        for (json, key) in [
            (
                r#"{"addition_embed_type": "text_time"}"#,
                "addition_embed_type",
            ),
            (r#"{"time_cond_proj_dim": 256}"#, "time_cond_proj_dim"),
            (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
            (r#"{"dual_cross_attention": true}"#, "dual_cross_attention"),
            (r#"{"num_attention_heads": 8}"#, "num_attention_heads"),
            (
                r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
                "mid_block_type",
            ),
            (
                r#"{"down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
                "down_block_types",
            ),
            (r#"{"attention_head_dim": [8, 8]}"#, "attention_head_dim"),
            (r#"{"attention_head_dim": 7}"#, "attention_head_dim"),
            (
                r#"{"cross_attention_dim": [768, 1024, 768, 768]}"#,
                "cross_attention_dim",
            ),
            (
                r#"{"transformer_layers_per_block": [[1, 2], 1, 1, 1]}"#,
                "transformer_layers_per_block",
            ),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains(key), "{json}: {e}");
        }
    }

    #[test]
    fn defaults_spelled_out_are_accepted() {
        parse(
            r#"{"class_embed_type": null, "dual_cross_attention": false, "resnet_out_scale_factor": 1,
                "mid_block_type": null, "num_attention_heads": null, "upcast_attention": true}"#,
        )
        .unwrap();
    }
}
