//! Which family of kernels a device runs: the GPU-shaped ones (workgroup tiles staged through
//! shared memory, barriers; every adapter) or, where they exist, kernels shaped for CPU adapters
//! (Mesa's llvmpipe / lavapipe), which avoid shared memory and barriers and share loads across
//! the lanes of a subgroup instead. Both give bit-identical results (each kernel pair is tested
//! against the other); the CPU shape is only faster where invocations are SIMD lanes of a CPU.
//!
//! `auto` (the default) picks the CPU shape on an adapter of type `Cpu` that exposes subgroups of
//! exactly [`CPU_SUBGROUP`] lanes; `WGPU_DIFFUSION_KERNELS=gpu|cpu|auto` (or
//! [`GpuOptions::kernels`](crate::gpu::GpuOptions)) overrides it, and `cpu` on an adapter that
//! cannot run them is an error that says why.

use crate::error::{Error, Result};
use crate::gpu::AdapterSummary;

/// The subgroup width the CPU-shaped kernels are written for (llvmpipe on 256-bit AVX2: 8 f32
/// lanes per vector).
pub const CPU_SUBGROUP: u32 = 8;

/// The kernel family a context dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelShape {
    /// Shared-memory tiles and barriers (`conv2d.wgsl`, …): any adapter.
    Gpu,
    /// Subgroup-vectorised, barrier-free kernels (`conv2d_cpu.wgsl`) where a layer fits them,
    /// the GPU-shaped ones elsewhere.
    Cpu,
}

impl KernelShape {
    pub fn name(self) -> &'static str {
        match self {
            KernelShape::Gpu => "gpu",
            KernelShape::Cpu => "cpu",
        }
    }
}

/// What the user asked for: a shape, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl KernelChoice {
    /// Parses `auto`, `gpu` or `cpu` (case-insensitive); `what` names the flag or variable.
    pub fn parse(what: &str, value: &str) -> Result<Self> {
        match value.trim().to_lowercase().as_str() {
            "auto" | "" => Ok(KernelChoice::Auto),
            "gpu" => Ok(KernelChoice::Gpu),
            "cpu" => Ok(KernelChoice::Cpu),
            _ => Err(Error::BadGpuOption {
                name: what.into(),
                value: value.to_string(),
                expected: "auto, gpu or cpu".into(),
            }),
        }
    }

    /// The shape for a device with `summary`'s type and features: `Err` (naming the reason) when
    /// `cpu` was asked for and the device cannot run the CPU-shaped kernels.
    pub fn resolve(self, summary: &AdapterSummary) -> Result<KernelShape> {
        let unsupported = cpu_shape_unsupported(summary);
        match (self, unsupported) {
            (KernelChoice::Gpu, _) => Ok(KernelShape::Gpu),
            (KernelChoice::Cpu, None) => Ok(KernelShape::Cpu),
            (KernelChoice::Cpu, Some(why)) => Err(Error::BadGpuOption {
                name: "kernel shape (WGPU_DIFFUSION_KERNELS / --kernels)".into(),
                value: "cpu".into(),
                expected: format!("auto or gpu on {}: {why}", summary.describe()),
            }),
            (KernelChoice::Auto, None) if summary.info.device_type == wgpu::DeviceType::Cpu => {
                Ok(KernelShape::Cpu)
            }
            (KernelChoice::Auto, _) => Ok(KernelShape::Gpu),
        }
    }
}

/// Why a device cannot run the CPU-shaped kernels, or `None` when it can: they need the
/// `SUBGROUP` feature with every subgroup exactly [`CPU_SUBGROUP`] lanes wide.
pub fn cpu_shape_unsupported(summary: &AdapterSummary) -> Option<String> {
    if !summary.features.contains(wgpu::Features::SUBGROUP) {
        return Some("the device has no subgroup operations (wgpu feature SUBGROUP)".into());
    }
    let (min, max) = (
        summary.info.subgroup_min_size,
        summary.info.subgroup_max_size,
    );
    if min != CPU_SUBGROUP || max != CPU_SUBGROUP {
        return Some(format!(
            "its subgroups are {min}..={max} lanes wide; the CPU-shaped kernels need exactly \
             {CPU_SUBGROUP}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(device_type: wgpu::DeviceType, subgroups: Option<(u32, u32)>) -> AdapterSummary {
        let mut info = wgpu::AdapterInfo::new(device_type, wgpu::Backend::Vulkan);
        info.name = "test adapter".into();
        let mut features = wgpu::Features::empty();
        if let Some((min, max)) = subgroups {
            features |= wgpu::Features::SUBGROUP;
            info.subgroup_min_size = min;
            info.subgroup_max_size = max;
        }
        AdapterSummary {
            info,
            limits: wgpu::Limits::default(),
            features,
        }
    }

    #[test]
    fn auto_picks_the_cpu_shape_only_on_cpu_adapters_with_8_lane_subgroups() {
        let lavapipe = summary(wgpu::DeviceType::Cpu, Some((8, 8)));
        let gpu = summary(wgpu::DeviceType::DiscreteGpu, Some((32, 32)));
        let gl = summary(wgpu::DeviceType::Cpu, None);
        let avx512 = summary(wgpu::DeviceType::Cpu, Some((16, 16)));
        let auto = KernelChoice::Auto;
        assert_eq!(auto.resolve(&lavapipe).unwrap(), KernelShape::Cpu);
        assert_eq!(auto.resolve(&gpu).unwrap(), KernelShape::Gpu);
        assert_eq!(auto.resolve(&gl).unwrap(), KernelShape::Gpu);
        assert_eq!(auto.resolve(&avx512).unwrap(), KernelShape::Gpu);
        assert_eq!(
            KernelChoice::Gpu.resolve(&lavapipe).unwrap(),
            KernelShape::Gpu
        );
        // A GPU with 8-lane subgroups (Intel) runs them when asked, never by default.
        let intel = summary(wgpu::DeviceType::IntegratedGpu, Some((8, 8)));
        assert_eq!(KernelChoice::Cpu.resolve(&intel).unwrap(), KernelShape::Cpu);
        assert_eq!(auto.resolve(&intel).unwrap(), KernelShape::Gpu);
    }

    #[test]
    fn cpu_on_a_device_without_it_names_the_reason() {
        let gl = summary(wgpu::DeviceType::Cpu, None);
        let e = KernelChoice::Cpu.resolve(&gl).unwrap_err().to_string();
        assert!(e.contains("SUBGROUP") && e.contains("cpu"), "{e}");
        let avx512 = summary(wgpu::DeviceType::Cpu, Some((16, 16)));
        let e = KernelChoice::Cpu.resolve(&avx512).unwrap_err().to_string();
        assert!(e.contains("16..=16") && e.contains("exactly 8"), "{e}");
    }

    #[test]
    fn parse_accepts_the_three_names_and_rejects_others() {
        assert_eq!(
            KernelChoice::parse("x", "AUTO").unwrap(),
            KernelChoice::Auto
        );
        assert_eq!(
            KernelChoice::parse("x", " gpu ").unwrap(),
            KernelChoice::Gpu
        );
        assert_eq!(KernelChoice::parse("x", "cpu").unwrap(), KernelChoice::Cpu);
        let e = KernelChoice::parse("WGPU_DIFFUSION_KERNELS", "simd")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WGPU_DIFFUSION_KERNELS") && e.contains("auto, gpu or cpu"),
            "{e}"
        );
    }
}
