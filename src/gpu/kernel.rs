//! The kernel registry: one [`kernels!`] line per `shaders/X.wgsl` generates the [`Kernel`]
//! variant, its name (file stem and pipeline label), its `include_str!` source, its entry-point
//! constants ([`entry`]) and the links to its launcher `src/ops/X.rs` (whose `UNIFORMS` and
//! `FLAGS` the layout test compares with the shader), as candle-metal-kernels does with its
//! one-line kernel declarations. File, variant and label agree by construction:
//! `group_norm.wgsl` ↔ `Kernel::GroupNorm` ↔ `"group_norm"` ↔ `src/ops/group_norm.rs`.

use crate::gpu::uniform::UniformLayout;

/// One compute entry point of one kernel: what a pipeline is compiled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPoint {
    pub kernel: Kernel,
    /// The `@compute fn` name in the shader.
    pub name: &'static str,
}

impl std::fmt::Display for EntryPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kernel.name(), self.name)
    }
}

/// `Variant(file_stem) { CONST = "entry", ... }` per kernel, in registry order.
macro_rules! kernels {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident($module:ident) { $( $entry:ident = $entry_name:literal ),+ $(,)? }
    ),+ $(,)?) => {
        /// One `.wgsl` file of the `shaders/` folder.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kernel {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl Kernel {
            /// Every kernel, in registry order (validation tests, warm-up).
            pub const ALL: [Kernel; [$(stringify!($variant)),+].len()] = [
                $( Kernel::$variant, )+
            ];

            /// The file stem and pipeline label.
            pub fn name(self) -> &'static str {
                match self {
                    $( Kernel::$variant => stringify!($module), )+
                }
            }

            /// The WGSL source, compiled into the binary.
            pub fn source(self) -> &'static str {
                match self {
                    $( Kernel::$variant =>
                        include_str!(concat!("../../shaders/", stringify!($module), ".wgsl")), )+
                }
            }

            /// The shader's path relative to the crate root.
            pub fn shader_path(self) -> &'static str {
                match self {
                    $( Kernel::$variant => concat!("shaders/", stringify!($module), ".wgsl"), )+
                }
            }

            /// The launcher's path relative to the crate root (`src/ops/X.rs`).
            pub fn launcher_path(self) -> &'static str {
                match self {
                    $( Kernel::$variant => concat!("src/ops/", stringify!($module), ".rs"), )+
                }
            }

            /// Every entry point the launcher uses.
            pub fn entry_points(self) -> &'static [EntryPoint] {
                match self {
                    $( Kernel::$variant => &[ $( entry::$module::$entry, )+ ], )+
                }
            }

            /// The parameter blocks the launcher declares (`UNIFORMS` of `src/ops/X.rs`).
            pub fn uniforms(self) -> &'static [UniformLayout] {
                match self {
                    $( Kernel::$variant => crate::ops::$module::UNIFORMS, )+
                }
            }

            /// The flag bits the launcher declares (`FLAGS` of `src/ops/X.rs`), by name.
            pub fn flags(self) -> &'static [(&'static str, u32)] {
                match self {
                    $( Kernel::$variant => crate::ops::$module::FLAGS, )+
                }
            }
        }

        /// Entry-point constants, one module per kernel: `entry::group_norm::MAIN`.
        pub mod entry {
            $(
                #[doc = concat!("Entry points of `shaders/", stringify!($module), ".wgsl`.")]
                pub mod $module {
                    use crate::gpu::kernel::{EntryPoint, Kernel};
                    $(
                        #[doc = concat!("`fn ", $entry_name, "`.")]
                        pub const $entry: EntryPoint = EntryPoint {
                            kernel: Kernel::$variant,
                            name: $entry_name,
                        };
                    )+
                }
            )+
        }
    };
}

kernels! {
    /// Implicit-GEMM 2-D convolution with fused bias / per-sample bias / residual epilogue.
    Conv2d(conv2d) { MAIN = "main" },
    /// The same convolution shaped for CPU adapters (subgroup broadcasts, no barriers).
    Conv2dCpu(conv2d_cpu) { K3R2 = "k3r2", K3 = "k3", K1 = "k1", K3S2 = "k3s2", K3S2T = "k3s2t", K3R2U = "k3r2u" },
    /// Strided batched matrix multiply (linear layers, attention scores and values).
    Matmul(matmul) { MAIN = "main" },
    /// The same matmul shaped for CPU adapters (subgroup broadcasts, no barriers).
    MatmulCpu(matmul_cpu) { MAIN = "main" },
    /// Group normalisation with optional fused SiLU (whole, or per row band in two passes).
    GroupNorm(group_norm) { MAIN = "main", BAND_PARTIAL = "band_partial", BAND_APPLY = "band_apply" },
    /// The same group norm shaped for CPU adapters (one subgroup per group, no barriers).
    GroupNormCpu(group_norm_cpu) { MAIN = "main" },
    /// Row softmax (attention probabilities).
    Softmax(softmax) { MAIN = "main" },
    /// The same row softmax shaped for CPU adapters (one subgroup per row, no barriers).
    SoftmaxCpu(softmax_cpu) { MAIN = "main" },
    /// Pointwise ops: SiLU, add, affine, concat, embedding lookup, channel slice, row copy.
    Elementwise(elementwise) {
        SILU = "silu",
        ADD = "add",
        AFFINE = "affine",
        CONCAT_CHANNELS = "concat_channels",
        EMBEDDING_ADD = "embedding_add",
        SLICE_CHANNELS = "slice_channels",
        COPY_ROWS = "copy_rows",
    },
    /// Nearest-neighbour ×2 upsampling.
    Upsample(upsample) { MAIN = "main" },
    /// Nearest-codebook vector quantisation (VQModel decode).
    VqQuantize(vq_quantize) { MAIN = "main" },
    /// Sinusoidal timestep embedding of float timesteps.
    TimestepEmbedding(timestep_embedding) { MAIN = "main" },
    /// Counter-based Philox 4x32-10 normal noise keyed by (seed, image, step, element).
    Rng(rng) { NORMAL = "normal", PHILOX_U32 = "philox_u32", BOX_MULLER_U32 = "box_muller_u32" },
    /// The per-step update rule of every sampler.
    SamplerStep(sampler_step) { STEP = "step", INIT = "init" },
    /// The exact denoiser of a Gaussian data set (a known-answer model for sampler tests).
    AnalyticModel(analytic_model) { GAUSSIAN = "gaussian" },
    /// Layer normalisation over the last dimension (CLIP text encoder).
    LayerNorm(layer_norm) { MAIN = "main" },
    /// The same layer norm shaped for CPU adapters (one subgroup per row, no barriers).
    LayerNormCpu(layer_norm_cpu) { MAIN = "main" },
    /// Causal row softmax of square attention-score blocks (CLIP text encoder).
    CausalSoftmax(causal_softmax) { MAIN = "main" },
    /// The CLIP MLP activations (quick_gelu, the exact erf gelu) and diffusers' GEGLU.
    Activation(activation) { QUICK_GELU = "quick_gelu", GELU = "gelu", GEGLU = "geglu" },
    /// Whether a tensor holds NaN / ±inf, and after which inference step it first did.
    NonFinite(non_finite) { MAIN = "main" },
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
