#![no_main]
//! See wgpu_diffusion::fuzzing::sample_args.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgpu_diffusion::fuzzing::sample_args(data));
