//! The static forward graph every model records once per (batch, resolution): blocks add ops
//! that read and write symbolic [`Value`]s; nothing is allocated while recording. [`Graph::plan`]
//! then runs the liveness planner ([`crate::gpu::planner`]) over the values' lifetimes, and
//! [`Graph::finish`] allocates one buffer per planned slot and builds every dispatch against
//! the tensors the plan assigned. Recording without finishing sizes a batch without touching
//! the GPU.

use crate::error::{Error, Result};
use crate::gpu::planner::{self, Interval, MemoryPlan};
use crate::gpu::{Dispatch, GpuContext, Tensor};

/// A value of the graph: an input, or the output of one op. Cloning copies the handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    id: usize,
    /// Dimensions, outermost first (NCHW for images, [N, D] for vectors).
    pub shape: Vec<usize>,
}

impl Value {
    /// The handle an op's build closure reads the tensor by.
    pub fn id(&self) -> ValueId {
        ValueId(self.id)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A copyable reference to a [`Value`], captured by op build closures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueId(usize);

/// Where a value's storage comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// A buffer of its own, live for the whole graph (inputs, outputs, kept activations).
    Dedicated,
    /// A slot of the liveness plan.
    Planned,
}

#[derive(Debug)]
struct ValueInfo {
    shape: Vec<usize>,
    label: String,
    storage: Storage,
    /// Index of the op that writes the value (inputs: none).
    written_by: Option<usize>,
    /// Index of the last op that reads it.
    last_read: Option<usize>,
}

/// What an op's build closure sees: the tensor of every value.
pub struct Bound<'g> {
    pub ctx: &'g GpuContext,
    tensors: &'g [Tensor],
}

impl Bound<'_> {
    /// The tensor the plan assigned to `v`.
    pub fn get(&self, v: ValueId) -> &Tensor {
        &self.tensors[v.0]
    }
}

type Build<'a> = Box<dyn FnOnce(&Bound<'_>) -> Result<Dispatch> + 'a>;

struct PendingOp<'a> {
    build: Build<'a>,
}

/// Planned activation memory of a graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// Bytes of the liveness plan's slots plus the dedicated buffers (inputs, outputs, kept
    /// activations): what the graph allocates.
    pub planned_bytes: u64,
    /// Bytes of one buffer per value (the allocation before the planner), for comparison.
    pub unplanned_bytes: u64,
    /// The largest single value (label, bytes), to compare with the binding limit.
    pub largest: (String, u64),
    /// Number of buffers the plan allocates.
    pub buffers: usize,
}

/// The default attention scores budget's cap: 64 MiB.
pub const DEFAULT_ATTENTION_BUDGET_CAP: u64 = 64 << 20;

/// A graph being recorded. `'a` is the lifetime of the weights the op closures borrow.
pub struct Graph<'a> {
    ctx: &'a GpuContext,
    /// The largest value, in bytes: the device's binding limit, or a lower one to plan against.
    binding_limit: u64,
    values: Vec<ValueInfo>,
    ops: Vec<PendingOp<'a>>,
    /// Bytes the attention scores of one chunk may take (see [`Graph::set_attention_budget`]).
    attention_budget: u64,
}

/// A finished graph: the tensor of every value and the dispatches, in order.
pub struct Finished {
    tensors: Vec<Tensor>,
    pub dispatches: Vec<Dispatch>,
    pub memory: MemoryReport,
}

impl Finished {
    /// The tensor of `v`.
    pub fn tensor(&self, v: &Value) -> Tensor {
        self.tensors[v.id].clone()
    }
}

impl<'a> Graph<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Graph {
            ctx,
            binding_limit: ctx.max_binding_bytes(),
            values: Vec::new(),
            ops: Vec::new(),
            attention_budget: Self::default_attention_budget(ctx),
        }
    }

    /// The attention scores budget a new graph starts with: `min(64 MiB, max binding / 2)` of
    /// `ctx`'s device, so a scores chunk always binds and leaves room for the rest of the graph.
    pub fn default_attention_budget(ctx: &GpuContext) -> u64 {
        DEFAULT_ATTENTION_BUDGET_CAP.min(ctx.max_binding_bytes() / 2)
    }

    /// Sets the most bytes one attention scores buffer may take in ops recorded from now on
    /// ([`crate::model::blocks::attention::attention`] chunks its queries and heads to fit).
    /// Tests force it small to exercise the chunked path; a budget below one row of scores
    /// (4 bytes per key) makes recording attention fail with an error naming the budget.
    pub fn set_attention_budget(&mut self, bytes: u64) {
        self.attention_budget = bytes;
    }

    /// The attention scores budget in bytes.
    pub fn attention_budget(&self) -> u64 {
        self.attention_budget
    }

    /// A graph whose values must each fit `limit` bytes (or the device's binding limit when that
    /// is lower): a lowered limit makes a small device's splits happen on any adapter.
    pub fn with_binding_limit(ctx: &'a GpuContext, limit: u64) -> Self {
        let mut graph = Self::new(ctx);
        graph.binding_limit = graph.binding_limit.min(limit);
        // A scores chunk must bind under the lowered limit too.
        graph.attention_budget = graph.attention_budget.min(graph.binding_limit / 2);
        graph
    }

    /// The largest value this graph accepts, in bytes.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// The device the graph is recorded for (its limits bound every value).
    pub fn context(&self) -> &'a GpuContext {
        self.ctx
    }

    fn value(&mut self, shape: &[usize], label: &str, storage: Storage) -> Result<Value> {
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::invalid(label, format!("shape {shape:?} overflows")))?;
        let bytes = (numel.max(1) as u64).saturating_mul(4);
        let limit = self.binding_limit;
        if bytes > limit {
            return Err(Error::BufferTooLarge {
                what: format!("tensor {label} {shape:?}"),
                size: bytes,
                limit,
                adapter: self.ctx.adapter.info.name.clone(),
            });
        }
        self.values.push(ValueInfo {
            shape: shape.to_vec(),
            label: label.to_owned(),
            storage,
            written_by: None,
            last_read: None,
        });
        Ok(Value {
            id: self.values.len() - 1,
            shape: shape.to_vec(),
        })
    }

    /// A graph input the caller writes before each run (its own buffer).
    pub fn input(&mut self, shape: &[usize], label: &str) -> Result<Value> {
        self.value(shape, label, Storage::Dedicated)
    }

    /// Records an op that reads `reads` and writes a new value of `shape` named `label`.
    /// `build` receives the bound tensors and the output tensor and returns the launch; it runs
    /// in [`Graph::finish`], after planning.
    pub fn op<F>(
        &mut self,
        label: &str,
        reads: &[&Value],
        shape: &[usize],
        build: F,
    ) -> Result<Value>
    where
        F: FnOnce(&Bound<'_>, &Tensor) -> Result<Dispatch> + 'a,
    {
        let out = self.value(shape, label, Storage::Planned)?;
        let out_id = out.id();
        self.push(reads, &out, move |b: &Bound<'_>| build(b, b.get(out_id)))?;
        Ok(out)
    }

    /// Records an op that updates `value` in place (reads and writes it).
    pub fn op_in_place<F>(&mut self, value: &Value, reads: &[&Value], build: F) -> Result<()>
    where
        F: FnOnce(&Bound<'_>, &Tensor) -> Result<Dispatch> + 'a,
    {
        let id = value.id();
        let mut all: Vec<&Value> = reads.to_vec();
        all.push(value);
        self.push(&all, value, move |b: &Bound<'_>| build(b, b.get(id)))
    }

    fn push<F>(&mut self, reads: &[&Value], out: &Value, build: F) -> Result<()>
    where
        F: FnOnce(&Bound<'_>) -> Result<Dispatch> + 'a,
    {
        let index = self.ops.len();
        for r in reads {
            let info = self
                .values
                .get_mut(r.id)
                .ok_or_else(|| Error::invalid("graph", "a value from another graph"))?;
            info.last_read = Some(index);
        }
        let info = &mut self.values[out.id];
        if info.written_by.is_none() {
            info.written_by = Some(index);
        }
        self.ops.push(PendingOp {
            build: Box::new(build),
        });
        Ok(())
    }

    /// Keeps `value` alive (its own buffer, never reused) so it can be read after a run: the
    /// graph's output and, for diagnosis, per-block activations.
    pub fn keep(&mut self, value: &Value) {
        if let Some(info) = self.values.get_mut(value.id) {
            info.storage = Storage::Dedicated;
        }
    }

    fn bytes(info: &ValueInfo) -> u64 {
        info.shape.iter().product::<usize>().max(1) as u64 * 4
    }

    /// The liveness intervals of the planned values, and the memory report.
    fn liveness(&self) -> (Vec<usize>, MemoryPlan, MemoryReport) {
        let planned: Vec<usize> = (0..self.values.len())
            .filter(|&i| self.values[i].storage == Storage::Planned)
            .collect();
        let intervals: Vec<Interval> = planned
            .iter()
            .map(|&i| {
                let v = &self.values[i];
                let first = v.written_by.unwrap_or(0);
                Interval {
                    bytes: Self::bytes(v),
                    first,
                    last: v.last_read.unwrap_or(first).max(first),
                }
            })
            .collect();
        let plan = planner::plan(&intervals);
        let dedicated: u64 = self
            .values
            .iter()
            .filter(|v| v.storage == Storage::Dedicated)
            .map(Self::bytes)
            .sum();
        let mut largest = (String::new(), 0);
        for v in &self.values {
            if Self::bytes(v) > largest.1 {
                largest = (v.label.clone(), Self::bytes(v));
            }
        }
        let report = MemoryReport {
            planned_bytes: plan.total_bytes() + dedicated,
            unplanned_bytes: self.values.iter().map(Self::bytes).sum(),
            largest,
            buffers: plan.slot_bytes.len()
                + self
                    .values
                    .iter()
                    .filter(|v| v.storage == Storage::Dedicated)
                    .count(),
        };
        (planned, plan, report)
    }

    /// The memory the graph would allocate, without allocating it.
    pub fn plan(&self) -> MemoryReport {
        self.liveness().2
    }

    /// Allocates the planned buffers and builds every dispatch.
    pub fn finish(self) -> Result<Finished> {
        let (planned, plan, memory) = self.liveness();
        let ctx = self.ctx;
        let slots: Vec<Tensor> = plan
            .slot_bytes
            .iter()
            .enumerate()
            .map(|(s, &bytes)| {
                Tensor::zeros(
                    ctx,
                    &[(bytes / 4) as usize],
                    &format!("activation slot {s}"),
                )
            })
            .collect::<Result<_>>()?;
        let mut slot_of_value = vec![None; self.values.len()];
        for (k, &i) in planned.iter().enumerate() {
            slot_of_value[i] = Some(plan.slot_of[k]);
        }
        let tensors: Vec<Tensor> = self
            .values
            .iter()
            .zip(&slot_of_value)
            .map(|(v, slot)| match slot {
                Some(s) => Ok(Tensor {
                    buffer: slots[*s].buffer.clone(),
                    shape: v.shape.clone(),
                }),
                None => Tensor::zeros(ctx, &v.shape, &v.label),
            })
            .collect::<Result<_>>()?;
        let bound = Bound {
            ctx,
            tensors: &tensors,
        };
        let dispatches = self
            .ops
            .into_iter()
            .map(|op| (op.build)(&bound))
            .collect::<Result<Vec<_>>>()?;
        Ok(Finished {
            tensors,
            dispatches,
            memory,
        })
    }
}
