//! A GPU tensor: one f32 storage buffer and its shape (row-major, NCHW for images).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;

/// An f32 tensor in a storage buffer. Cloning shares the buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub buffer: Arc<wgpu::Buffer>,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn byte_size(ctx: &GpuContext, shape: &[usize], label: &str) -> Result<u64> {
    let numel: usize = shape.iter().product();
    // Zero-sized bindings are invalid; keep one element so an empty tensor is still bindable.
    let bytes = (numel.max(1) as u64) * 4;
    let limit = ctx.max_binding_bytes();
    if bytes > limit {
        return Err(Error::BufferTooLarge {
            what: format!("tensor {label} {shape:?}"),
            size: bytes,
            limit,
            adapter: ctx.adapter.info.name.clone(),
        });
    }
    Ok(bytes)
}

impl Tensor {
    /// A zero-filled tensor.
    pub fn zeros(ctx: &GpuContext, shape: &[usize], label: &str) -> Result<Tensor> {
        let size = byte_size(ctx, shape, label)?;
        let buffer = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
        })
    }

    /// A tensor holding `data` (whose length must match `shape`).
    pub fn from_slice(
        ctx: &GpuContext,
        shape: &[usize],
        data: &[f32],
        label: &str,
    ) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(Error::invalid(
                format!("tensor {label}"),
                format!(
                    "{} values for shape {shape:?} ({numel} elements)",
                    data.len()
                ),
            ));
        }
        byte_size(ctx, shape, label)?;
        let contents: &[u8] = if data.is_empty() {
            &[0u8; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        let buffer = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: USAGE,
        });
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
        })
    }

    /// The tensors stacked along their outermost dimension (`torch.cat(parts, dim=0)`), copied on
    /// the device: weights fused at load (the q/k/v projections of one attention, every resnet's
    /// time-embedding projection) so that one launch computes what several did. Every part must
    /// share the inner dimensions.
    pub fn concat_outer(ctx: &GpuContext, parts: &[&Tensor], label: &str) -> Result<Tensor> {
        let Some(first) = parts.first() else {
            return Err(Error::invalid(
                format!("concat {label}"),
                "no tensors to concatenate",
            ));
        };
        let inner = first.shape.get(1..).unwrap_or(&[]);
        let mut outer = 0;
        for part in parts {
            match part.shape.split_first() {
                Some((&rows, rest)) if rest == inner => outer += rows,
                _ => {
                    return Err(Error::invalid(
                        format!("concat {label}"),
                        format!(
                            "shapes {:?} and {:?} differ past the outermost dimension",
                            first.shape, part.shape
                        ),
                    ))
                }
            }
        }
        let mut shape = vec![outer];
        shape.extend_from_slice(inner);
        let out = Tensor::zeros(ctx, &shape, label)?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        let mut offset = 0;
        for part in parts {
            if part.numel() > 0 {
                encoder.copy_buffer_to_buffer(&part.buffer, 0, &out.buffer, offset, part.bytes());
            }
            offset += part.bytes();
        }
        ctx.queue.submit([encoder.finish()]);
        Ok(out)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// Overwrites the contents (queued; ordered before later submissions).
    pub fn write(&self, ctx: &GpuContext, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::invalid(
                "tensor write",
                format!("{} values for shape {:?}", data.len(), self.shape),
            ));
        }
        if !data.is_empty() {
            ctx.queue
                .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Copies the tensor back to the CPU, waiting for all submitted work. This is the one sync
    /// point of a run.
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let numel = self.numel();
        if numel == 0 {
            return Ok(Vec::new());
        }
        let size = numel as u64 * 4;
        let staging = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, size);
        ctx.queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            // The receiver outlives the poll below; a send error only means nobody listens.
            let _ = sender.send(result);
        });
        ctx.wait()?;
        receiver
            .recv()
            .map_err(|e| Error::gpu("readback", e))?
            .map_err(|e| Error::gpu("readback", e))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::gpu("readback", e))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}
