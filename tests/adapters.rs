//! Every adapter wgpu can see samples the bundled model (weights/fashion-ddpm) from the same seed,
//! and the outputs are compared: Mesa's llvmpipe through Vulkan (lavapipe) and through GL, and
//! across Mesa versions, and lavapipe's CPU-shaped and GPU-shaped kernels, must give
//! bit-identical images (issue 15). Other adapters (a real GPU,
//! whose FMA contraction and transcendental functions differ) are compared within a tolerance.
//! Needs at least one adapter; compares all that exist and prints which were compared.
//! The default adapter also samples with naga's shader runtime checks on and off
//! (`WGPU_DIFFUSION_SHADER_CHECKS`), which must agree bit for bit on any adapter.

use std::path::PathBuf;

use wgpu_diffusion::gpu::{KernelChoice, KernelShape};
use wgpu_diffusion::schedule::SchedulerKind;
use wgpu_diffusion::{wgpu, GpuContext, GpuOptions, Pipeline, SampleOptions};

fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm")
}

/// Largest |a − b| over the max |a| (a relative error of the image as a whole).
fn rel_max_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    let diff = a.iter().zip(b).fold(0f64, |m, (&x, &y)| {
        m.max((f64::from(x) - f64::from(y)).abs())
    });
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Indices that differ in their bits (first few) and how many.
fn bit_differences(a: &[f32], b: &[f32]) -> (usize, Vec<usize>) {
    let differing: Vec<usize> = a
        .iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, _)| i)
        .collect();
    let first = differing.iter().take(5).copied().collect();
    (differing.len(), first)
}

#[test]
fn every_adapter_samples_the_bundled_model_identically() {
    // All backends, whatever WGPU_BACKEND says: the point is to compare what the machine has.
    // The adapters themselves, not a name: two Mesa versions' lavapipe share name and backend.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::all();
    let instance = wgpu::Instance::new(desc);
    let all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    assert!(
        !all.is_empty(),
        "no GPU adapter: `make test` (scripts/ensure-adapter.sh) installs mesa-vulkan-drivers"
    );
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 4,
        num_images: 3,
        seed: 11,
        class_labels: Some(vec![0, 4, 9]),
        ..SampleOptions::default()
    };
    let mut runs: Vec<(String, bool, Vec<f32>)> = Vec::new();
    for adapter in &all {
        let info = adapter.get_info();
        let label = format!(
            "{} ({:?}, {:?}) [{}]",
            info.name, info.backend, info.device_type, info.driver_info
        );
        let ctx =
            GpuContext::from_adapter(adapter).unwrap_or_else(|e| panic!("opening {label}: {e}"));
        let software = info.name.to_lowercase().contains("llvmpipe");
        // Each kernel shape the device runs (lavapipe: the CPU-shaped kernels by default, and the
        // GPU-shaped ones on request), so the two are compared end to end as well as per op.
        let mut shapes = vec![ctx.kernel_shape()];
        if ctx.kernel_shape() == KernelShape::Cpu {
            shapes.push(KernelShape::Gpu);
        }
        for shape in shapes {
            let choice = match shape {
                KernelShape::Cpu => KernelChoice::Cpu,
                KernelShape::Gpu => KernelChoice::Gpu,
            };
            ctx.set_kernels(choice)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let label = format!("{label}, {}-shaped kernels", shape.name());
            let samples = Pipeline::load_with(&ctx, &bundled())
                .and_then(|p| p.sample(&options))
                .unwrap_or_else(|e| panic!("sampling on {label}: {e}"));
            assert_eq!(samples.shape, [3, 1, 28, 28], "{label}");
            assert!(
                samples.data.iter().all(|x| x.is_finite()),
                "{label}: non-finite output"
            );
            runs.push((label, software, samples.data));
        }
    }
    let (reference_label, reference_software, reference) = &runs[0];
    eprintln!("reference: {reference_label}");
    for (label, software, data) in &runs[1..] {
        let (count, first) = bit_differences(reference, data);
        let rel = rel_max_diff(reference, data);
        eprintln!(
            "compared: {label}: {count} of {} values differ in their bits, max rel. diff {rel:.3e}",
            data.len()
        );
        if *software && *reference_software {
            assert_eq!(
                count, 0,
                "{label} differs from {reference_label} in {count} values (first at {first:?}, max \
                 rel. diff {rel:.3e}); llvmpipe through Vulkan and GL, any Mesa version, either \
                 kernel shape, must agree bit for bit"
            );
        } else {
            assert!(
                rel <= 1e-3,
                "{label} vs {reference_label}: max rel. diff {rel:.3e} > 1e-3 (first differing \
                 values at {first:?})"
            );
        }
    }
    eprintln!("{} adapter(s) compared", runs.len());
}

/// Shader runtime checks on and off (`GpuOptions::shader_checks`) give the same bits on the
/// default adapter, with each kernel shape it runs: every index in the shaders is guarded
/// explicitly, so the checks naga would inject never change a value.
#[test]
fn shader_checks_on_and_off_sample_the_bundled_model_identically() {
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 4,
        num_images: 3,
        seed: 5,
        class_labels: Some(vec![1, 6, 8]),
        ..SampleOptions::default()
    };
    let open = |checks: &str| {
        let ctx = GpuContext::new(&GpuOptions {
            shader_checks: Some(checks.into()),
            ..GpuOptions::from_env()
        })
        .unwrap_or_else(|e| panic!("opening the default adapter, checks {checks}: {e}"));
        assert_eq!(ctx.shader_checks(), checks == "on");
        ctx
    };
    let (on, off) = (open("on"), open("off"));
    let mut shapes = vec![on.kernel_shape()];
    if on.kernel_shape() == KernelShape::Cpu {
        shapes.push(KernelShape::Gpu);
    }
    for shape in shapes {
        let choice = match shape {
            KernelShape::Cpu => KernelChoice::Cpu,
            KernelShape::Gpu => KernelChoice::Gpu,
        };
        let run = |ctx: &std::sync::Arc<GpuContext>, checks: &str| {
            ctx.set_kernels(choice).expect("kernel shape");
            let samples = Pipeline::load_with(ctx, &bundled())
                .and_then(|p| p.sample(&options))
                .unwrap_or_else(|e| panic!("sampling, checks {checks}: {e}"));
            assert!(
                samples.data.iter().all(|x| x.is_finite()),
                "checks {checks}: non-finite output"
            );
            samples.data
        };
        let (checked, unchecked) = (run(&on, "on"), run(&off, "off"));
        let (count, first) = bit_differences(&checked, &unchecked);
        eprintln!(
            "{}, {}-shaped kernels: checks on vs off: {count} of {} values differ",
            on.adapter.describe(),
            shape.name(),
            checked.len()
        );
        assert_eq!(
            count,
            0,
            "{}, {}-shaped kernels: shader checks off differs from on in {count} values (first \
             at {first:?}, max rel. diff {:.3e})",
            on.adapter.describe(),
            shape.name(),
            rel_max_diff(&checked, &unchecked)
        );
    }
}
