//! Launchers for every GPU kernel, one file per `shaders/X.wgsl` (`src/ops/X.rs`, named in the
//! shader's header): each takes one args struct, validates shapes, fills the kernel's parameter
//! block (declared with `uniform_struct!`, with its `UNIFORMS` and `FLAGS` lists for the layout
//! test) and returns a [`Dispatch`](crate::gpu::Dispatch) to be recorded (once per graph, replayed
//! every forward). The matching CPU references live in [`crate::reference`].

pub mod activation;
pub mod analytic_model;
pub mod causal_softmax;
pub mod conv2d;
pub mod conv2d_cpu;
pub mod elementwise;
pub mod group_norm;
pub mod group_norm_cpu;
pub mod layer_norm;
pub mod layer_norm_cpu;
pub mod matmul;
pub mod matmul_cpu;
pub mod non_finite;
pub mod rng;
pub mod sampler_step;
pub mod softmax;
pub mod softmax_cpu;
pub mod timestep_embedding;
pub mod upsample;
pub mod vq_quantize;

/// The launch shared by the CPU-shaped row kernels (`group_norm_cpu`, `softmax_cpu`,
/// `layer_norm_cpu`): one 8-lane subgroup per item, 8 items per 64-invocation workgroup, no
/// override constants; an empty tensor launches nothing.
pub(crate) fn per_subgroup<P: bytemuck::Pod>(
    ctx: &crate::gpu::GpuContext,
    entry: crate::gpu::EntryPoint,
    items: u64,
    empty: bool,
    (storage, params): (&[&wgpu::Buffer], &P),
    flops: u64,
    label: &str,
) -> crate::error::Result<crate::gpu::Dispatch> {
    const ITEMS_PER_WORKGROUP: u64 = 64 / crate::gpu::shape::CPU_SUBGROUP as u64;
    let workgroups = if empty {
        [0, 1, 1]
    } else {
        crate::gpu::grid(ctx, items.div_ceil(ITEMS_PER_WORKGROUP))?
    };
    crate::gpu::Dispatch::new(
        ctx,
        &crate::gpu::DispatchArgs {
            entry,
            constants: &[],
            label,
            storage,
            params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(flops))
}
