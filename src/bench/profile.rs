//! Per-kernel GPU time of a recorded graph. With `TIMESTAMP_QUERY`, every dispatch is recorded in
//! its own compute pass whose `timestamp_writes` bracket it (the feature needs no
//! `TIMESTAMP_QUERY_INSIDE_PASSES`); without it, every dispatch is submitted alone and timed by
//! the CPU clock around submit + wait, and the report says so.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext};

/// How the per-dispatch times were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TimingSource {
    /// GPU timestamps written at the beginning and end of a one-dispatch compute pass.
    #[serde(rename = "gpu-timestamp")]
    GpuTimestamp,
    /// CPU clock around submitting one dispatch and waiting for it: includes launch and
    /// synchronisation overhead, so small kernels look slower than they are.
    #[serde(rename = "wall-clock")]
    WallClock,
}

impl TimingSource {
    pub fn name(self) -> &'static str {
        match self {
            TimingSource::GpuTimestamp => "gpu-timestamp",
            TimingSource::WallClock => "wall-clock",
        }
    }
}

/// The median time of one dispatch over the profiled passes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DispatchTime {
    pub label: String,
    pub family: String,
    pub ms: f64,
    pub flops: u64,
    pub bytes: u64,
}

/// One kernel family's share of a forward pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FamilyStat {
    /// The kernel family (`conv2d`, `matmul`, `group_norm`, … — the shader file stem).
    pub family: String,
    /// Dispatches of this family per forward pass.
    pub dispatches: usize,
    pub ms: f64,
    /// Fraction of `KernelProfile::total_ms`.
    pub share: f64,
    pub flops: u64,
    /// Sum of the bound storage-buffer sizes of these dispatches (see `Dispatch::bound_bytes`).
    pub bytes: u64,
    pub gflops_per_s: f64,
    pub gb_per_s: f64,
}

/// Per-kernel timing of one forward pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelProfile {
    pub timing: TimingSource,
    /// Profiled forward passes (each dispatch's time is the median over them).
    pub passes: usize,
    /// Sum of the per-dispatch medians.
    pub total_ms: f64,
    /// Kernel families, slowest first.
    pub families: Vec<FamilyStat>,
    /// The slowest dispatches, slowest first (at most [`TOP_DISPATCHES`]).
    pub top: Vec<DispatchTime>,
}

/// How many dispatches `KernelProfile::top` keeps.
pub const TOP_DISPATCHES: usize = 10;

/// wgpu's `QUERY_SET_MAX_QUERIES`, two per dispatch.
const DISPATCHES_PER_QUERY_SET: usize = 4096 / 2;

/// Times every dispatch of `dispatches` (in order, as one forward pass) over `passes` passes.
/// Uses GPU timestamps when the device has `TIMESTAMP_QUERY` and `force_wall_clock` is false.
pub fn profile(
    ctx: &GpuContext,
    dispatches: &[Dispatch],
    passes: usize,
    force_wall_clock: bool,
) -> Result<KernelProfile> {
    let passes = passes.max(1);
    let has_timestamps = ctx
        .device
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY);
    let timing = if has_timestamps && !force_wall_clock {
        TimingSource::GpuTimestamp
    } else {
        TimingSource::WallClock
    };
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(passes); dispatches.len()];
    let mut timestamps = match timing {
        TimingSource::GpuTimestamp => Some(TimestampRecorder::new(ctx, dispatches.len())?),
        TimingSource::WallClock => None,
    };
    for _ in 0..passes {
        let times = match &mut timestamps {
            Some(recorder) => recorder.time(ctx, dispatches)?,
            None => wall_clock(ctx, dispatches)?,
        };
        for (slot, t) in samples.iter_mut().zip(times) {
            slot.push(t);
        }
    }
    let times: Vec<DispatchTime> = dispatches
        .iter()
        .zip(samples)
        .map(|(d, mut s)| DispatchTime {
            label: d.label.clone(),
            family: d.kernel.name().to_owned(),
            ms: median(&mut s),
            flops: d.flops,
            bytes: d.bound_bytes,
        })
        .collect();
    Ok(summarise(timing, passes, times))
}

/// Aggregates per-dispatch times into kernel families and the slowest dispatches.
pub fn summarise(timing: TimingSource, passes: usize, times: Vec<DispatchTime>) -> KernelProfile {
    let total_ms: f64 = times.iter().map(|t| t.ms).sum();
    let mut by_family: BTreeMap<&str, FamilyStat> = BTreeMap::new();
    for t in &times {
        let f = by_family
            .entry(t.family.as_str())
            .or_insert_with(|| FamilyStat {
                family: t.family.clone(),
                dispatches: 0,
                ms: 0.0,
                share: 0.0,
                flops: 0,
                bytes: 0,
                gflops_per_s: 0.0,
                gb_per_s: 0.0,
            });
        f.dispatches += 1;
        f.ms += t.ms;
        f.flops += t.flops;
        f.bytes += t.bytes;
    }
    let mut families: Vec<FamilyStat> = by_family
        .into_values()
        .map(|mut f| {
            f.share = if total_ms > 0.0 { f.ms / total_ms } else { 0.0 };
            f.gflops_per_s = rate(f.flops, f.ms);
            f.gb_per_s = rate(f.bytes, f.ms);
            f
        })
        .collect();
    families.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let mut top = times;
    top.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    top.truncate(TOP_DISPATCHES);
    KernelProfile {
        timing,
        passes,
        total_ms,
        families,
        top,
    }
}

/// `amount / ms` in units of 10⁹ per second (0 when no time was measured).
pub fn rate(amount: u64, ms: f64) -> f64 {
    if ms > 0.0 {
        amount as f64 / (ms * 1e6)
    } else {
        0.0
    }
}

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        0.5 * (values[mid - 1] + values[mid])
    }
}

/// Query sets and readback buffers for timestamping every dispatch of one forward pass.
struct TimestampRecorder {
    /// (query set, resolve buffer, mappable staging buffer, dispatches covered).
    chunks: Vec<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer, usize)>,
    period_ns: f64,
}

impl TimestampRecorder {
    fn new(ctx: &GpuContext, dispatches: usize) -> Result<Self> {
        let mut chunks = Vec::new();
        let mut left = dispatches;
        while left > 0 {
            let n = left.min(DISPATCHES_PER_QUERY_SET);
            left -= n;
            let queries = 2 * n as u32;
            let size = u64::from(queries) * wgpu::QUERY_SIZE as u64;
            let query_set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            });
            let resolve = ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps resolve"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            chunks.push((query_set, resolve, staging, n));
        }
        ctx.check_errors("creating timestamp queries")?;
        Ok(TimestampRecorder {
            chunks,
            period_ns: f64::from(ctx.queue.get_timestamp_period()),
        })
    }

    /// One forward pass, each dispatch in its own timestamped compute pass; milliseconds each.
    fn time(&mut self, ctx: &GpuContext, dispatches: &[Dispatch]) -> Result<Vec<f64>> {
        let covered: usize = self.chunks.iter().map(|c| c.3).sum();
        if covered != dispatches.len() {
            return Err(Error::invalid(
                "bench profile",
                format!(
                    "{} dispatches for timestamps planned for {covered}",
                    dispatches.len()
                ),
            ));
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench profile"),
            });
        let mut start = 0;
        for (query_set, resolve, staging, n) in &self.chunks {
            for (i, d) in dispatches[start..start + n].iter().enumerate() {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&d.label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                d.record(&mut pass);
            }
            encoder.resolve_query_set(query_set, 0..2 * *n as u32, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, staging, 0, resolve.size());
            start += n;
        }
        ctx.queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        for (index, (_, _, staging, _)) in self.chunks.iter().enumerate() {
            let sender = sender.clone();
            staging.map_async(wgpu::MapMode::Read, .., move |result| {
                // The receiver outlives the wait below; a send error only means nobody listens.
                let _ = sender.send((index, result));
            });
        }
        drop(sender);
        ctx.wait()?;
        for (_, result) in receiver.iter() {
            result.map_err(|e| Error::gpu("reading timestamps", e))?;
        }
        let mut out = Vec::with_capacity(dispatches.len());
        for (_, _, staging, _) in &self.chunks {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::gpu("reading timestamps", e))?;
            let ticks: Vec<u64> = view
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect();
            for pair in ticks.chunks_exact(2) {
                // A counter that went backwards (wrap, reset) reads as 0 rather than garbage.
                let elapsed = pair[1].saturating_sub(pair[0]);
                out.push(elapsed as f64 * self.period_ns / 1e6);
            }
            drop(view);
            staging.unmap();
        }
        Ok(out)
    }
}

/// One forward pass, each dispatch submitted alone and waited for; milliseconds each.
fn wall_clock(ctx: &GpuContext, dispatches: &[Dispatch]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(dispatches.len());
    for d in dispatches {
        let start = Instant::now();
        ctx.submit(&[d])?;
        ctx.wait()?;
        out.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}
