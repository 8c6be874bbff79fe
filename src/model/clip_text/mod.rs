//! CLIP text conditioning as Stable Diffusion pipeline folders hold it (`tokenizer/`,
//! `text_encoder/`), following transformers' `models/clip`: the tokenizer runs on the CPU and
//! turns a prompt into the 77 token ids the text encoder embeds; [`CLIPTextModel`] runs the
//! encoder on the GPU; [`PromptEncoder`] pairs the two folders.

pub mod config;
pub mod text_model;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::CLIPTextConfig;
pub use text_model::CLIPTextModel;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use tokenizer::ClipTokenizer;

/// The tokenizer and text encoder of one pipeline folder, checked to agree.
#[derive(Debug)]
pub struct PromptEncoder {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: CLIPTextModel,
}

/// The prompts' padded token ids and `last_hidden_state`.
#[derive(Debug, Clone)]
pub struct EncodedPrompts {
    /// `[N][model_max_length]`.
    pub input_ids: Vec<Vec<u32>>,
    /// `[N, T, D]` row-major.
    pub embeds: Vec<f32>,
    pub seq_len: usize,
    pub hidden_size: usize,
}

impl PromptEncoder {
    /// Reads `dir/tokenizer/` and `dir/text_encoder/` (a Stable Diffusion pipeline folder, or any
    /// folder holding those two).
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        let tok_dir = dir.join("tokenizer");
        let enc_dir = dir.join("text_encoder");
        for (sub, what) in [
            (
                &tok_dir,
                "tokenizer/ folder (vocab.json + merges.txt or tokenizer.json)",
            ),
            (
                &enc_dir,
                "text_encoder/ folder (config.json + model.safetensors)",
            ),
        ] {
            if !sub.is_dir() {
                return Err(Error::MissingFile {
                    path: sub.clone(),
                    what: what.to_owned(),
                });
            }
        }
        let tokenizer = ClipTokenizer::from_folder(&tok_dir)?;
        let config = CLIPTextConfig::from_file(&enc_dir.join(text_model::CONFIG_FILE))?;
        check_vocab(&tokenizer, &config, &tok_dir)?;
        let source = crate::model::weights::WeightSource::file(&weights_path(&enc_dir)?)?;
        let text_encoder = CLIPTextModel::from_source(ctx, config, &source)?;
        Ok(PromptEncoder {
            tokenizer,
            text_encoder,
        })
    }

    /// The bytes the text encoder's weights of `dir/text_encoder/` take on the GPU (f32),
    /// from the file's header alone (parsed and checked, nothing uploaded).
    pub fn weight_bytes(dir: &Path) -> Result<u64> {
        let weights =
            crate::model::weights::Weights::open(&weights_path(&dir.join("text_encoder"))?)?;
        Ok(weights.f32_bytes())
    }

    /// Tokenizes (padded and truncated to `model_max_length`) and encodes every prompt at once.
    pub fn encode(&self, prompts: &[String]) -> Result<EncodedPrompts> {
        let input_ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p).input_ids)
            .collect();
        let embeds = self.text_encoder.encode(&input_ids)?;
        Ok(EncodedPrompts {
            seq_len: self.tokenizer.model_max_length(),
            hidden_size: self.text_encoder.config.hidden_size,
            input_ids,
            embeds,
        })
    }
}

/// The text encoder's weights file in `enc_dir` (the fp16 variant when the plain file is absent).
fn weights_path(enc_dir: &Path) -> Result<PathBuf> {
    let path = crate::model::weights::with_variant(&enc_dir.join(text_model::WEIGHTS_FILE));
    if !path.is_file() {
        return Err(Error::MissingFile {
            path,
            what: "model.safetensors or model.fp16.safetensors (the text encoder weights)".into(),
        });
    }
    Ok(path)
}

/// The encoder's `vocab_size` must equal the tokenizer's vocabulary, and its positions cover the
/// tokenizer's `model_max_length`.
fn check_vocab(tokenizer: &ClipTokenizer, config: &CLIPTextConfig, tok_dir: &Path) -> Result<()> {
    let tokens = tokenizer.vocab_size();
    if config.vocab_size != tokens {
        return Err(Error::Config {
            path: config.source.clone(),
            key: "vocab_size".to_owned(),
            message: format!(
                "{} disagrees with the tokenizer in {}, which has {tokens} tokens: the two \
                 folders are not from the same model",
                config.vocab_size,
                PathBuf::from(tok_dir).display()
            ),
        });
    }
    let max_len = tokenizer.model_max_length();
    if config.max_position_embeddings < max_len {
        return Err(Error::Config {
            path: config.source.clone(),
            key: "max_position_embeddings".to_owned(),
            message: format!(
                "{} is shorter than the tokenizer's model_max_length {max_len} ({})",
                config.max_position_embeddings,
                tok_dir.display()
            ),
        });
    }
    Ok(())
}
