//! `UNet2DConfig`: the typed, validated twin of a diffusers `UNet2DModel` config.json
//! (follows diffusers 0.42 `models/unets/unet_2d.py`, `UNet2DModel.__init__` and its defaults).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// A down block type from `down_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DownBlock {
    /// `"DownBlock2D"`: resnets then a downsampler.
    #[serde(rename = "DownBlock2D")]
    Down,
    /// `"AttnDownBlock2D"`: resnets each followed by self-attention, then a downsampler.
    #[serde(rename = "AttnDownBlock2D")]
    AttnDown,
}

impl DownBlock {
    /// The diffusers name of this block type.
    pub fn diffusers_name(self) -> &'static str {
        match self {
            DownBlock::Down => "DownBlock2D",
            DownBlock::AttnDown => "AttnDownBlock2D",
        }
    }

    /// Whether the block contains self-attention layers.
    pub fn has_attention(self) -> bool {
        matches!(self, DownBlock::AttnDown)
    }
}

/// An up block type from `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpBlock {
    /// `"UpBlock2D"`: resnets (over concatenated skips) then an upsampler.
    #[serde(rename = "UpBlock2D")]
    Up,
    /// `"AttnUpBlock2D"`: resnets each followed by self-attention, then an upsampler.
    #[serde(rename = "AttnUpBlock2D")]
    AttnUp,
}

impl UpBlock {
    /// The diffusers name of this block type.
    pub fn diffusers_name(self) -> &'static str {
        match self {
            UpBlock::Up => "UpBlock2D",
            UpBlock::AttnUp => "AttnUpBlock2D",
        }
    }

    /// Whether the block contains self-attention layers.
    pub fn has_attention(self) -> bool {
        matches!(self, UpBlock::AttnUp)
    }
}

/// `sample_size`: diffusers accepts an int (square) or a `[height, width]` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square `sample_size: N`.
    Square(usize),
    /// `sample_size: [H, W]`.
    Rect([usize; 2]),
}

/// The supported down block type names, for messages.
const DOWN_BLOCK_NAMES: &str = "\"DownBlock2D\", \"AttnDownBlock2D\"";
/// The supported up block type names, for messages.
const UP_BLOCK_NAMES: &str = "\"UpBlock2D\", \"AttnUpBlock2D\"";
/// The only mid block type diffusers' `UNet2DModel` builds.
const MID_BLOCK_NAME: &str = "UNetMidBlock2D";

/// diffusers `UNet2DModel` config.json. Field names and defaults match `UNet2DModel.__init__`;
/// unknown keys (`_class_name`, `_diffusers_version`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UNet2DConfig {
    /// Default sample resolution, if the checkpoint records one.
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    /// Whether the input is mapped `x -> 2x - 1` before `conv_in`.
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_time_embedding_type")]
    pub time_embedding_type: String,
    /// Overrides the time embedding width (default `4 * block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// `downscale_freq_shift` of the sinusoidal timestep embedding (JSON int or float).
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<DownBlock>,
    /// `None` (JSON `null`) means the model has no mid block.
    #[serde(default = "default_mid_block_type", deserialize_with = "nullable")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<UpBlock>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    /// `output_scale_factor` of the mid block's resnets.
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f64,
    /// Padding of the downsampling convolutions (0 means diffusers' asymmetric `(0, 1, 0, 1)` pad).
    #[serde(default = "default_downsample_padding")]
    pub downsample_padding: usize,
    #[serde(default = "default_conv")]
    pub downsample_type: String,
    #[serde(default = "default_conv")]
    pub upsample_type: String,
    /// Training-only; ignored at inference.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    /// Absent means diffusers' default of 8; JSON `null` (`None`) means one head spanning all
    /// channels of each attention layer.
    #[serde(default = "default_attention_head_dim", deserialize_with = "nullable")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    /// Group count of the mid block's attention GroupNorm (diffusers passes it only to the mid
    /// block); `None` means `norm_num_groups`.
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_resnet_time_scale_shift")]
    pub resnet_time_scale_shift: String,
    /// Whether the mid block has its self-attention layer.
    #[serde(default = "default_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// With `class_embed_type: null`, a class-label lookup table of this many rows.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
    /// The file this config was read from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_channels() -> usize {
    3
}
fn default_time_embedding_type() -> String {
    "positional".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_down_block_types() -> Vec<DownBlock> {
    vec![
        DownBlock::Down,
        DownBlock::AttnDown,
        DownBlock::AttnDown,
        DownBlock::AttnDown,
    ]
}
fn default_mid_block_type() -> Option<String> {
    Some(MID_BLOCK_NAME.to_owned())
}
fn default_up_block_types() -> Vec<UpBlock> {
    vec![
        UpBlock::AttnUp,
        UpBlock::AttnUp,
        UpBlock::AttnUp,
        UpBlock::Up,
    ]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn default_layers_per_block() -> usize {
    2
}
fn default_one() -> f64 {
    1.0
}
fn default_downsample_padding() -> usize {
    1
}
fn default_conv() -> String {
    "conv".to_owned()
}
fn default_act_fn() -> String {
    "silu".to_owned()
}
fn default_attention_head_dim() -> Option<usize> {
    Some(8)
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_resnet_time_scale_shift() -> String {
    "default".to_owned()
}

/// Deserializes a present key as `Option<T>` (JSON `null` ⇒ `None`), so that together with a
/// `default` attribute an absent key keeps its non-`None` default.
fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

impl UNet2DConfig {
    /// Reads and validates a diffusers `UNet2DModel` config.json.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingFile {
                    path: path.to_path_buf(),
                    what: "config.json (the diffusers UNet2DModel config)".to_owned(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let text = String::from_utf8(bytes).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            key: "(file)".to_owned(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates config JSON held in memory; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let config_err = |key: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        // Syntax first, so its message carries the line and column of the fault.
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| config_err("(JSON syntax)", format!("invalid JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(config_err(
                "(top level)",
                format!(
                    "expected a JSON object of UNet2DModel settings, found {}",
                    json_kind(&value)
                ),
            ));
        };
        let mut config: UNet2DConfig = match serde_json::from_str(text) {
            Ok(config) => config,
            Err(e) => {
                // serde_json names no field for type errors; find the key whose value alone fails
                // (every other field has a default, so a one-key object isolates it).
                let key = object
                    .iter()
                    .find(|(k, v)| {
                        let mut single = serde_json::Map::new();
                        single.insert((*k).clone(), (*v).clone());
                        serde_json::from_value::<UNet2DConfig>(serde_json::Value::Object(single))
                            .is_err()
                    })
                    .map(|(k, v)| (k.clone(), abbreviate(v.to_string())));
                return Err(match key {
                    Some((key, value)) => {
                        let hint = supported_hint(&key);
                        config_err(&key, format!("bad value {value}: {e}{hint}"))
                    }
                    None => {
                        // e.g. "duplicate field `x`": serde names the field between backticks.
                        let msg = e.to_string();
                        let named = msg.split('`').nth(1).unwrap_or("(unknown key)").to_owned();
                        config_err(&named, msg)
                    }
                });
            }
        };
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting the GPU model relies on; errors name the key, the offending value and
    /// what is supported.
    pub fn validate(&self) -> Result<()> {
        let err = |key: &str, message: String| {
            Err(Error::Config {
                path: self.source.clone(),
                key: key.to_owned(),
                message,
            })
        };
        let n = self.block_out_channels.len();
        if n == 0 {
            return err(
                "block_out_channels",
                "is empty; at least one block is required".to_owned(),
            );
        }
        if self.down_block_types.len() != n {
            return err(
                "down_block_types",
                format!(
                    "has {} entries but block_out_channels {:?} has {n}; they must have the same length",
                    self.down_block_types.len(),
                    self.block_out_channels
                ),
            );
        }
        if self.up_block_types.len() != n {
            return err(
                "up_block_types",
                format!(
                    "has {} entries but down_block_types and block_out_channels have {n}; \
                     they must have the same length",
                    self.up_block_types.len()
                ),
            );
        }
        if self.in_channels == 0 {
            return err("in_channels", "is 0; must be at least 1".to_owned());
        }
        if self.out_channels == 0 {
            return err("out_channels", "is 0; must be at least 1".to_owned());
        }
        if self.layers_per_block == 0 {
            return err("layers_per_block", "is 0; must be at least 1".to_owned());
        }
        if self.norm_num_groups == 0 {
            return err("norm_num_groups", "is 0; must be at least 1".to_owned());
        }
        if let Some((i, &c)) = self
            .block_out_channels
            .iter()
            .enumerate()
            .find(|(_, &c)| c == 0)
        {
            return err(
                "block_out_channels",
                format!("entry {i} is {c}; channel counts must be at least 1"),
            );
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
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
        let c_last = self.block_out_channels[n - 1];
        if let Some(g) = self.attn_norm_num_groups {
            if g == 0 || !c_last.is_multiple_of(g) {
                return err(
                    "attn_norm_num_groups",
                    format!(
                        "{g} does not divide the mid block's {c_last} channels \
                         (block_out_channels[{}]); it must be a positive divisor",
                        n - 1
                    ),
                );
            }
        }
        if !self.norm_eps.is_finite() || self.norm_eps <= 0.0 {
            return err(
                "norm_eps",
                format!(
                    "is {}; must be a finite number greater than 0 (e.g. 1e-5)",
                    self.norm_eps
                ),
            );
        }
        if !self.freq_shift.is_finite() {
            return err(
                "freq_shift",
                format!("is {}; must be finite", self.freq_shift),
            );
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return err(
                "mid_block_scale_factor",
                format!(
                    "is {}; must be finite and nonzero",
                    self.mid_block_scale_factor
                ),
            );
        }
        if self.time_embedding_type != "positional" {
            return err(
                "time_embedding_type",
                format!(
                    "{:?} is not supported; only \"positional\" (sinusoidal) is",
                    self.time_embedding_type
                ),
            );
        }
        if !self.block_out_channels[0].is_multiple_of(2) {
            return err(
                "block_out_channels",
                format!(
                    "block_out_channels[0] = {} is odd; the sinusoidal timestep embedding has \
                     block_out_channels[0] channels and needs an even count",
                    self.block_out_channels[0]
                ),
            );
        }
        if self.time_embedding_dim == Some(0) {
            return err(
                "time_embedding_dim",
                "is 0; must be at least 1 (or null)".to_owned(),
            );
        }
        if self.act_fn != "silu" {
            return err(
                "act_fn",
                format!("{:?} is not supported; only \"silu\" is", self.act_fn),
            );
        }
        if self.resnet_time_scale_shift != "default" {
            return err(
                "resnet_time_scale_shift",
                format!(
                    "{:?} is not supported; only \"default\" (additive time embedding) is",
                    self.resnet_time_scale_shift
                ),
            );
        }
        if self.downsample_type != "conv" {
            return err(
                "downsample_type",
                format!(
                    "{:?} is not supported; only \"conv\" is",
                    self.downsample_type
                ),
            );
        }
        if self.upsample_type != "conv" {
            return err(
                "upsample_type",
                format!(
                    "{:?} is not supported; only \"conv\" is",
                    self.upsample_type
                ),
            );
        }
        if self.downsample_padding > 1 {
            return err(
                "downsample_padding",
                format!(
                    "{} is not supported; only 0 (asymmetric pad) and 1 keep the 2x downsampling exact",
                    self.downsample_padding
                ),
            );
        }
        if let Some(mid) = &self.mid_block_type {
            if mid != MID_BLOCK_NAME {
                return err(
                    "mid_block_type",
                    format!("{mid:?} is not supported; only \"{MID_BLOCK_NAME}\" or null (no mid block) are"),
                );
            }
        }
        if let Some(kind) = &self.class_embed_type {
            return err(
                "class_embed_type",
                format!(
                    "{kind:?} is not supported; only null is (class conditioning through a \
                     num_class_embeds lookup table)"
                ),
            );
        }
        if self.num_class_embeds == Some(0) {
            return err(
                "num_class_embeds",
                "is 0; must be at least 1 (or null for no classes)".to_owned(),
            );
        }
        if self.attention_head_dim == Some(0) {
            return err(
                "attention_head_dim",
                "is 0; must be at least 1 (or null for one head)".to_owned(),
            );
        }
        if let Some(d) = self.attention_head_dim {
            let mut attn_channels: Vec<(String, usize)> = Vec::new();
            for (i, block) in self.down_block_types.iter().enumerate() {
                if block.has_attention() {
                    attn_channels.push((format!("down block {i}"), self.block_out_channels[i]));
                }
            }
            if self.mid_block_type.is_some() && self.add_attention {
                attn_channels.push(("the mid block".to_owned(), c_last));
            }
            for (i, block) in self.up_block_types.iter().enumerate() {
                if block.has_attention() {
                    attn_channels
                        .push((format!("up block {i}"), self.block_out_channels[n - 1 - i]));
                }
            }
            if let Some((which, c)) = attn_channels.iter().find(|(_, c)| !c.is_multiple_of(d)) {
                return err(
                    "attention_head_dim",
                    format!(
                        "{d} does not divide the {c} channels of {which}'s attention; it must divide \
                         every attention block's channel count (or be null for one head)"
                    ),
                );
            }
        }
        Ok(())
    }

    /// Number of attention heads of an attention layer over `channels` channels.
    pub fn num_heads(&self, channels: usize) -> usize {
        match self.attention_head_dim {
            None | Some(0) => 1,
            Some(d) => channels / d,
        }
    }

    /// Width of each attention head of an attention layer over `channels` channels.
    pub fn head_dim(&self, channels: usize) -> usize {
        match self.attention_head_dim {
            None | Some(0) => channels,
            Some(d) => d,
        }
    }

    /// Width of the time embedding MLP output (`time_embedding_dim` or `4 * block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or_else(|| 4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// Group count of the mid block attention's GroupNorm (diffusers passes
    /// `attn_norm_num_groups` only to the mid block; down/up attention use `norm_num_groups`).
    pub fn attn_groups(&self) -> usize {
        self.attn_norm_num_groups.unwrap_or(self.norm_num_groups)
    }

    /// Whether the model has a mid block.
    pub fn has_mid_block(&self) -> bool {
        self.mid_block_type.is_some()
    }

    /// `sample_size` as `(height, width)`, if the config records one.
    pub fn sample_hw(&self) -> Option<(usize, usize)> {
        match self.sample_size? {
            SampleSize::Square(s) => Some((s, s)),
            SampleSize::Rect([h, w]) => Some((h, w)),
        }
    }

    /// The sampling resolution: the requested height / width, else `sample_size`, else 32×32.
    pub fn resolution(&self, height: Option<usize>, width: Option<usize>) -> (usize, usize) {
        let (h, w) = self.sample_hw().unwrap_or((32, 32));
        (height.unwrap_or(h), width.unwrap_or(w))
    }

    /// Number of 2x downsamplings (every down block but the last downsamples).
    pub fn num_downsamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks that a `height x width` sample survives the down path and comes back to the same
    /// size on the up path: both must be positive multiples of `2^num_downsamples()`.
    pub fn check_resolution(&self, height: usize, width: usize) -> Result<()> {
        let downs = self.num_downsamples();
        let factor = u32::try_from(downs)
            .ok()
            .and_then(|d| 1usize.checked_shl(d))
            .unwrap_or(0);
        let why = format!(
            "the model halves the resolution {downs} time(s) (len(block_out_channels) - 1) and doubles \
             it back, so height and width must be positive multiples of {factor}"
        );
        if factor == 0 {
            return Err(Error::Resolution {
                height,
                width,
                message: format!("{downs} downsamplings is more than any resolution can pass"),
            });
        }
        let mut problems = Vec::new();
        for (name, v) in [("height", height), ("width", width)] {
            if v == 0 || !v.is_multiple_of(factor) {
                let below = v / factor * factor;
                let above = below.saturating_add(factor);
                let nearest = if below == 0 {
                    format!("{above}")
                } else {
                    format!("{below} or {above}")
                };
                problems.push(format!(
                    "{name} {v} is not a positive multiple of {factor} (nearest valid: {nearest})"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Resolution {
                height,
                width,
                message: format!("{}; {why}", problems.join("; ")),
            })
        }
    }
}

/// What is supported for a key whose value failed to deserialize, to append to serde's message.
fn supported_hint(key: &str) -> String {
    match key {
        "down_block_types" => format!("; supported down block types: {DOWN_BLOCK_NAMES}"),
        "up_block_types" => format!("; supported up block types: {UP_BLOCK_NAMES}"),
        "sample_size" => "; expected an integer or a [height, width] pair".to_owned(),
        _ => String::new(),
    }
}

/// Cuts a rendered JSON value to at most 80 chars, so a huge array does not flood the message.
fn abbreviate(text: String) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A short name for the kind of a JSON value.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
