//! A recorded kernel launch: pipeline + bind group + grid, built once when a graph is planned and
//! replayed every forward pass. Uniform parameter blocks live in their own buffer per dispatch.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::Kernel;

/// One kernel launch, ready to record.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// `kernel/entry: what` — shown in GPU captures and per-kernel timings.
    pub label: String,
    pub kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// Workgroup counts (x, y, z); see [`grid`] for the 2-D split of large launches.
    pub workgroups: [u32; 3],
    /// Floating-point operations this launch performs (2 per multiply-add), for GFLOP/s reports.
    pub flops: u64,
    /// Sum of the sizes of the storage buffers bound (inputs, weights, output): the bytes the
    /// launch moves if it touches each bound buffer once — the bench's GB/s estimate.
    pub bound_bytes: u64,
}

/// A uniform buffer holding one `#[repr(C)]` parameter block.
#[derive(Debug, Clone)]
pub struct ParamsBuffer(pub Arc<wgpu::Buffer>);

impl ParamsBuffer {
    /// Uploads `params` into a new uniform buffer.
    pub fn new<P: bytemuck::Pod>(ctx: &GpuContext, label: &str, params: &P) -> Self {
        ParamsBuffer(Arc::new(ctx.device.create_buffer_init(
            &wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            },
        )))
    }
}

impl Dispatch {
    /// Builds a launch of `kernel`'s `entry_point`. `storage[i]` is bound at `@binding(i)` and the
    /// parameter block at `@binding(storage.len())` (inputs, weights, output, params — the
    /// shader's declaration order). Every entry point must use all of its bindings, because
    /// pipelines use wgpu's automatic layout.
    #[allow(clippy::too_many_arguments)]
    pub fn new<P: bytemuck::Pod>(
        ctx: &GpuContext,
        kernel: Kernel,
        entry_point: &'static str,
        constants: &[(&'static str, f64)],
        label: impl Into<String>,
        storage: &[&wgpu::Buffer],
        params: &P,
        workgroups: [u32; 3],
    ) -> Result<Self> {
        let label = format!("{}/{}: {}", kernel.name(), entry_point, label.into());
        let pipeline = ctx.pipeline(kernel, entry_point, constants)?;
        let params = ParamsBuffer::new(ctx, &label, params);
        let mut entries: Vec<wgpu::BindGroupEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: storage.len() as u32,
            resource: params.0.as_entire_binding(),
        });
        let limit = ctx.adapter.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > limit) {
            return Err(Error::invalid(
                label,
                format!(
                    "grid {workgroups:?} exceeds the adapter's {limit} workgroups per dimension"
                ),
            ));
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!("binding {label}"), err));
        }
        Ok(Dispatch {
            label,
            kernel,
            pipeline,
            bind_group,
            workgroups,
            flops: 0,
            bound_bytes: storage.iter().map(|b| b.size()).sum(),
        })
    }

    /// Sets the FLOP count reported for this launch.
    pub fn with_flops(mut self, flops: u64) -> Self {
        self.flops = flops;
        self
    }

    /// Records this launch into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }

    /// Records `dispatches` in order into one compute pass. wgpu inserts the storage-buffer
    /// barriers between dependent dispatches.
    pub fn record_all(encoder: &mut wgpu::CommandEncoder, dispatches: &[&Dispatch]) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-diffusion"),
            timestamp_writes: None,
        });
        for d in dispatches {
            d.record(&mut pass);
        }
    }
}

/// A grid of `workgroups` groups laid out in 2-D when it exceeds the per-dimension limit. Kernels
/// recover the linear index as `wid.x + wid.y * num_workgroups.x` and guard against the overshoot.
pub fn grid(ctx: &GpuContext, workgroups: u64) -> Result<[u32; 3]> {
    let limit = u64::from(
        ctx.adapter
            .limits
            .max_compute_workgroups_per_dimension
            .max(1),
    );
    if workgroups <= limit {
        return Ok([workgroups as u32, 1, 1]);
    }
    let rows = workgroups.div_ceil(limit);
    if rows > limit {
        return Err(Error::invalid(
            "grid",
            format!("{workgroups} workgroups exceed {limit}x{limit}"),
        ));
    }
    Ok([limit as u32, rows as u32, 1])
}
