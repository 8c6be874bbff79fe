//! UNet2DModel parity with diffusers: every fixture in tests/fixtures (made by
//! scripts/make_fixtures.py from diffusers in float64) runs through our GPU forward pass and is
//! compared block by block; the error relative to each tensor's scale must stay ≤ 1e-4.

mod common;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::model::unet_2d::UNet2DModel;
use wgpu_diffusion::reference::{compare_scaled, Comparison};

const TOLERANCE: f64 = 1e-4;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Io {
    bytes: Vec<u8>,
}

impl Io {
    fn load(dir: &Path) -> Io {
        Io {
            bytes: std::fs::read(dir.join("io.safetensors")).expect("io.safetensors"),
        }
    }
    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid io.safetensors")
    }
    fn f32(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let st = self.tensors();
        let t = st.tensor(name).ok()?;
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let data = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Some((t.shape().to_vec(), data.collect()))
    }
    fn labels(&self) -> Option<Vec<usize>> {
        let st = self.tensors();
        let t = st.tensor("class_labels").ok()?;
        assert_eq!(t.dtype(), safetensors::Dtype::I64);
        let data = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize);
        Some(data.collect())
    }
}

/// Runs one fixture; returns the per-tensor comparisons (output last).
fn run_fixture(name: &str) -> Vec<Comparison> {
    let ctx = common::ctx();
    let dir = fixtures_dir().join(name);
    let io = Io::load(&dir);
    let model = UNet2DModel::load(&ctx, &dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (shape, sample) = io.f32("sample").expect("sample");
    let (_, timesteps) = io.f32("timesteps").expect("timesteps");
    let labels = io.labels();
    let graph = model
        .debug_graph(shape[0], shape[2], shape[3])
        .expect("graph");
    let out = graph
        .forward(&sample, &timesteps, labels.as_deref())
        .expect("forward");
    let mut results = Vec::new();
    for (key, tensor) in &graph.activations {
        let Some((want_shape, want)) = io.f32(&format!("act.{key}")) else {
            continue;
        };
        assert_eq!(
            tensor.shape.iter().product::<usize>(),
            want.len(),
            "{name}: {key} size {want_shape:?}"
        );
        let got = tensor.read(&ctx).expect("read activation");
        let want: Vec<f64> = want.iter().map(|&x| f64::from(x)).collect();
        results.push(compare_scaled(
            &format!("{name} {key}"),
            &got,
            &want,
            TOLERANCE,
        ));
    }
    let (_, want) = io.f32("output").expect("output");
    let want: Vec<f64> = want.iter().map(|&x| f64::from(x)).collect();
    results.push(compare_scaled(
        &format!("{name} output"),
        &out,
        &want,
        TOLERANCE,
    ));
    results
}

fn check(name: &str) {
    let results = run_fixture(name);
    for c in &results {
        println!("{c}");
    }
    let bad: Vec<String> = results
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: blocks off by more than {TOLERANCE} of their scale:\n{}",
        bad.join("\n")
    );
    assert!(
        results.len() >= 6,
        "{name}: too few activations compared ({})",
        results.len()
    );
}

#[test]
fn google_flags_single_head_pad0() {
    check("google_flags");
}

#[test]
fn default_flags_multihead_odd_sizes() {
    check("default_flags_multihead");
}

#[test]
fn legacy_attention_names() {
    check("legacy_attention_names");
}

#[test]
fn f16_weights() {
    check("f16_weights");
}

#[test]
fn class_conditional() {
    check("class_conditional");
}

#[test]
fn no_mid_attention_bf16_center_input_non_square() {
    check("no_mid_attention_bf16");
}

#[test]
fn every_fixture_is_tested() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("MANIFEST.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = manifest["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let tested = [
        "google_flags",
        "default_flags_multihead",
        "legacy_attention_names",
        "f16_weights",
        "class_conditional",
        "no_mid_attention_bf16",
    ];
    for n in names {
        assert!(tested.contains(&n), "fixture {n} has no test");
    }
}

#[test]
fn graph_is_reusable_and_batch_independent() {
    // The same graph run twice gives the same answer, and image 1 of a batch of 2 equals the same
    // image run alone (no cross-talk between batch entries).
    let ctx = common::ctx();
    let dir = fixtures_dir().join("google_flags");
    let io = Io::load(&dir);
    let model = UNet2DModel::load(&ctx, &dir).unwrap();
    let (shape, sample) = io.f32("sample").unwrap();
    let (_, t) = io.f32("timesteps").unwrap();
    let g2 = model.graph(2, shape[2], shape[3]).unwrap();
    let a = g2.forward(&sample, &t, None).unwrap();
    let b = g2.forward(&sample, &t, None).unwrap();
    assert_eq!(a, b);
    let per = sample.len() / 2;
    let g1 = model.graph(1, shape[2], shape[3]).unwrap();
    let single = g1.forward(&sample[per..], &t[1..], None).unwrap();
    let c = compare_scaled(
        "batch entry 1 alone",
        &single,
        &a[a.len() / 2..]
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<_>>(),
        1e-6,
    );
    assert!(c.ok(), "{c}");
}

#[test]
fn class_label_errors() {
    let ctx = common::ctx();
    let dir = fixtures_dir().join("class_conditional");
    let model = UNet2DModel::load(&ctx, &dir).unwrap();
    let g = model.graph(1, 16, 16).unwrap();
    let x = vec![0.0f32; 3 * 16 * 16];
    let err = g.forward(&x, &[10.0], Some(&[11])).unwrap_err().to_string();
    assert!(
        err.contains("11") && err.contains("num_class_embeds"),
        "{err}"
    );
    let err = g.forward(&x, &[10.0], None).unwrap_err().to_string();
    assert!(err.contains("class labels are required"), "{err}");
    let uncond = UNet2DModel::load(&ctx, &fixtures_dir().join("google_flags")).unwrap();
    let g = uncond.graph(1, 16, 16).unwrap();
    let err = g.forward(&x, &[10.0], Some(&[1])).unwrap_err().to_string();
    assert!(err.contains("no class embedding"), "{err}");
}

#[test]
fn resolution_the_blocks_cannot_divide() {
    let ctx = common::ctx();
    let model = UNet2DModel::load(&ctx, &fixtures_dir().join("default_flags_multihead")).unwrap();
    let err = model.graph(1, 30, 28).unwrap_err().to_string();
    assert!(err.contains("30"), "{err}");
    assert!(model.graph(1, 12, 20).is_ok());
}

/// Outputs of `resnets` (one input each, all sharing `temb_act`) recorded in one graph, and the
/// number of launches: with `fused`, the fused projection is recorded once and each resnet reads
/// its columns; without, each resnet projects `temb_act` with its own layer.
fn run_resnets(
    ctx: &wgpu_diffusion::GpuContext,
    resnets: &[wgpu_diffusion::model::blocks::resnet::ResnetBlock2D],
    fused: Option<&wgpu_diffusion::model::blocks::resnet::TimeProjections>,
    inputs: &[(Vec<usize>, Vec<f32>)],
    temb: &(Vec<usize>, Vec<f32>),
) -> (Vec<Vec<f32>>, usize) {
    use wgpu_diffusion::model::graph::Graph;
    let mut g = Graph::new(ctx);
    let temb_v = g.input(&temb.0, "temb_act").expect("input");
    let xs: Vec<_> = inputs
        .iter()
        .map(|(shape, _)| g.input(shape, "x").expect("input"))
        .collect();
    let time = match fused {
        Some(tp) => tp.record(&mut g, &temb_v, "time_emb_proj").expect("fused"),
        None => temb_v.clone(),
    };
    let outs: Vec<_> = resnets
        .iter()
        .zip(&xs)
        .enumerate()
        .map(|(i, (r, x))| {
            let out = r
                .record(&mut g, x, Some(&time), &format!("resnets.{i}"))
                .expect("record");
            g.keep(&out);
            out
        })
        .collect();
    let finished = g.finish().expect("finish");
    finished.tensor(&temb_v).write(ctx, &temb.1).expect("write");
    for (x, (_, data)) in xs.iter().zip(inputs) {
        finished.tensor(x).write(ctx, data).expect("write");
    }
    let refs: Vec<_> = finished.dispatches.iter().collect();
    ctx.submit(&refs).expect("submit");
    let got = outs
        .iter()
        .map(|o| finished.tensor(o).read(ctx).expect("read"))
        .collect();
    (got, finished.dispatches.len())
}

/// Issue 15: `TimeProjections::fuse` stacks the resnets' `time_emb_proj` into one layer; the
/// fused launch plus conv1's strided, offset read of its columns gives the very bits of the
/// per-resnet projections (odd channel counts, batch 3, both kernel shapes), with one
/// projection launch instead of one per resnet; the per-resnet layers are gone afterwards.
#[test]
fn fused_time_projections_are_bit_identical_to_per_resnet_launches() {
    use wgpu_diffusion::gpu::KernelChoice;
    use wgpu_diffusion::model::blocks::resnet::{
        ResnetBlock2D, ResnetConfig, TimeProjection, TimeProjections,
    };
    use wgpu_diffusion::model::weights::{VarBuilder, WeightSource};
    let ctx = common::ctx();
    let source = WeightSource::random(11, "resnets");
    let vb = VarBuilder::root(&ctx, &source);
    let cfg = ResnetConfig {
        groups: 1,
        eps: 1e-5,
        temb_channels: Some(24),
        output_scale_factor: 1.0,
    };
    let (n, h, w) = (3, 4, 8);
    let channels = [(6, 5), (5, 9), (9, 9), (9, 7)];
    let mut resnets: Vec<ResnetBlock2D> = channels
        .iter()
        .enumerate()
        .map(|(i, &(cin, cout))| ResnetBlock2D::load(&vb.pp(i), &cfg, cin, cout).expect("load"))
        .collect();
    let mut seed = 0x9e37_79b9_u32;
    let mut data = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    };
    let inputs: Vec<(Vec<usize>, Vec<f32>)> = channels
        .iter()
        .map(|&(cin, _)| (vec![n, cin, h, w], data(n * cin * h * w)))
        .collect();
    let temb = (vec![n, 24], data(n * 24));
    let choices = [KernelChoice::Gpu, KernelChoice::Auto];
    let own: Vec<_> = choices
        .iter()
        .map(|&c| {
            ctx.set_kernels(c).expect("kernel shape");
            run_resnets(&ctx, &resnets, None, &inputs, &temb)
        })
        .collect();
    let tp = TimeProjections::fuse(&ctx, resnets.iter_mut(), "time_emb_proj").expect("fuse");
    assert_eq!(tp.layer.out_features, 5 + 9 + 9 + 7);
    assert!(resnets
        .iter()
        .all(|r| matches!(r.time_emb_proj, Some(TimeProjection::Slice { .. }))));
    assert!(
        TimeProjections::fuse(&ctx, resnets.iter_mut(), "again").is_err(),
        "fusing slices again must fail"
    );
    for (&c, (own_out, own_launches)) in choices.iter().zip(&own) {
        ctx.set_kernels(c).expect("kernel shape");
        let (fused_out, fused_launches) = run_resnets(&ctx, &resnets, Some(&tp), &inputs, &temb);
        assert_eq!(*own_launches - fused_launches, channels.len() - 1, "{c:?}");
        for (i, (a, b)) in own_out.iter().zip(&fused_out).enumerate() {
            let differ = a
                .iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            assert_eq!(
                differ,
                0,
                "{c:?} resnet {i}: {differ} of {} differ",
                a.len()
            );
        }
    }
    ctx.set_kernels(KernelChoice::Auto).expect("auto");
}

/// Issue 15: a ×2 `Upsample2D` is folded into its conv's input gather, except where that would
/// move a CPU-shaped context's conv off `conv2d_cpu`. The bundled model (28×28: upsamplers
/// 7 → 14 and 14 → 28) shows both: under the GPU shape neither upsampler launches an
/// interpolation; under the CPU shape the 14 → 28 one keeps its interpolation so that its conv
/// (28 wide) stays on `conv2d_cpu` (a fused conv would need a 14-wide input to be a multiple of
/// 4), while 7 → 14 (conv2d.wgsl either way) is folded. Both shapes give the same bits.
#[test]
fn upsample_fold_keeps_cpu_shaped_convs() {
    use wgpu_diffusion::gpu::{Kernel, KernelChoice};
    let ctx = common::ctx();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm");
    let model = UNet2DModel::load(&ctx, &dir).unwrap();
    let mut rng = common::Rng::new(5);
    let sample = rng.vec(2 * 28 * 28, -1.0, 1.0);
    let t = [17.0, 640.0];
    let labels = [3, 8];
    let mut outputs = vec![];
    let cpu = common::cpu_kernels_available(&ctx);
    for choice in [KernelChoice::Gpu, KernelChoice::Cpu] {
        if choice == KernelChoice::Cpu && !cpu {
            continue;
        }
        ctx.set_kernels(choice).expect("kernel shape");
        let graph = model.graph(2, 28, 28).unwrap();
        let ups: Vec<(&str, Kernel)> = graph
            .dispatches
            .iter()
            .filter(|d| d.label.contains(".upsamplers."))
            .map(|d| (d.label.as_str(), d.kernel))
            .collect();
        let interpolations = ups
            .iter()
            .filter(|(l, _)| l.contains("interpolate"))
            .count();
        if choice == KernelChoice::Gpu {
            assert_eq!(interpolations, 0, "{ups:?}");
            assert_eq!(ups.len(), 2, "{ups:?}");
        } else {
            assert_eq!(interpolations, 1, "{ups:?}");
            assert_eq!(ups.len(), 3, "{ups:?}");
            let (label, kernel) = ups[2];
            assert!(label.ends_with("upsamplers.0.conv"), "{ups:?}");
            assert_eq!(kernel, Kernel::Conv2dCpu, "{ups:?}");
        }
        outputs.push(graph.forward(&sample, &t, Some(&labels)).unwrap());
    }
    ctx.set_kernels(KernelChoice::Auto).expect("auto");
    if let [gpu, cpu] = &outputs[..] {
        assert_eq!(common::bits_differ(gpu, cpu), 0, "kernel shapes differ");
    }
}
