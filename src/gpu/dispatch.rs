//! A recorded kernel launch: pipeline + bind group + grid, built once when a graph is planned and
//! replayed every forward pass. A launch either owns its parameter block (one small uniform
//! buffer, [`Dispatch::new`]) or reads one slot of a [`UniformTable`] through a dynamic offset
//! into a bind group shared with its siblings ([`Dispatch::shared`]): how a sampling run plans
//! every step's update and noise with one buffer and one bind group per kernel.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{EntryPoint, Kernel};

/// How a storage binding is declared in the shader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// How a pipeline's bind group 0 is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindLayout {
    /// wgpu derives it from the entry point (every declared binding must be used).
    Auto,
    /// Storage bindings `0..n` with these accesses, then the parameter block at binding `n`: a
    /// uniform of `uniform_size` bytes read at a dynamic offset.
    DynamicUniform {
        storage: &'static [Access],
        uniform_size: u64,
    },
}

/// One kernel launch, ready to record.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// `kernel/entry: what` — shown in GPU captures and per-kernel timings.
    pub label: String,
    pub kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// The parameter block's offset into a shared [`UniformTable`], if the launch reads one.
    dynamic_offset: Option<u32>,
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
        ParamsBuffer(Arc::new(ctx.create_buffer_init(
            &wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            },
        )))
    }
}

/// Parameter blocks of one type packed in one uniform buffer, each at a multiple of the
/// adapter's `min_uniform_buffer_offset_alignment`, read through dynamic offsets.
#[derive(Debug, Clone)]
pub struct UniformTable {
    buffer: Arc<wgpu::Buffer>,
    /// Bytes from one block to the next.
    stride: u64,
    /// Bytes of one block (the binding size).
    block: u64,
    len: usize,
}

impl UniformTable {
    /// Uploads `blocks` into one new uniform buffer.
    pub fn new<P: bytemuck::Pod>(ctx: &GpuContext, label: &str, blocks: &[P]) -> Result<Self> {
        let block = std::mem::size_of::<P>() as u64;
        let align = u64::from(
            ctx.adapter
                .limits
                .min_uniform_buffer_offset_alignment
                .max(1),
        );
        let stride = block.div_ceil(align) * align;
        if blocks.is_empty() {
            return Err(Error::invalid(
                format!("uniform table {label}"),
                "no parameter blocks",
            ));
        }
        let size = stride * blocks.len() as u64;
        let last_offset = stride * (blocks.len() as u64 - 1);
        if size > ctx.adapter.limits.max_buffer_size || u32::try_from(last_offset).is_err() {
            return Err(Error::invalid(
                format!("uniform table {label}"),
                format!(
                    "{} blocks of {stride} bytes ({size} bytes) exceed the adapter's buffer size \
                     limit {} or the 32-bit dynamic offset",
                    blocks.len(),
                    ctx.adapter.limits.max_buffer_size
                ),
            ));
        }
        let mut bytes = vec![0u8; size as usize];
        for (i, b) in blocks.iter().enumerate() {
            let start = i * stride as usize;
            bytes[start..start + block as usize].copy_from_slice(bytemuck::bytes_of(b));
        }
        let buffer = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
        Ok(UniformTable {
            buffer: Arc::new(buffer),
            stride,
            block,
            len: blocks.len(),
        })
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no block (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The dynamic offset of block `slot`.
    pub fn offset(&self, slot: usize) -> Result<u32> {
        if slot >= self.len {
            return Err(Error::invalid(
                "uniform table",
                format!("slot {slot} of a table of {} blocks", self.len),
            ));
        }
        u32::try_from(slot as u64 * self.stride).map_err(|_| {
            Error::invalid(
                "uniform table",
                format!("slot {slot} lies past the 32-bit dynamic offset range"),
            )
        })
    }

    /// Bytes of one block.
    pub fn block_size(&self) -> u64 {
        self.block
    }
}

/// What [`Dispatch::new`] needs: the entry point, its override constants, the storage buffers
/// (`storage[i]` at `@binding(i)`), the parameter block (at `@binding(storage.len())`: inputs,
/// weights, output, params — the shader's declaration order) and the grid.
pub struct DispatchArgs<'a, P> {
    pub entry: EntryPoint,
    pub constants: &'a [(&'static str, f64)],
    /// What this launch computes (`down_blocks.0.resnets.1.conv1`).
    pub label: &'a str,
    pub storage: &'a [&'a wgpu::Buffer],
    pub params: &'a P,
    pub workgroups: [u32; 3],
}

/// What [`SharedBindings::new`] needs.
pub struct SharedBindingsArgs<'a> {
    /// The shader's declared access of each storage binding, in binding order.
    pub access: &'static [Access],
    /// `storage[i]` at `@binding(i)`.
    pub storage: &'a [&'a wgpu::Buffer],
    /// Bound at `@binding(storage.len())` with a dynamic offset.
    pub table: &'a UniformTable,
    pub label: &'a str,
}

/// A bind group whose parameter block is one slot of a [`UniformTable`], picked per launch with a
/// dynamic offset: built once, shared by every launch that differs only in its parameters.
#[derive(Debug, Clone)]
pub struct SharedBindings {
    layout: BindLayout,
    bind_group: wgpu::BindGroup,
    table: UniformTable,
    bound_bytes: u64,
}

impl SharedBindings {
    pub fn new(ctx: &GpuContext, args: &SharedBindingsArgs) -> Result<Self> {
        let label = args.label;
        if args.storage.len() != args.access.len() {
            return Err(Error::invalid(
                label,
                format!(
                    "{} storage buffers for a layout of {} storage bindings",
                    args.storage.len(),
                    args.access.len()
                ),
            ));
        }
        let layout = BindLayout::DynamicUniform {
            storage: args.access,
            uniform_size: args.table.block,
        };
        let bgl = ctx
            .bind_group_layout(layout)?
            .ok_or_else(|| Error::invalid(label, "a shared bind group needs an explicit layout"))?;
        let mut entries = storage_entries(args.storage);
        entries.push(wgpu::BindGroupEntry {
            binding: args.storage.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &args.table.buffer,
                offset: 0,
                size: wgpu::BufferSize::new(args.table.block),
            }),
        });
        let bind_group = create_bind_group(ctx, label, &bgl, &entries)?;
        Ok(SharedBindings {
            layout,
            bind_group,
            table: args.table.clone(),
            bound_bytes: args.storage.iter().map(|b| b.size()).sum(),
        })
    }
}

/// What [`Dispatch::shared`] needs: [`DispatchArgs`] with the parameter block replaced by a slot
/// of the shared bindings' table.
pub struct SharedDispatchArgs<'a> {
    pub entry: EntryPoint,
    pub constants: &'a [(&'static str, f64)],
    pub label: &'a str,
    pub bindings: &'a SharedBindings,
    /// Which block of the bindings' [`UniformTable`] this launch reads.
    pub slot: usize,
    pub workgroups: [u32; 3],
}

fn check_grid(ctx: &GpuContext, label: &str, workgroups: [u32; 3]) -> Result<()> {
    let limit = ctx.adapter.limits.max_compute_workgroups_per_dimension;
    if workgroups.iter().any(|&w| w > limit) {
        return Err(Error::invalid(
            label,
            format!("grid {workgroups:?} exceeds the adapter's {limit} workgroups per dimension"),
        ));
    }
    Ok(())
}

/// `storage[i]` bound whole at `@binding(i)`.
fn storage_entries<'b>(storage: &[&'b wgpu::Buffer]) -> Vec<wgpu::BindGroupEntry<'b>> {
    storage
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect()
}

fn create_bind_group(
    ctx: &GpuContext,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    entries: &[wgpu::BindGroupEntry],
) -> Result<wgpu::BindGroup> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let bind_group = ctx.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries,
    });
    if let Some(err) = pollster::block_on(scope.pop()) {
        return Err(Error::gpu(format!("binding {label}"), err));
    }
    Ok(bind_group)
}

impl Dispatch {
    /// Builds a launch of `args.entry` with its own parameter buffer and bind group. Every entry
    /// point must use all of its bindings, because these pipelines use wgpu's automatic layout.
    pub fn new<P: bytemuck::Pod>(ctx: &GpuContext, args: &DispatchArgs<P>) -> Result<Self> {
        let label = format!("{}: {}", args.entry, args.label);
        let pipeline = ctx.pipeline(args.entry, BindLayout::Auto, args.constants)?;
        check_grid(ctx, &label, args.workgroups)?;
        let params = ParamsBuffer::new(ctx, &label, args.params);
        let mut entries = storage_entries(args.storage);
        entries.push(wgpu::BindGroupEntry {
            binding: args.storage.len() as u32,
            resource: params.0.as_entire_binding(),
        });
        let bind_group =
            create_bind_group(ctx, &label, &pipeline.get_bind_group_layout(0), &entries)?;
        Ok(Dispatch {
            label,
            kernel: args.entry.kernel,
            pipeline,
            bind_group,
            dynamic_offset: None,
            workgroups: args.workgroups,
            flops: 0,
            bound_bytes: args.storage.iter().map(|b| b.size()).sum(),
        })
    }

    /// Builds a launch that reuses `args.bindings` and reads slot `args.slot` of its table:
    /// creates no buffer and no bind group.
    pub fn shared(ctx: &GpuContext, args: &SharedDispatchArgs) -> Result<Self> {
        let label = format!("{}: {}", args.entry, args.label);
        let pipeline = ctx.pipeline(args.entry, args.bindings.layout, args.constants)?;
        check_grid(ctx, &label, args.workgroups)?;
        let offset = args
            .bindings
            .table
            .offset(args.slot)
            .map_err(|e| Error::invalid(&label, e.to_string()))?;
        Ok(Dispatch {
            label,
            kernel: args.entry.kernel,
            pipeline,
            bind_group: args.bindings.bind_group.clone(),
            dynamic_offset: Some(offset),
            workgroups: args.workgroups,
            flops: 0,
            bound_bytes: args.bindings.bound_bytes,
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
        pass.set_bind_group(0, &self.bind_group, self.dynamic_offset.as_slice());
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
