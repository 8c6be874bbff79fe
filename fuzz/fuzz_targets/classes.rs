#![no_main]
//! See wgpu_diffusion::fuzzing::classes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgpu_diffusion::fuzzing::classes(data));
