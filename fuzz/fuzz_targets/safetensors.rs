#![no_main]
//! See wgpu_diffusion::fuzzing::safetensors.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgpu_diffusion::fuzzing::safetensors(data));
