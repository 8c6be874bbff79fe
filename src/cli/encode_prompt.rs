//! `encode-prompt`: tokenizes prompts with a pipeline folder's `tokenizer/` and, with
//! `--save-tensor`, encodes them with its `text_encoder/` on the GPU, writing `prompt_embeds`
//! [N, 77, D] (f32) and `input_ids` [N, 77] (i64) as diffusers' pipelines compute them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use wgpu_diffusion::gpu::{GpuContext, GpuOptions};
use wgpu_diffusion::model::clip_text::tokenizer::ClipTokenizer;
use wgpu_diffusion::model::clip_text::{EncodedPrompts, PromptEncoder};
use wgpu_diffusion::sampling::io::AtomicFile;

#[derive(Args, Debug)]
pub struct EncodePromptArgs {
    /// A Stable Diffusion pipeline folder, or any folder holding `tokenizer/` and `text_encoder/`.
    #[arg(long)]
    pub model: PathBuf,
    /// A prompt (repeat the flag for several; an empty prompt is allowed).
    #[arg(long = "prompt", required = true)]
    pub prompts: Vec<String>,
    /// Write `prompt_embeds` [N, 77, D] (f32) and `input_ids` [N, 77] (i64) to this safetensors
    /// file. Without it, only the tokenizer runs and the token ids are printed.
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
}

/// safetensors bytes of `prompt_embeds` and `input_ids`.
fn tensors_file(out: &EncodedPrompts) -> Result<Vec<u8>> {
    let n = out.input_ids.len();
    let ids: Vec<i64> = out
        .input_ids
        .iter()
        .flatten()
        .map(|&id| i64::from(id))
        .collect();
    let embeds = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![n, out.seq_len, out.hidden_size],
        bytemuck::cast_slice(&out.embeds),
    )?;
    let input_ids = safetensors::tensor::TensorView::new(
        safetensors::Dtype::I64,
        vec![n, out.seq_len],
        bytemuck::cast_slice(&ids),
    )?;
    Ok(safetensors::tensor::serialize(
        [("prompt_embeds", embeds), ("input_ids", input_ids)],
        None,
    )?)
}

fn print_ids(prompts: &[String], ids: &[Vec<u32>]) {
    for (prompt, ids) in prompts.iter().zip(ids) {
        let text: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{prompt:?}: {}", text.join(" "));
    }
}

pub fn run(args: &EncodePromptArgs, options: &GpuOptions) -> Result<ExitCode> {
    let dir = &args.model;
    if !dir.is_dir() {
        bail!(
            "--model {}: not a directory (expected a pipeline folder holding tokenizer/ and \
             text_encoder/)",
            dir.display()
        );
    }
    let Some(path) = &args.save_tensor else {
        let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer"))
            .with_context(|| format!("--model {}: loading the tokenizer", dir.display()))?;
        let ids: Vec<Vec<u32>> = args
            .prompts
            .iter()
            .map(|p| tokenizer.encode(p).input_ids)
            .collect();
        print_ids(&args.prompts, &ids);
        return Ok(ExitCode::SUCCESS);
    };
    // Created first, so an unwritable destination fails before any work.
    let file = AtomicFile::create(path).context("--save-tensor")?;
    let ctx = GpuContext::new(options)?;
    let encoder = PromptEncoder::load(&ctx, dir)
        .with_context(|| format!("--model {}: loading the text encoder", dir.display()))?;
    let out = encoder.encode(&args.prompts)?;
    print_ids(&args.prompts, &out.input_ids);
    file.commit(&tensors_file(&out)?)
        .with_context(|| format!("--save-tensor {}", path.display()))?;
    println!(
        "wrote {} (prompt_embeds [{}, {}, {}] f32, input_ids [{}, {}] i64)",
        path.display(),
        out.input_ids.len(),
        out.seq_len,
        out.hidden_size,
        out.input_ids.len(),
        out.seq_len
    );
    Ok(ExitCode::SUCCESS)
}
