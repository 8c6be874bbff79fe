//! Entry points of the `cargo fuzz` targets in `fuzz/`, one per parser of user input: the
//! safetensors reader (model weights and `--init-noise` tensor files), every config.json reader,
//! scheduler_config.json, classes.json and the checks `sample` / `bench` run on their options
//! before any GPU work. Each takes arbitrary bytes and must never panic (an `Err` is the expected
//! answer to most inputs). `tests/fuzz_corpus.rs` replays every committed corpus file through
//! [`TARGETS`] on a plain `cargo test`, so CI needs no fuzzer.
//!
//! Not public API (exempt from semver).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::Result;
use crate::model::autoencoder::config::{AutoencoderKLConfig, VQModelConfig};
use crate::model::clip_text::CLIPTextConfig;
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::unet_2d_condition::UNet2DConditionConfig;
use crate::model::weights::Weights;
use crate::sampling::{
    check_classes, io, ClassNames, InitImage, PipelineConfig, RunSpec, SampleOptions, UNetConfig,
};
use crate::schedule::{
    BetaSchedule, PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing,
};

/// A fuzz target: its name (the `fuzz/fuzz_targets/NAME.rs` binary and the
/// `fuzz/corpus/NAME/` folder) and its entry point.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every fuzz target, in the order `fuzz/Cargo.toml` lists them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "safetensors",
        run: safetensors,
    },
    Target {
        name: "tensor_file",
        run: tensor_file,
    },
    Target {
        name: "unet_config",
        run: unet_config,
    },
    Target {
        name: "autoencoder_config",
        run: autoencoder_config,
    },
    Target {
        name: "clip_text_config",
        run: clip_text_config,
    },
    Target {
        name: "scheduler_config",
        run: scheduler_config,
    },
    Target {
        name: "classes",
        run: classes,
    },
    Target {
        name: "sample_args",
        run: sample_args,
    },
];

/// The file name error messages use for fuzzed input.
fn label(name: &str) -> &Path {
    Path::new(name)
}

/// A safetensors file (model weights): the strict header parser, then every tensor converted
/// (f32 and i64 getters, as the loaders call them) and the unused-tensor check.
pub fn safetensors(data: &[u8]) {
    let Ok(weights) = Weights::from_bytes("fuzz.safetensors", data) else {
        return;
    };
    let keys: Vec<String> = weights.keys().map(str::to_owned).collect();
    for key in &keys {
        let shape = weights.shape_of(key).unwrap_or_default().to_vec();
        let _ = weights.get(key, &shape);
        let _ = weights.get_i64(key, &shape);
        // A shape that disagrees must be an error, whatever the file says.
        let _ = weights.get(key, &[shape.iter().product::<usize>().wrapping_add(1)]);
    }
    let _ = weights.metadata();
    let _ = weights.total_bytes();
    let _ = weights.finish();
}

/// A tensor file as `--init-noise` reads it (one tensor, f32 / f16 / bf16, finite).
pub fn tensor_file(data: &[u8]) {
    let _ = io::single_tensor_from_bytes(label("fuzz-noise.safetensors"), data);
}

/// config.json of a U-Net, read both as a `UNet2DModel` and as a `UNet2DConditionModel` (the
/// pipeline folder tells them apart by `_class_name`); an accepted `UNet2DModel` config then
/// prepares a short run, which exercises its sizes and class count.
pub fn unet_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = label("config.json");
    if let Ok(config) = UNet2DConfig::from_json_str(text, path) {
        let unet = UNetConfig::Plain(config);
        let options = SampleOptions {
            steps: 2,
            ..SampleOptions::default()
        };
        let _ = RunSpec::prepare(
            &unet,
            &SchedulerConfig::default(),
            &ClassNames::default(),
            &options,
        );
    }
    let _ = UNet2DConditionConfig::from_json_str(text, path);
}

/// config.json of a VAE (`AutoencoderKL`) or a VQ-VAE (`VQModel`).
pub fn autoencoder_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = AutoencoderKLConfig::from_json_str(text, label("vae/config.json"));
    let _ = VQModelConfig::from_json_str(text, label("vqvae/config.json"));
}

/// config.json of a CLIP text encoder.
pub fn clip_text_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = CLIPTextConfig::from_json_str(text, label("text_encoder/config.json"));
}

/// scheduler_config.json, and when accepted the plan of a few steps of every sampler (the
/// schedule arithmetic in f64: betas, ᾱ, σ, spacing).
pub fn scheduler_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = SchedulerConfig::from_json_str(text, label("scheduler_config.json")) else {
        return;
    };
    for kind in SchedulerKind::ALL {
        let options = SampleOptions {
            scheduler: Some(kind),
            steps: 3,
            ..SampleOptions::default()
        };
        let _ = crate::sampling::prepare::plan(&config, &options);
    }
}

/// classes.json, checked against a model of 10 classes (the bundled ones) and of 0 and 1.
pub fn classes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = label("classes.json");
    let Ok(classes) = ClassNames::from_json_str(text, path) else {
        return;
    };
    for num in [None, Some(0), Some(1), Some(10)] {
        let _ = check_classes(path, &classes, num);
    }
}

/// The bundled model folders' configs, read once: `weights/fashion-ddpm` (pixel space,
/// class-conditional) and `weights/fashion-sd` (latent, text-to-image).
pub fn bundled_configs() -> std::result::Result<&'static [PipelineConfig], String> {
    static CONFIGS: OnceLock<std::result::Result<Vec<PipelineConfig>, String>> = OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
            ["fashion-ddpm", "fashion-sd"]
                .iter()
                .map(|name| PipelineConfig::load(&weights.join(name)).map_err(|e| e.to_string()))
                .collect()
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// The checks `sample` (and `bench --steps/--scheduler`) make before any GPU work: the input is
/// whitespace-separated `name value` pairs spelling the options as the CLI's flags do (without
/// the dashes, e.g. `steps 1000 guidance-scale 1e300 class-label 3,4 height 64`), turned into
/// [`SampleOptions`] the way the CLI turns its flags, then validated and prepared against both
/// bundled models. An unparseable value stops early (clap would refuse it).
pub fn sample_args(data: &[u8]) {
    let Ok(configs) = bundled_configs() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let Some((options, classes)) = parse_sample_args(&text) else {
        return;
    };
    for config in configs {
        let mut options = options.clone();
        if let Some(names) = &classes {
            let labels: Result<Vec<usize>> =
                names.iter().map(|n| config.resolve_class(n)).collect();
            match labels {
                Ok(labels) => options.class_labels = Some(labels),
                Err(_) => continue,
            }
        }
        let _ = config.default_scheduler();
        if let Ok(spec) = config.prepare(&options) {
            let _ = config.output_shape(&spec);
            let _ = spec.model_evaluations();
        }
    }
}

/// Values larger than this become vectors no longer than it (the CLI reads such data from
/// files whose size the user chose; the fuzzer must stay fast).
const MAX_FUZZ_VALUES: usize = 1 << 16;

/// `name value` pairs → options and, for `class`, the class names to resolve per model.
fn parse_sample_args(text: &str) -> Option<(SampleOptions, Option<Vec<String>>)> {
    let mut o = SampleOptions::default();
    let mut classes = None;
    let mut strength = 0.8;
    let mut init_image_len = None;
    let mut tokens = text.split_whitespace();
    while let Some(name) = tokens.next() {
        if name == "karras" {
            o.overrides.use_karras_sigmas = Some(true);
            continue;
        }
        let value = tokens.next()?;
        let list = || value.split(',').map(str::to_owned).collect::<Vec<_>>();
        match name {
            "scheduler" => o.scheduler = Some(SchedulerKind::from_cli_name(value).ok()?),
            "steps" => o.steps = value.parse().ok()?,
            "eta" => o.eta = value.parse().ok()?,
            "seed" => o.seed = value.parse().ok()?,
            "num-images" => o.num_images = value.parse().ok()?,
            "first-image" => o.first_image = value.parse().ok()?,
            "batch-size" => o.batch_size = Some(value.parse().ok()?),
            "memory-budget" => {
                o.memory_budget = Some(value.parse::<u64>().ok()?.saturating_mul(1 << 20))
            }
            "decode-binding-limit" => o.decode_binding_limit = Some(value.parse().ok()?),
            "class-label" => {
                o.class_labels = Some(
                    value
                        .split(',')
                        .map(str::parse)
                        .collect::<std::result::Result<_, _>>()
                        .ok()?,
                )
            }
            "class" => classes = Some(list()),
            "guidance-scale" => o.guidance_scale = Some(value.parse().ok()?),
            "prompt" => o
                .prompts
                .get_or_insert_with(Vec::new)
                .push(value.to_owned()),
            "negative-prompt" => o
                .negative_prompts
                .get_or_insert_with(Vec::new)
                .push(value.to_owned()),
            "init-noise-len" => {
                let len = value.parse::<usize>().ok()?.min(MAX_FUZZ_VALUES);
                o.init_noise = Some(vec![0.5; len]);
            }
            "init-image-len" => init_image_len = Some(value.parse::<usize>().ok()?),
            "strength" => strength = value.parse().ok()?,
            "prediction-type" => {
                o.overrides.prediction_type = Some(PredictionType::parse(value).ok()?)
            }
            "timestep-spacing" => {
                o.overrides.timestep_spacing = Some(TimestepSpacing::parse(value).ok()?)
            }
            "beta-schedule" => o.overrides.beta_schedule = Some(BetaSchedule::parse(value).ok()?),
            "clip-sample" => o.overrides.clip_sample = Some(value.parse().ok()?),
            "trajectory-every" => o.trajectory_every = Some(value.parse().ok()?),
            "height" => o.height = Some(value.parse().ok()?),
            "width" => o.width = Some(value.parse().ok()?),
            _ => return None,
        }
    }
    if let Some(len) = init_image_len {
        o.init_image = Some(InitImage {
            image: vec![0.0; len.min(MAX_FUZZ_VALUES)],
            strength,
        });
    }
    Some((o, classes))
}

/// The corpus folder of `target` in this checkout (`fuzz/corpus/NAME`).
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}
