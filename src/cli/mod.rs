//! Subcommands of the binary that need more than a few lines.

pub mod bench;
pub mod encode_prompt;
pub mod sample;
