//! Bench workloads: the exact architectures of google/ddpm-cifar10-32, google/ddpm-celebahq-256,
//! CompVis/ldm-celebahq-256 (U-Net + VQ decoder), Stable Diffusion 1.5 and SD-Turbo (text
//! encoder + U-Net + VAE; their diffusers / transformers `config.json`s) with deterministic
//! random weights (the random [`WeightSource`], loaded by the same module tree as a checkpoint),
//! the bundled model, or any diffusers model or pipeline directory (a latent pipeline's decoder
//! and a text-to-image pipeline's text encoder included).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::autoencoder::config::{AutoencoderKLConfig, VQModelConfig};
use crate::model::autoencoder::{AutoencoderKL, VQModel};
use crate::model::clip_text::CLIPTextConfig;
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::unet_2d::{UNet2DModel, CONFIG_FILE, WEIGHTS_FILE};
use crate::model::unet_2d_condition::UNet2DConditionConfig;
use crate::model::weights::WeightSource;
use crate::sampling::latent::{DecoderConfig, LatentDecoder};
use crate::sampling::UNetConfig;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Preset {
    /// The model shipped in `weights/fashion-ddpm` (trained weights, read from disk).
    #[serde(rename = "bundled")]
    Bundled,
    /// google/ddpm-cifar10-32: 35.7 M parameters, 32×32×3, attention at 16×16.
    #[serde(rename = "cifar10-32")]
    Cifar10_32,
    /// google/ddpm-celebahq-256: 113.7 M parameters, 256×256×3, attention at 16×16.
    #[serde(rename = "celebahq-256")]
    CelebaHq256,
    /// CompVis/ldm-celebahq-256: a 274.1 M-parameter U-Net on 64×64×3 latents (attention at
    /// 32, 16 and 8) and its 55.3 M-parameter VQ decoder to 256×256×3.
    #[serde(rename = "ldm-celebahq-256")]
    LdmCelebaHq256,
    /// Stable Diffusion 1.5 at 512×512: CLIP ViT-L/14 text encoder (123.1 M), the 859.5 M
    /// `UNet2DConditionModel` on 64×64×4 latents, the `AutoencoderKL` (83.7 M, decoder 49.5 M).
    #[serde(rename = "sd15-512")]
    Sd15_512,
    /// SD-Turbo (SD 2.1's architecture) at 512×512: OpenCLIP ViT-H text encoder (23 layers,
    /// 340.4 M), the 865.9 M U-Net with linear projections and per-block heads, the same VAE.
    #[serde(rename = "sd-turbo-512")]
    SdTurbo512,
}

/// google/ddpm-cifar10-32's config.json (the keys it sets; the rest are diffusers' defaults).
pub const CIFAR10_32_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel",
  "act_fn": "silu",
  "attention_head_dim": null,
  "block_out_channels": [128, 256, 256, 256],
  "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
  "downsample_padding": 0,
  "flip_sin_to_cos": false,
  "freq_shift": 1,
  "in_channels": 3,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-06,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 32,
  "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
}"#;

/// google/ddpm-celebahq-256's config.json: six levels 256 → 8, attention only at 16×16 (down
/// block 4, up block 1).
pub const CELEBAHQ_256_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel",
  "act_fn": "silu",
  "attention_head_dim": null,
  "block_out_channels": [128, 128, 256, 256, 512, 512],
  "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 0,
  "flip_sin_to_cos": false,
  "freq_shift": 1,
  "in_channels": 3,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-06,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 256,
  "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]
}"#;

/// CompVis/ldm-celebahq-256's `unet/config.json`: CompVis' `celebahq-ldm-vq-4.yaml` U-Net
/// (`model_channels` 224, `channel_mult` [1, 2, 3, 4], attention at downsampling factors 2, 4, 8,
/// `num_head_channels` 32, 2 res blocks) as diffusers' `UNet2DModel`: 274,056,163 parameters,
/// the 274 M of the LDM paper's CelebA-HQ LDM-4. Its time embedding (cos first, no shift),
/// padded downsampling and GroupNorm eps 1e-5 are diffusers' defaults, spelled out here.
pub const LDM_CELEBAHQ_256_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel",
  "act_fn": "silu",
  "attention_head_dim": 32,
  "block_out_channels": [224, 448, 672, 896],
  "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 3,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 64,
  "time_embedding_type": "positional",
  "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
}"#;

/// CompVis/ldm-celebahq-256's `vqvae/config.json` (a `VQModel`: 55.3 M parameters, 8192 × 3
/// codebook, 64×64×3 latents → 256×256×3, attention only in the mid blocks). The file predates
/// `scaling_factor`, so its latents are unscaled (see `VQModelConfig::scaling_factor`).
pub const LDM_CELEBAHQ_256_VQVAE_CONFIG: &str = r#"{
  "_class_name": "VQModel",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 3,
  "layers_per_block": 2,
  "num_vq_embeddings": 8192,
  "out_channels": 3,
  "sample_size": 256,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

/// Where the bundled model lives, relative to the working directory.
/// runwayml/stable-diffusion-v1-5's `unet/config.json` (the keys it sets).
pub const SD15_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// stabilityai/sd-turbo's `unet/config.json` (SD 2.1's U-Net at 512×512).
pub const SD_TURBO_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": [5, 10, 20, 20],
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "dual_cross_attention": false,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "num_class_embeds": null,
  "only_cross_attention": false,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "use_linear_projection": true
}"#;

/// openai/clip-vit-large-patch14's text config (SD 1.x's `text_encoder/config.json`).
pub const CLIP_VIT_L_TEXT_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "projection_dim": 768,
  "vocab_size": 49408
}"#;

/// OpenCLIP ViT-H/14's text tower as SD 2.x / SD-Turbo ship it (23 of its 24 layers).
pub const OPENCLIP_VIT_H_TEXT_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "hidden_act": "gelu",
  "hidden_size": 1024,
  "intermediate_size": 4096,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "num_attention_heads": 16,
  "num_hidden_layers": 23,
  "projection_dim": 512,
  "vocab_size": 49408
}"#;

/// The Stable Diffusion VAE's `vae/config.json` (SD 1.x, 2.x and SD-Turbo share it).
pub const SD_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

/// Tokens per prompt of the SD presets' text encoders.
pub const SD_TOKENS: usize = 77;

pub const BUNDLED_DIR: &str = "weights/fashion-ddpm";

impl Preset {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Bundled => "bundled",
            Preset::Cifar10_32 => "cifar10-32",
            Preset::CelebaHq256 => "celebahq-256",
            Preset::LdmCelebaHq256 => "ldm-celebahq-256",
            Preset::Sd15_512 => "sd15-512",
            Preset::SdTurbo512 => "sd-turbo-512",
        }
    }

    /// The text encoder's config.json text of a text-to-image preset.
    pub fn text_config_json(self) -> Option<&'static str> {
        match self {
            Preset::Sd15_512 => Some(CLIP_VIT_L_TEXT_CONFIG),
            Preset::SdTurbo512 => Some(OPENCLIP_VIT_H_TEXT_CONFIG),
            _ => None,
        }
    }

    /// The config.json text of a random-weight preset (`None` for the bundled model).
    pub fn config_json(self) -> Option<&'static str> {
        match self {
            Preset::Bundled => None,
            Preset::Cifar10_32 => Some(CIFAR10_32_CONFIG),
            Preset::CelebaHq256 => Some(CELEBAHQ_256_CONFIG),
            Preset::LdmCelebaHq256 => Some(LDM_CELEBAHQ_256_UNET_CONFIG),
            Preset::Sd15_512 => Some(SD15_UNET_CONFIG),
            Preset::SdTurbo512 => Some(SD_TURBO_UNET_CONFIG),
        }
    }

    /// The latent decoder's config.json text of a latent preset (`None`: pixel space).
    pub fn decoder_config_json(self) -> Option<&'static str> {
        match self {
            Preset::LdmCelebaHq256 => Some(LDM_CELEBAHQ_256_VQVAE_CONFIG),
            Preset::Sd15_512 | Preset::SdTurbo512 => Some(SD_VAE_CONFIG),
            _ => None,
        }
    }
}

/// The latent decoder of a workload: its config and weights.
#[derive(Debug)]
pub struct DecoderWorkload {
    pub config: DecoderConfig,
    pub weights: WeightSource,
}

impl DecoderWorkload {
    /// The decoder class, as `model_index.json` names it.
    pub fn class(&self) -> &'static str {
        match self.config {
            DecoderConfig::VQModel(_) => "VQModel",
            DecoderConfig::AutoencoderKL(_) => "AutoencoderKL",
        }
    }

    /// Loads the decoder's weights onto `ctx`.
    pub fn load(&self, ctx: &Arc<GpuContext>) -> Result<LatentDecoder> {
        Ok(match &self.config {
            DecoderConfig::VQModel(c) => {
                LatentDecoder::VQModel(VQModel::from_source(ctx, c.clone(), &self.weights)?)
            }
            DecoderConfig::AutoencoderKL(c) => LatentDecoder::AutoencoderKL(
                AutoencoderKL::from_source(ctx, c.clone(), &self.weights)?,
            ),
        })
    }
}

/// The text encoder of a text-to-image workload.
#[derive(Debug)]
pub struct TextWorkload {
    pub config: CLIPTextConfig,
    pub weights: WeightSource,
    /// Tokens per prompt.
    pub tokens: usize,
}

/// A model ready to load on any adapter: its config and weights (from disk or generated).
#[derive(Debug)]
pub struct Workload {
    /// `cifar10-32`, `celebahq-256`, `bundled`, or the directory given with `--model`.
    pub name: String,
    /// Whether the weights are random (a preset) or a checkpoint's.
    pub random_weights: bool,
    pub config: UNetConfig,
    pub weights: WeightSource,
    /// The model directory (with its scheduler config) when the workload came from disk.
    pub dir: Option<PathBuf>,
    /// A latent workload's decoder (timed after the U-Net); `None` in pixel space.
    pub decoder: Option<DecoderWorkload>,
    /// A text-to-image workload's text encoder (timed too; the U-Net then runs with guidance).
    pub text: Option<TextWorkload>,
}

impl Workload {
    /// The workload of a preset; random weights come from `seed`.
    pub fn preset(preset: Preset, seed: u64) -> Result<Workload> {
        if preset.config_json().is_none() {
            return Workload::bundled();
        }
        let name = preset.name();
        let random = |part: &str| {
            WeightSource::random(
                seed,
                format!("<preset {name}: random weights, seed {seed}>/{part}{WEIGHTS_FILE}"),
            )
        };
        let text = preset.text_config_json().is_some();
        let unet_label = PathBuf::from(format!(
            "<preset {name}>/{}{CONFIG_FILE}",
            if text { "unet/" } else { "" }
        ));
        let config = if text {
            UNetConfig::Text(UNet2DConditionConfig::from_json_str(
                text_json(preset)?,
                &unet_label,
            )?)
        } else {
            UNetConfig::Plain(UNet2DConfig::from_json_str(
                text_json(preset)?,
                &unet_label,
            )?)
        };
        let decoder = match preset.decoder_config_json() {
            Some(json) if text => {
                let label = PathBuf::from(format!("<preset {name}>/vae/{CONFIG_FILE}"));
                Some(DecoderWorkload {
                    config: DecoderConfig::AutoencoderKL(AutoencoderKLConfig::from_json_str(
                        json, &label,
                    )?),
                    weights: random("vae/"),
                })
            }
            Some(json) => {
                let label = PathBuf::from(format!("<preset {name}>/vqvae/{CONFIG_FILE}"));
                Some(DecoderWorkload {
                    config: DecoderConfig::VQModel(VQModelConfig::from_json_str(json, &label)?),
                    weights: random("vqvae/"),
                })
            }
            None => None,
        };
        let text = match preset.text_config_json() {
            Some(json) => {
                let label = PathBuf::from(format!("<preset {name}>/text_encoder/{CONFIG_FILE}"));
                Some(TextWorkload {
                    config: CLIPTextConfig::from_json_str(json, &label)?,
                    weights: random("text_encoder/"),
                    tokens: SD_TOKENS,
                })
            }
            None => None,
        };
        Ok(Workload {
            name: name.to_owned(),
            random_weights: true,
            config,
            weights: random(if text.is_some() { "unet/" } else { "" }),
            dir: None,
            decoder,
            text,
        })
    }

    /// The bundled model: `weights/fashion-ddpm` under the working directory, else under the
    /// crate's source tree. A clear error when its weights have not been exported yet.
    pub fn bundled() -> Result<Workload> {
        let local = PathBuf::from(BUNDLED_DIR);
        let dir = if local.join(WEIGHTS_FILE).is_file() {
            local
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_DIR)
        };
        if !dir.join(WEIGHTS_FILE).is_file() {
            return Err(Error::MissingFile {
                path: dir.join(WEIGHTS_FILE),
                what: "the bundled model's weights (not exported into the repository yet?); \
                       benchmark a random-weight preset instead (--preset cifar10-32 or \
                       --preset celebahq-256) or a checkpoint with --model DIR"
                    .to_owned(),
            });
        }
        let mut w = Workload::dir(&dir)?;
        w.name = "bundled".to_owned();
        Ok(w)
    }

    /// A diffusers model directory (config.json + diffusion_pytorch_model.safetensors), or a
    /// pipeline folder whose `unet/` holds them (and, for a latent pipeline, whose `vqvae/` or
    /// `vae/` holds the decoder).
    pub fn dir(dir: &Path) -> Result<Workload> {
        let layout = crate::sampling::FolderLayout::resolve(dir)?;
        let (config, weights) = if layout.text_conditioned {
            let (c, w) =
                crate::model::unet_2d_condition::UNet2DConditionModel::read_dir(&layout.unet)?;
            (UNetConfig::Text(c), w)
        } else {
            let (c, w) = UNet2DModel::read_dir(&layout.unet)?;
            (UNetConfig::Plain(c), w)
        };
        let decoder = match &layout.decoder {
            Some(part) => Some(DecoderWorkload {
                config: DecoderConfig::read(part, &config)?,
                weights: WeightSource::file(&part.dir.join(WEIGHTS_FILE))?,
            }),
            None => None,
        };
        let text = if layout.text_conditioned {
            let enc = layout.root.join("text_encoder");
            let tokenizer = crate::model::clip_text::tokenizer::ClipTokenizer::from_folder(
                &layout.root.join("tokenizer"),
            )?;
            Some(TextWorkload {
                config: CLIPTextConfig::from_file(&enc.join(CONFIG_FILE))?,
                weights: WeightSource::file(
                    &enc.join(crate::model::clip_text::text_model::WEIGHTS_FILE),
                )?,
                tokens: tokenizer.model_max_length(),
            })
        } else {
            None
        };
        Ok(Workload {
            name: dir.display().to_string(),
            random_weights: false,
            config,
            weights,
            dir: Some(dir.to_path_buf()),
            decoder,
            text,
        })
    }
}

/// The U-Net config text of a random-weight preset.
fn text_json(preset: Preset) -> Result<&'static str> {
    preset
        .config_json()
        .ok_or_else(|| Error::invalid("bench preset", format!("{} has no config", preset.name())))
}
