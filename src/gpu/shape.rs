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

/// How the GPU-shaped GEMM kernels (`conv2d.wgsl`, `matmul.wgsl`) size their workgroup tiles.
/// Each invocation computes 8 × 8 outputs; a workgroup of `WG_M × WG_N` invocations covers
/// `8·WG_M` output rows (channels) by `8·WG_N` columns (pixels). The tile shape never changes a
/// result: every output is the same fma chain over k in the same order, whichever workgroup
/// computes it (tests compare the bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TilePolicy {
    /// 128 × 128 tiles, halved along a dimension of 64 or less: the fewest, fattest workgroups
    /// (what CPU adapters run best, where a workgroup is a loop on one core).
    Fixed,
    /// [`TilePolicy::Fixed`]'s tile, then halved (down to 32 rows or columns, never below 32
    /// invocations) while the launch has fewer than [`TARGET_WORKGROUPS`] workgroups and
    /// halving adds some: small layers (a 32×32 U-Net at batch 1, a 4×4 mid block) spread over
    /// more of a large GPU's multiprocessors.
    Adaptive,
}

/// Workgroups [`TilePolicy::Adaptive`] aims for: about two per multiprocessor of a large GPU
/// (an H100 has 132). wgpu does not report the multiprocessor count, so this is a constant.
pub const TARGET_WORKGROUPS: usize = 256;

impl TilePolicy {
    /// Parses `auto` (`None`), `fixed` or `adaptive` (case-insensitive); `what` names the
    /// variable. `auto`: adaptive on GPUs, fixed on CPU adapters.
    pub fn parse(what: &str, value: Option<&str>, device_type: wgpu::DeviceType) -> Result<Self> {
        let auto = if device_type == wgpu::DeviceType::Cpu {
            TilePolicy::Fixed
        } else {
            TilePolicy::Adaptive
        };
        match value.map(|v| v.trim().to_lowercase()).as_deref() {
            None | Some("auto") | Some("") => Ok(auto),
            Some("fixed") => Ok(TilePolicy::Fixed),
            Some("adaptive") => Ok(TilePolicy::Adaptive),
            Some(_) => Err(Error::BadGpuOption {
                name: what.into(),
                value: value.unwrap_or_default().to_string(),
                expected: "auto, fixed or adaptive".into(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TilePolicy::Fixed => "fixed",
            TilePolicy::Adaptive => "adaptive",
        }
    }

    /// `(WG_M, WG_N)` for a `batch` of `m × n` outputs. `WG_M` stays even (the conv gather needs
    /// it) and `WG_M · WG_N ≥ 32` (one warp).
    pub fn workgroup_shape(self, m: usize, n: usize, batch: usize) -> (u32, u32) {
        let mut wg = (if m > 64 { 16 } else { 8 }, if n > 64 { 16 } else { 8 });
        if self == TilePolicy::Fixed {
            return wg;
        }
        let count = |(wm, wn): (u32, u32)| {
            m.div_ceil(8 * wm as usize) * n.div_ceil(8 * wn as usize) * batch.max(1)
        };
        while count(wg) < TARGET_WORKGROUPS {
            let halve_m = (wg.0 / 2, wg.1);
            let halve_n = (wg.0, wg.1 / 2);
            let allowed = |(wm, wn): (u32, u32)| wm >= 4 && wn >= 4 && wm * wn >= 32;
            let best = [halve_m, halve_n]
                .into_iter()
                .filter(|&c| allowed(c) && count(c) > count(wg))
                // On a tie keep the wider pixel side (contiguous loads and stores).
                .max_by_key(|&c| (count(c), c.1));
            match best {
                Some(next) => wg = next,
                None => break,
            }
        }
        wg
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tile_policy_shapes() {
        use super::TilePolicy::{Adaptive, Fixed};
        // Fixed: 128 × 128, halved along a dimension of ≤ 64.
        assert_eq!(Fixed.workgroup_shape(128, 1024, 1), (16, 16));
        assert_eq!(Fixed.workgroup_shape(64, 4096, 1), (8, 16));
        // cifar10-32 at batch 1: 128 channels × 32² pixels is 8 fixed tiles; adaptive halves both
        // ways (4 × 8 invocations, 32 × 64 tiles): 4 × 16 = 64 workgroups, the most it can.
        assert_eq!(Adaptive.workgroup_shape(128, 1024, 1), (4, 8));
        // Large layers keep the big tiles.
        assert_eq!(Adaptive.workgroup_shape(512, 65536, 1), (16, 16));
        // A batch of attention products already fills the target.
        assert_eq!(Adaptive.workgroup_shape(256, 256, 64), (16, 16));
        for (m, n, b) in [
            (1, 1, 1),
            (7, 3000, 1),
            (3000, 7, 2),
            (256, 16, 1),
            (320, 4096, 2),
        ] {
            let (wm, wn) = Adaptive.workgroup_shape(m, n, b);
            assert!(
                wm % 2 == 0 && wm >= 4 && wn >= 4 && wm * wn >= 32,
                "{m}x{n}: {wm}x{wn}"
            );
            let (fm, fn_) = Fixed.workgroup_shape(m, n, b);
            assert!(
                wm <= fm && wn <= fn_,
                "{m}x{n}: adaptive {wm}x{wn} above fixed"
            );
        }
    }

    #[test]
    fn tile_policy_parse() {
        use wgpu::DeviceType::{Cpu, DiscreteGpu};
        let what = "WGPU_DIFFUSION_TILES";
        assert_eq!(
            TilePolicy::parse(what, None, Cpu).ok(),
            Some(TilePolicy::Fixed)
        );
        assert_eq!(
            TilePolicy::parse(what, None, DiscreteGpu).ok(),
            Some(TilePolicy::Adaptive)
        );
        assert_eq!(
            TilePolicy::parse(what, Some("Fixed"), DiscreteGpu).ok(),
            Some(TilePolicy::Fixed)
        );
        assert_eq!(
            TilePolicy::parse(what, Some("adaptive"), Cpu).ok(),
            Some(TilePolicy::Adaptive)
        );
        let err = TilePolicy::parse(what, Some("small"), Cpu)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(what) && err.contains("small") && err.contains("adaptive"),
            "{err}"
        );
    }

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
