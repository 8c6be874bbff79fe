#![no_main]
//! See wgpu_diffusion::fuzzing::unet_config.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgpu_diffusion::fuzzing::unet_config(data));
