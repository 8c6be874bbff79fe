//! Bench workloads: the exact architectures of google/ddpm-cifar10-32, google/ddpm-celebahq-256
//! and CompVis/ldm-celebahq-256 (U-Net + VQ decoder; their diffusers `config.json`s) with
//! deterministic random weights (the random [`WeightSource`], loaded by the same module tree as a
//! checkpoint), the bundled model, or any diffusers model or pipeline directory (a latent
//! pipeline's decoder included).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::autoencoder::config::VQModelConfig;
use crate::model::autoencoder::{AutoencoderKL, VQModel};
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::unet_2d::{UNet2DModel, CONFIG_FILE, WEIGHTS_FILE};
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
pub const BUNDLED_DIR: &str = "weights/fashion-ddpm";

impl Preset {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Bundled => "bundled",
            Preset::Cifar10_32 => "cifar10-32",
            Preset::CelebaHq256 => "celebahq-256",
            Preset::LdmCelebaHq256 => "ldm-celebahq-256",
        }
    }

    /// The config.json text of a random-weight preset (`None` for the bundled model).
    pub fn config_json(self) -> Option<&'static str> {
        match self {
            Preset::Bundled => None,
            Preset::Cifar10_32 => Some(CIFAR10_32_CONFIG),
            Preset::CelebaHq256 => Some(CELEBAHQ_256_CONFIG),
            Preset::LdmCelebaHq256 => Some(LDM_CELEBAHQ_256_UNET_CONFIG),
        }
    }

    /// The latent decoder's config.json text of a latent preset (`None`: pixel space).
    pub fn decoder_config_json(self) -> Option<&'static str> {
        match self {
            Preset::LdmCelebaHq256 => Some(LDM_CELEBAHQ_256_VQVAE_CONFIG),
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

/// A model ready to load on any adapter: its config and weights (from disk or generated).
#[derive(Debug)]
pub struct Workload {
    /// `cifar10-32`, `celebahq-256`, `bundled`, or the directory given with `--model`.
    pub name: String,
    /// Whether the weights are random (a preset) or a checkpoint's.
    pub random_weights: bool,
    pub config: UNet2DConfig,
    pub weights: WeightSource,
    /// The model directory (with its scheduler config) when the workload came from disk.
    pub dir: Option<PathBuf>,
    /// A latent workload's decoder (timed after the U-Net); `None` in pixel space.
    pub decoder: Option<DecoderWorkload>,
}

impl Workload {
    /// The workload of a preset; random weights come from `seed`.
    pub fn preset(preset: Preset, seed: u64) -> Result<Workload> {
        let Some(text) = preset.config_json() else {
            return Workload::bundled();
        };
        let label = PathBuf::from(format!("<preset {}>/{CONFIG_FILE}", preset.name()));
        let config = UNet2DConfig::from_json_str(text, &label)?;
        let weights = WeightSource::random(
            seed,
            format!(
                "<preset {}: random weights, seed {seed}>/{WEIGHTS_FILE}",
                preset.name()
            ),
        );
        let decoder = match preset.decoder_config_json() {
            Some(text) => {
                let label =
                    PathBuf::from(format!("<preset {}>/vqvae/{CONFIG_FILE}", preset.name()));
                Some(DecoderWorkload {
                    config: DecoderConfig::VQModel(VQModelConfig::from_json_str(text, &label)?),
                    weights: WeightSource::random(
                        seed,
                        format!(
                            "<preset {}: random weights, seed {seed}>/vqvae/{WEIGHTS_FILE}",
                            preset.name()
                        ),
                    ),
                })
            }
            None => None,
        };
        Ok(Workload {
            name: preset.name().to_owned(),
            random_weights: true,
            config,
            weights,
            dir: None,
            decoder,
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
        let (config, weights) = UNet2DModel::read_dir(&layout.unet)?;
        let decoder = match &layout.decoder {
            Some(part) => Some(DecoderWorkload {
                config: DecoderConfig::read(part, &UNetConfig::Plain(config.clone()))?,
                weights: WeightSource::file(&part.dir.join(WEIGHTS_FILE))?,
            }),
            None => None,
        };
        Ok(Workload {
            name: dir.display().to_string(),
            random_weights: false,
            config,
            weights,
            dir: Some(dir.to_path_buf()),
            decoder,
        })
    }
}
