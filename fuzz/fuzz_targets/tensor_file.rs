#![no_main]
//! See wgpu_diffusion::fuzzing::tensor_file.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgpu_diffusion::fuzzing::tensor_file(data));
