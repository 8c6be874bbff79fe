//! Bench workloads: the exact architectures of google/ddpm-cifar10-32 and google/ddpm-celebahq-256
//! (their diffusers `config.json`s) with deterministic random weights built in memory, the bundled
//! model, or any diffusers model directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::config::{DownBlock, UNet2DConfig, UpBlock};
use crate::model::unet::{CONFIG_FILE, WEIGHTS_FILE};
use crate::model::weights::Weights;

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

/// Where the bundled model lives, relative to the working directory.
pub const BUNDLED_DIR: &str = "weights/fashion-ddpm";

impl Preset {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Bundled => "bundled",
            Preset::Cifar10_32 => "cifar10-32",
            Preset::CelebaHq256 => "celebahq-256",
        }
    }

    /// The config.json text of a random-weight preset (`None` for the bundled model).
    pub fn config_json(self) -> Option<&'static str> {
        match self {
            Preset::Bundled => None,
            Preset::Cifar10_32 => Some(CIFAR10_32_CONFIG),
            Preset::CelebaHq256 => Some(CELEBAHQ_256_CONFIG),
        }
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
    pub weights: Weights,
    /// The model directory (with its scheduler config) when the workload came from disk.
    pub dir: Option<PathBuf>,
}

impl Workload {
    /// The workload of a preset; random weights come from `seed`.
    pub fn preset(preset: Preset, seed: u64) -> Result<Workload> {
        let Some(text) = preset.config_json() else {
            return Workload::bundled();
        };
        let label = PathBuf::from(format!("<preset {}>/{CONFIG_FILE}", preset.name()));
        let config = UNet2DConfig::from_json_str(text, &label)?;
        let weights = random_weights(&config, seed, preset.name())?;
        Ok(Workload {
            name: preset.name().to_owned(),
            random_weights: true,
            config,
            weights,
            dir: None,
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

    /// A diffusers model directory (config.json + diffusion_pytorch_model.safetensors).
    pub fn dir(dir: &Path) -> Result<Workload> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what:
                    "model directory (expected config.json and diffusion_pytorch_model.safetensors)"
                        .into(),
            });
        }
        let config = UNet2DConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = Weights::open(&dir.join(WEIGHTS_FILE))?;
        Ok(Workload {
            name: dir.display().to_string(),
            random_weights: false,
            config,
            weights,
            dir: Some(dir.to_path_buf()),
        })
    }
}

/// How a generated tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    /// Uniform in ±bound: PyTorch's default for conv/linear weights and biases (1/√fan_in).
    Uniform(f32),
    Ones,
    Zeros,
}

/// One tensor the model will ask for.
#[derive(Debug, Clone)]
struct Spec {
    key: String,
    shape: Vec<usize>,
    init: Init,
}

struct Specs(Vec<Spec>);

impl Specs {
    fn conv(&mut self, prefix: &str, cin: usize, cout: usize, k: usize) {
        let bound = 1.0 / ((cin * k * k) as f32).sqrt();
        self.push(
            prefix,
            "weight",
            vec![cout, cin, k, k],
            Init::Uniform(bound),
        );
        self.push(prefix, "bias", vec![cout], Init::Uniform(bound));
    }

    fn linear(&mut self, prefix: &str, fin: usize, fout: usize) {
        let bound = 1.0 / (fin as f32).sqrt();
        self.push(prefix, "weight", vec![fout, fin], Init::Uniform(bound));
        self.push(prefix, "bias", vec![fout], Init::Uniform(bound));
    }

    fn norm(&mut self, prefix: &str, c: usize) {
        self.push(prefix, "weight", vec![c], Init::Ones);
        self.push(prefix, "bias", vec![c], Init::Zeros);
    }

    fn push(&mut self, prefix: &str, name: &str, shape: Vec<usize>, init: Init) {
        self.0.push(Spec {
            key: format!("{prefix}.{name}"),
            shape,
            init,
        });
    }

    fn resnet(&mut self, p: &str, cin: usize, cout: usize, temb: usize) {
        self.norm(&format!("{p}.norm1"), cin);
        self.conv(&format!("{p}.conv1"), cin, cout, 3);
        self.linear(&format!("{p}.time_emb_proj"), temb, cout);
        self.norm(&format!("{p}.norm2"), cout);
        self.conv(&format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{p}.conv_shortcut"), cin, cout, 1);
        }
    }

    fn attention(&mut self, p: &str, c: usize) {
        self.norm(&format!("{p}.group_norm"), c);
        for name in ["to_q", "to_k", "to_v", "to_out.0"] {
            self.linear(&format!("{p}.{name}"), c, c);
        }
    }
}

/// Every tensor a diffusers `UNet2DModel` with `cfg` holds, under the diffusers names (the
/// same walk as `UNet2DModel::from_parts`, which rejects any key this list gets wrong).
fn tensor_specs(cfg: &UNet2DConfig) -> Vec<Spec> {
    let mut s = Specs(Vec::new());
    let ch = &cfg.block_out_channels;
    let c0 = ch[0];
    let temb = cfg.time_embed_dim();
    s.linear("time_embedding.linear_1", c0, temb);
    s.linear("time_embedding.linear_2", temb, temb);
    if let Some(n) = cfg.num_class_embeds {
        s.push(
            "class_embedding",
            "weight",
            vec![n, temb],
            Init::Uniform(1.0),
        );
    }
    s.conv("conv_in", cfg.in_channels, c0, 3);
    let mut out_c = c0;
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let in_c = out_c;
        out_c = ch[i];
        for j in 0..cfg.layers_per_block {
            let rin = if j == 0 { in_c } else { out_c };
            s.resnet(&format!("down_blocks.{i}.resnets.{j}"), rin, out_c, temb);
            if *kind == DownBlock::AttnDown {
                s.attention(&format!("down_blocks.{i}.attentions.{j}"), out_c);
            }
        }
        if i + 1 != ch.len() {
            s.conv(
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                out_c,
                out_c,
                3,
            );
        }
    }
    let last_c = ch[ch.len() - 1];
    if cfg.mid_block_type.is_some() {
        if cfg.add_attention {
            s.attention("mid_block.attentions.0", last_c);
        }
        s.resnet("mid_block.resnets.0", last_c, last_c, temb);
        s.resnet("mid_block.resnets.1", last_c, last_c, temb);
    }
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut out_c = rev[0];
    for (i, kind) in cfg.up_block_types.iter().enumerate() {
        let prev_c = out_c;
        out_c = rev[i];
        let in_c = rev[(i + 1).min(rev.len() - 1)];
        let layers = cfg.layers_per_block + 1;
        for j in 0..layers {
            let skip_c = if j + 1 == layers { in_c } else { out_c };
            let rin = if j == 0 { prev_c } else { out_c };
            s.resnet(
                &format!("up_blocks.{i}.resnets.{j}"),
                rin + skip_c,
                out_c,
                temb,
            );
            if *kind == UpBlock::AttnUp {
                s.attention(&format!("up_blocks.{i}.attentions.{j}"), out_c);
            }
        }
        if i + 1 != rev.len() {
            s.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), out_c, out_c, 3);
        }
    }
    s.norm("conv_norm_out", c0);
    s.conv("conv_out", c0, cfg.out_channels, 3);
    s.0
}

/// SplitMix64: a tiny seeded generator, enough for reproducible weights and inputs.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * unit - 1.0
    }
}

/// FNV-1a of a key, so each tensor's values depend only on (seed, key), not on the order.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A complete in-memory safetensors file (F32) with every tensor `cfg` needs, initialised as
/// PyTorch would (uniform ±1/√fan_in; group norms weight 1, bias 0) from `seed`.
pub fn random_weights(cfg: &UNet2DConfig, seed: u64, name: &str) -> Result<Weights> {
    let specs = tensor_specs(cfg);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for spec in &specs {
        let bytes = spec.shape.iter().product::<usize>() * 4;
        header.insert(
            spec.key.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": spec.shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut header_text = serde_json::Value::Object(header).to_string();
    // Pad the header so the data section starts 8-byte aligned, as safetensors writers do.
    while !(8 + header_text.len()).is_multiple_of(8) {
        header_text.push(' ');
    }
    let mut file = Vec::with_capacity(8 + header_text.len() + offset);
    file.extend_from_slice(&(header_text.len() as u64).to_le_bytes());
    file.extend_from_slice(header_text.as_bytes());
    for spec in &specs {
        let numel: usize = spec.shape.iter().product();
        let mut rng = SplitMix64::new(seed ^ key_hash(&spec.key));
        for _ in 0..numel {
            let v = match spec.init {
                Init::Uniform(bound) => bound * rng.symmetric(),
                Init::Ones => 1.0,
                Init::Zeros => 0.0,
            };
            file.extend_from_slice(&v.to_le_bytes());
        }
    }
    Weights::from_bytes(
        format!("<preset {name}: random weights, seed {seed}>/{WEIGHTS_FILE}"),
        &file,
    )
}
