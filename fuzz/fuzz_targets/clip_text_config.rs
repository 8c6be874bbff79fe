#![no_main]
//! See wgpu_diffusion::fuzzing::clip_text_config.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgpu_diffusion::fuzzing::clip_text_config(data));
