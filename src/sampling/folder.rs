//! The layout of a folder `--model` points at: a single-model folder (config.json, weights,
//! scheduler_config.json and classes.json side by side, as our bundled models), or a diffusers
//! pipeline folder whose `model_index.json` names each part and its subfolder (diffusers
//! `DiffusionPipeline.save_pretrained`: `unet/`, `scheduler/`, …). Stable Diffusion folders
//! (`StableDiffusionPipeline`) add `vae/`, `text_encoder/` and `tokenizer/`; their optional
//! `safety_checker` and `feature_extractor` parts are not used (no image is filtered).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::unet_2d::CONFIG_FILE;
use crate::sampling::latent::{DecoderClass, DecoderPart};

/// The file that marks a diffusers pipeline folder.
pub const MODEL_INDEX_FILE: &str = "model_index.json";

/// Pipeline classes whose parts are a `UNet2DModel` and a scheduler (pixel-space sampling).
const UNET_PIPELINES: &[&str] = &["DDPMPipeline", "DDIMPipeline"];
/// Pipeline classes that add a latent decoder part `vqvae` (`LDMPipeline`).
const LATENT_PIPELINES: &[&str] = &["LDMPipeline"];
/// Text-to-image pipelines: a `UNet2DConditionModel`, a `vae`, a CLIP `text_encoder` and its
/// `tokenizer`.
const TEXT_PIPELINES: &[&str] = &["StableDiffusionPipeline"];

/// Where a folder's parts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderLayout {
    /// The folder as given.
    pub root: PathBuf,
    /// `_class_name` of `model_index.json`; `None` for a single-model folder.
    pub pipeline_class: Option<String>,
    /// The folder holding the U-Net's config.json and weights.
    pub unet: PathBuf,
    /// The folder holding scheduler_config.json (which may be absent: DDPM defaults).
    pub scheduler: PathBuf,
    /// The folder holding classes.json, our own addition for class-conditional models.
    pub classes: PathBuf,
    /// The latent decoder of a latent pipeline (`vqvae/` or `vae/`), `None` for pixel-space
    /// sampling.
    pub decoder: Option<DecoderPart>,
    /// Whether the U-Net is a text-conditioned `UNet2DConditionModel` whose prompts go through
    /// `tokenizer/` and `text_encoder/` of [`FolderLayout::root`].
    pub text_conditioned: bool,
}

impl FolderLayout {
    /// Reads `dir`'s layout: `model_index.json` when present, else a single-model folder. A
    /// pipeline class we cannot run, a part of another class, or a missing part is an error
    /// naming it.
    pub fn resolve(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what: format!(
                    "model directory (a diffusers pipeline folder with {MODEL_INDEX_FILE}, or a \
                     model folder with {CONFIG_FILE} and diffusion_pytorch_model.safetensors)"
                ),
            });
        }
        let index = dir.join(MODEL_INDEX_FILE);
        if !index.is_file() {
            return Ok(FolderLayout {
                root: dir.to_path_buf(),
                pipeline_class: None,
                unet: dir.to_path_buf(),
                scheduler: dir.to_path_buf(),
                classes: dir.to_path_buf(),
                decoder: None,
                text_conditioned: false,
            });
        }
        let parts = ModelIndex::read(&index)?;
        let class = parts.class_name.as_str();
        let text = TEXT_PIPELINES.contains(&class);
        if !UNET_PIPELINES.contains(&class) && !LATENT_PIPELINES.contains(&class) && !text {
            return Err(Error::Config {
                path: index,
                key: "_class_name".into(),
                message: format!(
                    "pipeline class {:?} is not supported; supported: {}",
                    parts.class_name,
                    [UNET_PIPELINES, LATENT_PIPELINES, TEXT_PIPELINES]
                        .concat()
                        .join(", ")
                ),
            });
        }
        let unet_class = if text {
            "UNet2DConditionModel"
        } else {
            "UNet2DModel"
        };
        let unet = parts.part(&index, "unet", &[unet_class])?;
        let scheduler = parts.part(&index, "scheduler", &[])?;
        if text {
            parts.part(&index, "text_encoder", &["CLIPTextModel"])?;
            parts.part(&index, "tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"])?;
        }
        let decoder = if LATENT_PIPELINES.contains(&class) || text {
            let (part, classes) = if text {
                ("vae", &["AutoencoderKL"][..])
            } else {
                ("vqvae", DecoderClass::NAMES)
            };
            let name = parts.part(&index, part, classes)?;
            let class = parts
                .parts
                .get(&name)
                .and_then(|(_, c)| DecoderClass::from_name(c))
                .ok_or_else(|| Error::invalid("FolderLayout", "a checked part lost its class"))?;
            Some(DecoderPart {
                class,
                dir: dir.join(name),
            })
        } else {
            None
        };
        Ok(FolderLayout {
            root: dir.to_path_buf(),
            pipeline_class: Some(parts.class_name),
            unet: dir.join(unet),
            scheduler: dir.join(scheduler),
            classes: dir.to_path_buf(),
            decoder,
            text_conditioned: text,
        })
    }
}

/// `model_index.json`: `{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
/// "scheduler": ["diffusers", "DDPMScheduler"], …}`.
struct ModelIndex {
    class_name: String,
    /// Part name → (library, class).
    parts: BTreeMap<String, (String, String)>,
}

impl ModelIndex {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |key: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad("(file)", format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(bad("(file)", "expected a JSON object".into()));
        };
        let class_name = map
            .get("_class_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("_class_name", "missing, or not a string".into()))?
            .to_owned();
        let mut parts = BTreeMap::new();
        for (key, v) in &map {
            if key.starts_with('_') {
                continue;
            }
            // Optional parts saved as [null, null] are absent; other non-pairs are settings.
            if let Some([lib, class]) = v.as_array().map(Vec::as_slice) {
                if let (Some(lib), Some(class)) = (lib.as_str(), class.as_str()) {
                    parts.insert(key.clone(), (lib.to_owned(), class.to_owned()));
                }
            }
        }
        Ok(ModelIndex { class_name, parts })
    }

    /// The subfolder of part `name`, checking it is listed, of one of `classes` (any when
    /// empty) and present on disk.
    fn part(&self, index: &Path, name: &str, classes: &[&str]) -> Result<String> {
        let Some((_, class)) = self.parts.get(name) else {
            return Err(Error::Config {
                path: index.to_path_buf(),
                key: name.into(),
                message: format!(
                    "a {} folder needs a {name:?} part; the index lists: {}",
                    self.class_name,
                    self.parts.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        };
        if !classes.is_empty() && !classes.contains(&class.as_str()) {
            return Err(Error::Config {
                path: index.to_path_buf(),
                key: name.into(),
                message: format!(
                    "part {name:?} is a {class}; supported: {}",
                    classes.join(", ")
                ),
            });
        }
        let dir = index.with_file_name(name);
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir,
                what: format!("the {name:?} part ({class}) that {MODEL_INDEX_FILE} lists"),
            });
        }
        Ok(name.to_owned())
    }
}
