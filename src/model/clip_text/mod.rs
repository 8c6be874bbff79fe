//! CLIP text conditioning as Stable Diffusion pipeline folders hold it (`tokenizer/`,
//! `text_encoder/`), following transformers' `models/clip`: the tokenizer runs on the CPU and
//! turns a prompt into the 77 token ids the text encoder embeds.

pub mod tokenizer;
