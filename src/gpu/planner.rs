//! The activation memory planner: given when each buffer is first written and last read (in
//! dispatch order), assign buffers to shared slots so that two buffers share a slot only when
//! their lifetimes do not overlap — the liveness plan that replaces one buffer per op.
//!
//! Greedy in definition order with best fit: a value takes the smallest free slot that holds it;
//! when none does, the largest free slot grows to fit it (growing never costs more than a new
//! slot of the value's size), and only with no free slot at all is a new slot opened. The plan is
//! pure data, so it can size a batch before anything is allocated on the GPU.

use crate::gpu::AdapterSummary;

/// Memory a run may plan for (activations, sampler state) when the caller sets no budget. wgpu
/// does not report an adapter's memory, so: half the machine's available memory for a CPU
/// adapter (llvmpipe / lavapipe allocate from it), 4 GiB for a discrete GPU, 1 GiB otherwise
/// (integrated and virtual adapters share memory with the system).
pub fn default_memory_budget(adapter: &AdapterSummary) -> u64 {
    const GIB: u64 = 1 << 30;
    match adapter.info.device_type {
        wgpu::DeviceType::Cpu => available_memory().map_or(2 * GIB, |bytes| bytes / 2),
        wgpu::DeviceType::DiscreteGpu => 4 * GIB,
        _ => GIB,
    }
}

/// `MemAvailable` of `/proc/meminfo`, where there is one.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The largest `n` in `1..=max` for which `fits(n)` holds, assuming it holds for every smaller
/// `n` once it holds for one (memory grows with the batch); 0 when even `fits(1)` fails. Bisects,
/// so a planner is asked O(log max) times.
pub fn largest_fitting<E>(
    max: usize,
    mut fits: impl FnMut(usize) -> std::result::Result<bool, E>,
) -> std::result::Result<usize, E> {
    if max == 0 || !fits(1)? {
        return Ok(0);
    }
    // Invariant: `lo` fits; everything above `hi` does not (or is past `max`).
    let (mut lo, mut hi) = (1, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// One buffer's size and lifetime: written by dispatch `first`, last read by dispatch `last`
/// (`last >= first`; a value read by nothing has `last == first`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub bytes: u64,
    pub first: usize,
    pub last: usize,
}

/// The slot each interval lives in and each slot's size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryPlan {
    /// `slot_of[i]`: the slot of interval `i`.
    pub slot_of: Vec<usize>,
    /// Bytes of each slot (the largest interval it ever holds).
    pub slot_bytes: Vec<u64>,
}

impl MemoryPlan {
    /// Bytes of all slots together: the planned peak activation memory.
    pub fn total_bytes(&self) -> u64 {
        self.slot_bytes.iter().sum()
    }
}

/// Plans `intervals` (see the module doc). Intervals are visited by `first`, ties in index
/// order, so the plan is deterministic.
pub fn plan(intervals: &[Interval]) -> MemoryPlan {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&i| (intervals[i].first, i));
    let mut slot_of = vec![0usize; intervals.len()];
    let mut slot_bytes: Vec<u64> = Vec::new();
    // Per slot: the last dispatch that reads its current occupant.
    let mut busy_until: Vec<usize> = Vec::new();
    for &i in &order {
        let v = intervals[i];
        // A slot is free for `v` once its occupant's last reader ran strictly before `v` is
        // written (a dispatch never writes a buffer it also reads through another value).
        let free = (0..slot_bytes.len()).filter(|&s| busy_until[s] < v.first);
        let fitting = free
            .clone()
            .filter(|&s| slot_bytes[s] >= v.bytes)
            .min_by_key(|&s| (slot_bytes[s], s));
        let slot = match fitting {
            Some(s) => s,
            None => match free.max_by_key(|&s| (slot_bytes[s], std::cmp::Reverse(s))) {
                Some(s) => {
                    slot_bytes[s] = v.bytes;
                    s
                }
                None => {
                    slot_bytes.push(v.bytes);
                    busy_until.push(0);
                    slot_bytes.len() - 1
                }
            },
        };
        busy_until[slot] = v.last.max(v.first);
        slot_of[i] = slot;
    }
    MemoryPlan {
        slot_of,
        slot_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &Interval, b: &Interval) -> bool {
        a.first <= b.last && b.first <= a.last
    }

    /// Every plan invariant: overlapping lifetimes never share a slot, every slot holds its
    /// intervals, and the plan is no larger than one buffer per interval.
    fn check(intervals: &[Interval]) -> MemoryPlan {
        let p = plan(intervals);
        assert_eq!(p.slot_of.len(), intervals.len());
        for (i, a) in intervals.iter().enumerate() {
            assert!(
                p.slot_bytes[p.slot_of[i]] >= a.bytes,
                "slot too small for {i}"
            );
            for (j, b) in intervals.iter().enumerate().skip(i + 1) {
                if overlaps(a, b) {
                    assert_ne!(
                        p.slot_of[i], p.slot_of[j],
                        "{i} and {j} overlap: {a:?} {b:?}"
                    );
                }
            }
        }
        let sum: u64 = intervals.iter().map(|v| v.bytes).sum();
        assert!(p.total_bytes() <= sum);
        p
    }

    #[test]
    fn largest_fitting_finds_the_boundary() {
        for max in 0..40 {
            for limit in 0..45 {
                let mut asked = 0;
                let got = largest_fitting(max, |n| {
                    asked += 1;
                    Ok::<bool, ()>(n <= limit)
                });
                assert_eq!(got, Ok(limit.min(max)), "max {max} limit {limit}");
                assert!(asked <= 8, "{asked} questions for max {max}");
            }
        }
        assert_eq!(
            largest_fitting(10, |_| Err::<bool, &str>("boom")),
            Err("boom")
        );
    }

    #[test]
    fn a_chain_needs_two_slots() {
        // x0 → x1 → x2 → …: each value is read only by the next op.
        let chain: Vec<Interval> = (0..10)
            .map(|i| Interval {
                bytes: 100,
                first: i,
                last: i + 1,
            })
            .collect();
        let p = check(&chain);
        assert_eq!(p.slot_bytes.len(), 2);
        assert_eq!(p.total_bytes(), 200);
    }

    #[test]
    fn a_long_lived_skip_keeps_its_slot() {
        let v = [
            Interval {
                bytes: 64,
                first: 0,
                last: 5,
            }, // skip, read at the end
            Interval {
                bytes: 32,
                first: 1,
                last: 2,
            },
            Interval {
                bytes: 32,
                first: 2,
                last: 3,
            },
            Interval {
                bytes: 32,
                first: 3,
                last: 4,
            },
            Interval {
                bytes: 64,
                first: 4,
                last: 5,
            },
        ];
        let p = check(&v);
        assert_eq!(p.slot_bytes.len(), 3);
        assert_eq!(p.total_bytes(), 64 + 64 + 32);
    }

    #[test]
    fn a_growing_slot_is_reused_rather_than_a_new_one_opened() {
        let v = [
            Interval {
                bytes: 10,
                first: 0,
                last: 1,
            },
            Interval {
                bytes: 10,
                first: 1,
                last: 2,
            },
            Interval {
                bytes: 50,
                first: 2,
                last: 3,
            },
        ];
        let p = check(&v);
        assert_eq!(p.slot_bytes.len(), 2);
        assert_eq!(p.total_bytes(), 60);
    }

    #[test]
    fn random_lifetimes_never_share_a_live_slot() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        for case in 0..200 {
            let n = 1 + (case % 40);
            let v: Vec<Interval> = (0..n)
                .map(|i| {
                    let first = i + next(3) as usize;
                    Interval {
                        bytes: 1 + next(1000),
                        first,
                        last: first + next(8) as usize,
                    }
                })
                .collect();
            check(&v);
        }
    }
}
