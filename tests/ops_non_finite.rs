//! The GPU non-finite check (`shaders/non_finite.wgsl`) against the CPU reference on odd shapes
//! with NaN / ±inf planted at chosen positions (first, last, a workgroup boundary, several in one
//! workgroup, everywhere), the first-step record across a run of steps, a 2-D grid, and the
//! launcher's shape checks.

mod common;

use common::{ctx, Rng};
use wgpu_diffusion::gpu::{GpuContext, Tensor};
use wgpu_diffusion::ops::non_finite::{
    non_finite_checks, non_finite_status, reset_non_finite_status, NonFiniteChecks, NonFiniteReport,
};
use wgpu_diffusion::reference::misc;

/// Runs one final check (step `step`) of `xs` and returns the report.
fn check_once(ctx: &GpuContext, xs: &[f32], step: u32) -> NonFiniteReport {
    let x = Tensor::from_slice(ctx, &[xs.len()], xs, "x").unwrap();
    let status = non_finite_status(ctx, "status").unwrap();
    let launches = non_finite_checks(
        ctx,
        &NonFiniteChecks {
            x: &x,
            status: &status,
            steps: &[step],
        },
        "t",
    )
    .unwrap();
    ctx.submit(&launches.iter().collect::<Vec<_>>()).unwrap();
    NonFiniteReport::read(ctx, &status).unwrap()
}

/// The report the CPU reference predicts for a final check at `step`.
fn expected(xs: &[f32], step: u32) -> NonFiniteReport {
    let (count, first) = misc::non_finite(xs);
    NonFiniteReport {
        first_step: (count > 0).then_some(step),
        count: count as u32,
        first_index: first.map(|i| i as u32),
    }
}

#[test]
fn planted_nan_and_inf_are_counted_and_located_on_odd_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(18);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN];
    // [n, C, H, W] shapes: one element, under a workgroup, a workgroup and one, odd batches.
    for (k, shape) in [
        [1usize, 1, 1, 1],
        [1, 3, 5, 5],
        [2, 1, 16, 16],
        [1, 1, 257, 1],
        [3, 3, 7, 11],
        [5, 1, 28, 28],
    ]
    .iter()
    .enumerate()
    {
        let len: usize = shape.iter().product();
        let base = rng.vec(len, -3.0, 3.0);
        // Finite values, including the extremes f32 allows and subnormals, are never reported.
        let mut finite = base.clone();
        finite[0] = f32::MAX;
        finite[len - 1] = -f32::MIN_POSITIVE / 2.0;
        assert_eq!(
            check_once(&ctx, &finite, 4),
            expected(&finite, 4),
            "{shape:?}: finite input"
        );
        let mut plans: Vec<Vec<usize>> = vec![vec![0], vec![len - 1], vec![len / 2]];
        if len > 256 {
            // Either side of a workgroup boundary, and several in one workgroup (the last).
            plans.push(vec![256, 255]);
            plans.push(vec![len - 1, len - 2, 256, len - 3]);
        }
        let random: Vec<usize> = (0..3).map(|_| rng.range(0, len - 1)).collect();
        plans.push(random);
        plans.push((0..len).collect());
        for (p, plan) in plans.iter().enumerate() {
            let mut xs = base.clone();
            for (j, &at) in plan.iter().enumerate() {
                xs[at] = specials[(j + k + p) % specials.len()];
            }
            let step = (k * 7 + p) as u32;
            let got = check_once(&ctx, &xs, step);
            assert_eq!(got, expected(&xs, step), "{shape:?}: planted at {plan:?}");
        }
    }
}

/// A run of checks records the smallest step that saw a non-finite value, whatever happens
/// later (a value may even become finite again), and only the last launch counts.
#[test]
fn the_first_non_finite_step_is_recorded_across_a_run() {
    let ctx = ctx();
    let len = 3 * 5 * 7;
    let x = Tensor::zeros(&ctx, &[len], "x").unwrap();
    let status = non_finite_status(&ctx, "status").unwrap();
    let steps: Vec<u32> = (0..6).collect();
    let launches = non_finite_checks(
        &ctx,
        &NonFiniteChecks {
            x: &x,
            status: &status,
            steps: &steps,
        },
        "t",
    )
    .unwrap();
    for first_bad in [None, Some(0u32), Some(3), Some(5)] {
        reset_non_finite_status(&ctx, &status).unwrap();
        let mut last = Vec::new();
        for (step, launch) in steps.iter().zip(&launches) {
            let mut xs = vec![0.5f32; len];
            if let Some(bad) = first_bad {
                if *step == bad {
                    xs[len - 2] = f32::NAN;
                    xs[11] = f32::INFINITY;
                } else if *step > bad && step % 2 == 0 {
                    xs[7] = f32::NEG_INFINITY;
                }
            }
            // Written between submissions: queue order makes each check see its step's x.
            x.write(&ctx, &xs).unwrap();
            ctx.submit(&[launch]).unwrap();
            last = xs;
        }
        let got = NonFiniteReport::read(&ctx, &status).unwrap();
        let (count, first) = misc::non_finite(&last);
        assert_eq!(
            got,
            NonFiniteReport {
                first_step: first_bad,
                count: count as u32,
                first_index: first.map(|i| i as u32),
            },
            "first non-finite step {first_bad:?}"
        );
    }
}

/// More than 65535 workgroups: the grid goes 2-D and the kernel must recover the linear index.
#[test]
fn non_finite_check_on_a_2d_grid() {
    let ctx = ctx();
    let limit = ctx.adapter.limits.max_compute_workgroups_per_dimension as usize;
    let len = limit * 256 + 777;
    assert!(
        (len as u64) * 4 <= ctx.max_binding_bytes(),
        "adapter cannot bind {len} floats; lower the test size"
    );
    let mut xs = vec![1.0f32; len];
    // Only in the second row of workgroups.
    xs[len - 5] = f32::NAN;
    xs[len - 1] = f32::INFINITY;
    let x = Tensor::from_slice(&ctx, &[len], &xs, "x").unwrap();
    let status = non_finite_status(&ctx, "status").unwrap();
    let launches = non_finite_checks(
        &ctx,
        &NonFiniteChecks {
            x: &x,
            status: &status,
            steps: &[9],
        },
        "t",
    )
    .unwrap();
    assert!(
        launches[0].workgroups[1] > 1,
        "expected a 2-D grid, got {:?}",
        launches[0].workgroups
    );
    ctx.submit(&[&launches[0]]).unwrap();
    assert_eq!(
        NonFiniteReport::read(&ctx, &status).unwrap(),
        expected(&xs, 9)
    );
}

#[test]
fn the_launcher_checks_its_arguments() {
    let ctx = ctx();
    let x = Tensor::zeros(&ctx, &[10], "x").unwrap();
    let status = non_finite_status(&ctx, "status").unwrap();
    let wrong = Tensor::zeros(&ctx, &[3], "status").unwrap();
    let build = |status: &Tensor, x: &Tensor, steps: &[u32]| {
        non_finite_checks(&ctx, &NonFiniteChecks { x, status, steps }, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(build(&wrong, &x, &[0]).contains("expected [4]"));
    assert!(build(&status, &x, &[]).contains("no step"));
    assert!(build(&status, &status, &[0]).contains("in place"));
    assert!(NonFiniteReport::from_status(&[0.0; 3]).is_err());
}
