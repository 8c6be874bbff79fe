//! The kernel registry: every WGSL source compiled into the binary with `include_str!`, behind an
//! enum whose variant, file name and pipeline label agree (`group_norm.wgsl` ↔
//! `Kernel::GroupNorm` ↔ `"group_norm"`), as candle-metal-kernels does.

/// One `.wgsl` file of the `shaders/` folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Implicit-GEMM 2-D convolution with fused bias / per-sample bias / residual epilogue.
    Conv2d,
    /// Strided batched matrix multiply (linear layers, attention scores and values).
    Matmul,
    /// Group normalisation with optional fused SiLU.
    GroupNorm,
    /// Row softmax (attention probabilities).
    Softmax,
    /// Pointwise ops: SiLU, add, scale, concat, copy, embedding lookup.
    Elementwise,
    /// Nearest-neighbour ×2 upsampling.
    Upsample,
    /// Sinusoidal timestep embedding of float timesteps.
    TimestepEmbedding,
    /// Counter-based Philox 4x32-10 normal noise keyed by (seed, image, step, element).
    Rng,
    /// The per-step update rule of every sampler.
    SamplerStep,
    /// The exact denoiser of a Gaussian data set (a known-answer model for sampler tests).
    AnalyticModel,
}

impl Kernel {
    /// Every kernel, for validation tests and warm-up.
    pub const ALL: [Kernel; 10] = [
        Kernel::Conv2d,
        Kernel::Matmul,
        Kernel::GroupNorm,
        Kernel::Softmax,
        Kernel::Elementwise,
        Kernel::Upsample,
        Kernel::TimestepEmbedding,
        Kernel::Rng,
        Kernel::SamplerStep,
        Kernel::AnalyticModel,
    ];

    /// The file stem and pipeline label.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Conv2d => "conv2d",
            Kernel::Matmul => "matmul",
            Kernel::GroupNorm => "group_norm",
            Kernel::Softmax => "softmax",
            Kernel::Elementwise => "elementwise",
            Kernel::Upsample => "upsample",
            Kernel::TimestepEmbedding => "timestep_embedding",
            Kernel::Rng => "rng",
            Kernel::SamplerStep => "sampler_step",
            Kernel::AnalyticModel => "analytic_model",
        }
    }

    /// The WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            Kernel::Conv2d => include_str!("../../shaders/conv2d.wgsl"),
            Kernel::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Kernel::GroupNorm => include_str!("../../shaders/group_norm.wgsl"),
            Kernel::Softmax => include_str!("../../shaders/softmax.wgsl"),
            Kernel::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            Kernel::Upsample => include_str!("../../shaders/upsample.wgsl"),
            Kernel::TimestepEmbedding => include_str!("../../shaders/timestep_embedding.wgsl"),
            Kernel::Rng => include_str!("../../shaders/rng.wgsl"),
            Kernel::SamplerStep => include_str!("../../shaders/sampler_step.wgsl"),
            Kernel::AnalyticModel => include_str!("../../shaders/analytic_model.wgsl"),
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
