//! Stable Diffusion: diffusers `UNet2DConditionModel`s block by block (tests/fixtures/sd, from
//! scripts/make_sd_fixtures.py): an SD1-style U-Net (1×1 conv projections, an int head count) and
//! an SD2-style one (linear projections, per-block heads and depths, `only_cross_attention`,
//! `upcast_attention`), each from fixed latents, timesteps and text embeddings.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpu_diffusion::model::unet_2d_condition::UNet2DConditionModel;
use wgpu_diffusion::reference::compare_scaled;
use wgpu_diffusion::sampling::{
    InitImage, LoadOptions, Offload, Phase, Pipeline, PipelineConfig, SampleOptions,
};
use wgpu_diffusion::schedule::SchedulerKind;

/// Block outputs vs diffusers' float64 forward, relative to each block's max |x|.
const BLOCK_TOLERANCE: f64 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn tensor(io: &SafeTensors, key: &str) -> Vec<f32> {
    let t = io.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn check_unet(name: &str, blocks: &[&str]) {
    check_unet_io(name, "io.safetensors", [8, 8], blocks);
    check_unet_io(name, "io_odd.safetensors", [9, 7], blocks);
}

fn check_unet_io(name: &str, file: &str, [h, w]: [usize; 2], blocks: &[&str]) {
    let ctx = common::ctx();
    let dir = fixture().join(name);
    let model = UNet2DConditionModel::load(&ctx, &dir).expect("load");
    let bytes = fs::read(dir.join(file)).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let sample = tensor(&io, "sample");
    let timesteps = tensor(&io, "timesteps");
    let context = tensor(&io, "encoder_hidden_states");
    let graph = model.debug_graph(2, h, w, 7).expect("graph");
    let out = graph
        .forward(&sample, &timesteps, &context)
        .expect("forward");
    let mut failed = Vec::new();
    for block in blocks {
        let got = match *block {
            "out" => out.clone(),
            b => graph.activations[b].read(&ctx).expect("read"),
        };
        let want = common::f64s(&tensor(&io, block));
        let c = compare_scaled(
            &format!("{name} {h}x{w} {block}"),
            &got,
            &want,
            BLOCK_TOLERANCE,
        );
        println!("{c}");
        if !c.ok() {
            failed.push(c.to_string());
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn sd1_unet_matches_diffusers_block_by_block() {
    check_unet(
        "unet_sd1",
        &[
            "time_embedding",
            "conv_in",
            "down_blocks.0",
            "down_blocks.1",
            "mid_block",
            "up_blocks.0",
            "up_blocks.1",
            "conv_act",
            "out",
        ],
    );
}

#[test]
fn sd2_unet_matches_diffusers_block_by_block() {
    check_unet(
        "unet_sd2",
        &[
            "time_embedding",
            "conv_in",
            "down_blocks.0",
            "down_blocks.1",
            "down_blocks.2",
            "mid_block",
            "up_blocks.0",
            "up_blocks.1",
            "up_blocks.2",
            "conv_act",
            "out",
        ],
    );
}

/// diffusers' own StableDiffusionPipeline loop vs ours, from the same latents: final latents and
/// decoded image relative to their max |x| (the sampler fixtures' tolerance).
const PIPELINE_TOLERANCE: f64 = 1e-3;

fn manifest() -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(fixture().join("manifest.json")).expect("manifest"))
        .expect("manifest parses")
}

fn check_pipeline(name: &str, cases: &[&str]) {
    let ctx = common::ctx();
    let pipeline =
        Pipeline::load_with(&ctx, &fixture().join(format!("pipeline_{name}"))).expect("SD folder");
    assert!(pipeline.decoder_config.is_some() && pipeline.text_config.is_some());
    let bytes = fs::read(fixture().join(format!("pipeline_{name}.io.safetensors"))).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let manifest = manifest();
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        })
    };
    for case in cases {
        let m = manifest[format!("pipeline_{name}")]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["case"] == *case)
            .expect("case in manifest")
            .clone();
        // The folder's own class (SD1: PNDMScheduler) runs when none is chosen.
        let scheduler = match m["sampler"].as_str().expect("sampler") {
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "PNDMScheduler" => None,
            other => panic!("{other}"),
        };
        let options = SampleOptions {
            scheduler,
            steps: m["steps"].as_u64().expect("steps") as usize,
            num_images: 2,
            guidance_scale: m["guidance_scale"].as_f64(),
            prompts: strings(&m["prompt"]),
            negative_prompts: strings(&m["negative_prompt"]),
            init_noise: Some(tensor(&io, &format!("{case}.noise"))),
            height: Some(16),
            width: Some(16),
            ..SampleOptions::default()
        };
        let samples = pipeline.sample(&options).expect("sample");
        assert_eq!(samples.shape, [2, 3, 16, 16], "{case}: image shape");
        let (latents, latent_shape) = samples.latents.as_ref().expect("latents kept");
        assert_eq!(*latent_shape, [2, 4, 8, 8]);
        for (what, got) in [("latents", latents.as_slice()), ("image", &samples.data)] {
            let want = common::f64s(&tensor(&io, &format!("{case}.{what}")));
            let c = compare_scaled(
                &format!("{name} {case} {what}"),
                got,
                &want,
                PIPELINE_TOLERANCE,
            );
            println!("{c}");
            assert!(c.ok(), "{c}");
        }
    }
}

#[test]
fn sd1_pipeline_matches_diffusers_with_and_without_guidance_ddim_and_its_pndm() {
    check_pipeline("sd1", &["ddim_cfg", "ddim_nocfg", "pndm_cfg"]);
}

#[test]
fn sd2_pipeline_matches_diffusers_v_prediction_trailing_euler() {
    check_pipeline("sd2", &["euler_cfg", "euler_turbo"]);
}

#[test]
fn sd1_image_to_image_matches_diffusers_img2img() {
    let ctx = common::ctx();
    let pipeline = Pipeline::load_with(&ctx, &fixture().join("pipeline_sd1")).expect("SD folder");
    let bytes = fs::read(fixture().join("pipeline_sd1.io.safetensors")).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let case = "img2img_ddim";
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 5,
        num_images: 2,
        guidance_scale: Some(7.5),
        prompts: Some(strings(&[
            "a photo of a red fox in the snow",
            "an astronaut riding a horse",
        ])),
        negative_prompts: Some(strings(&["blurry", "low quality, cartoon"])),
        init_noise: Some(tensor(&io, &format!("{case}.noise"))),
        init_image: Some(InitImage {
            image: tensor(&io, &format!("{case}.init_image")),
            strength: 0.6,
        }),
        ..SampleOptions::default()
    };
    let samples = pipeline.sample(&options).expect("img2img");
    let (latents, _) = samples.latents.as_ref().expect("latents");
    for (what, got) in [("latents", latents.as_slice()), ("image", &samples.data)] {
        let want = common::f64s(&tensor(&io, &format!("{case}.{what}")));
        let c = compare_scaled(
            &format!("sd1 {case} {what}"),
            got,
            &want,
            PIPELINE_TOLERANCE,
        );
        println!("{c}");
        assert!(c.ok(), "{c}");
    }
    // The image is the decoder's size: a latent-sized image is refused by name.
    let wrong = SampleOptions {
        init_image: Some(InitImage {
            image: vec![0.0; 4 * 8 * 8],
            strength: 0.6,
        }),
        ..options
    };
    let e = pipeline
        .sample(&wrong)
        .expect_err("latent-sized image")
        .to_string();
    assert!(e.contains("init_image") && e.contains("3×16×16"), "{e}");
}

fn sd_folder_error(edit: impl Fn(&Path)) -> String {
    common::pipeline_folder_error(
        &fixture().join("pipeline_sd1"),
        &["", "unet", "vae", "scheduler", "text_encoder", "tokenizer"],
        edit,
    )
}

use common::edit_json;

#[test]
fn bad_stable_diffusion_inputs_are_named() {
    // A text encoder whose width disagrees with the U-Net's cross_attention_dim.
    let e = sd_folder_error(|root| {
        edit_json(
            &root.join("text_encoder/config.json"),
            "\"hidden_size\": 16",
            "\"hidden_size\": 24",
        )
    });
    assert!(
        e.contains("text_encoder")
            && e.contains("hidden_size")
            && e.contains("cross_attention_dim"),
        "{e}"
    );
    // An unsupported U-Net key, by name.
    let e = sd_folder_error(|root| {
        edit_json(
            &root.join("unet/config.json"),
            "\"addition_embed_type\": null",
            "\"addition_embed_type\": \"text_time\"",
        )
    });
    assert!(
        e.contains("unet") && e.contains("addition_embed_type"),
        "{e}"
    );
    // A missing part.
    let e = sd_folder_error(|root| fs::remove_dir_all(root.join("text_encoder")).unwrap());
    assert!(e.contains("text_encoder") && e.contains("missing"), "{e}");
    // A VAE whose latents disagree with the U-Net's channels.
    let e = sd_folder_error(|root| {
        edit_json(
            &root.join("vae/config.json"),
            "\"latent_channels\": 4",
            "\"latent_channels\": 3",
        )
    });
    assert!(e.contains("vae") && e.contains("latent_channels"), "{e}");

    // Options, checked against the configs (no GPU).
    let config = PipelineConfig::load(&fixture().join("pipeline_sd1")).expect("config");
    let prompt = Some(vec!["a fox".to_owned()]);
    let err = |options: SampleOptions| config.prepare(&options).expect_err("bad").to_string();
    let e = err(SampleOptions::default());
    assert!(e.contains("prompts") && e.contains("text-to-image"), "{e}");
    let e = err(SampleOptions {
        prompts: prompt.clone(),
        height: Some(15),
        ..SampleOptions::default()
    });
    assert!(e.contains("height") && e.contains("VAE factor"), "{e}");
    // A multiple of the VAE factor that the U-Net halves to an odd size runs (diffusers'
    // forward_upsample_size), with the latents the image's size / 2.
    let odd = SampleOptions {
        prompts: prompt.clone(),
        width: Some(18),
        ..SampleOptions::default()
    };
    let spec = config.prepare(&odd).expect("odd latent width");
    assert_eq!(spec.shape, [1, 4, 8, 9]);
    let e = err(SampleOptions {
        prompts: prompt.clone(),
        class_labels: Some(vec![1]),
        ..SampleOptions::default()
    });
    assert!(e.contains("class_labels") && e.contains("prompts"), "{e}");
    let e = err(SampleOptions {
        prompts: prompt,
        negative_prompts: Some(Vec::new()),
        ..SampleOptions::default()
    });
    assert!(e.contains("negative_prompts"), "{e}");
    // A prompt on a model without a text encoder.
    let ldm = PipelineConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ldm_pipeline/pipeline"),
    )
    .expect("ldm");
    let e = ldm
        .prepare(&SampleOptions {
            prompts: Some(vec!["a fox".to_owned()]),
            ..SampleOptions::default()
        })
        .expect_err("no text encoder")
        .to_string();
    assert!(
        e.contains("prompts") && e.contains("no text encoder"),
        "{e}"
    );
}

/// The whole SD2-style U-Net with the attention scores budget forced to a few rows: every
/// attention runs in many chunks, and the output is bit-identical to the default graph's.
#[test]
fn unet_with_a_tiny_attention_budget_is_bit_identical() {
    let ctx = common::ctx();
    let dir = fixture().join("unet_sd2");
    let mut model = UNet2DConditionModel::load(&ctx, &dir).expect("load");
    let bytes = fs::read(dir.join("io.safetensors")).expect("io");
    let io = SafeTensors::deserialize(&bytes).expect("io parses");
    let (sample, timesteps, context) = (
        tensor(&io, "sample"),
        tensor(&io, "timesteps"),
        tensor(&io, "encoder_hidden_states"),
    );
    let default = model.graph(2, 8, 8, 7).expect("graph");
    let want = default
        .forward(&sample, &timesteps, &context)
        .expect("forward");
    // 64 keys · 4 bytes · 3 rows: self-attention at 8×8 chunks into rows of queries.
    model.attention_budget = Some(64 * 4 * 3);
    let chunked = model.graph(2, 8, 8, 7).expect("chunked graph");
    assert!(chunked.dispatches.len() > default.dispatches.len() + 20);
    assert!(chunked.memory.planned_bytes < default.memory.planned_bytes);
    let got = chunked
        .forward(&sample, &timesteps, &context)
        .expect("forward");
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "chunked attention changed the output"
    );
}

/// One part at a time (`Offload::Parts`) gives the very images of every part resident, with a
/// prompt and a negative prompt, several batches in one decode group, and an image-to-image
/// start (the VAE encoder loaded for it alone); `Auto` chooses it when the all-resident plan is
/// over the budget, and `Off` over the budget is refused naming the fix.
#[test]
fn offloading_parts_is_bit_identical_and_auto_picks_it_over_budget() {
    let ctx = common::ctx();
    let dir = fixture().join("pipeline_sd1");
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let options = SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 3,
        num_images: 3,
        batch_size: Some(2),
        guidance_scale: Some(7.5),
        prompts: Some(strings(&["a red fox", "an astronaut riding a horse"])),
        negative_prompts: Some(strings(&["blurry"])),
        height: Some(16),
        width: Some(16),
        ..SampleOptions::default()
    };
    let load = |offload, memory_budget| {
        Pipeline::load_with_options(
            &ctx,
            &dir,
            &LoadOptions {
                offload,
                memory_budget,
            },
        )
        .expect("SD folder")
    };
    let resident = load(Offload::Off, None);
    assert_eq!(resident.offload(), Offload::Off);
    let parts = load(Offload::Parts, None);
    assert_eq!(parts.offload(), Offload::Parts);
    let img2img = SampleOptions {
        init_image: Some(InitImage {
            image: (0..3 * 16 * 16)
                .map(|i| ((i % 7) as f32 - 3.0) / 3.0)
                .collect(),
            strength: 0.6,
        }),
        ..options.clone()
    };
    for opts in [&options, &img2img] {
        let want = resident.sample(opts).expect("resident");
        let got = parts.sample(opts).expect("one part at a time");
        assert_eq!(got.shape, want.shape);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same(&got.data, &want.data), "offloaded images differ");
        let (gl, _) = got.latents.as_ref().expect("latents");
        let (wl, _) = want.latents.as_ref().expect("latents");
        assert!(same(gl, wl), "offloaded latents differ");
    }

    // The plan: every part resident costs more than the largest phase.
    let spec = parts.prepare(&options).expect("spec");
    let plan = parts
        .memory(&spec, 2)
        .expect("plan")
        .expect("fits the bindings");
    assert_eq!(
        plan.phases.iter().map(|p| p.phase).collect::<Vec<_>>(),
        [Phase::TextEncode, Phase::Sampling, Phase::Decode]
    );
    let (peak, _) = plan.parts_peak();
    assert!(peak < plan.resident_peak(), "{plan:?}");
    // Auto: a budget between the two peaks (at the default size, one image) picks parts.
    let one_image = SampleOptions {
        num_images: 1,
        batch_size: None,
        ..options.clone()
    };
    let default_spec = parts.prepare(&one_image).expect("spec");
    let one = parts.memory(&default_spec, 1).expect("plan").expect("fits");
    let between = (one.parts_peak().0 + one.resident_peak()) / 2;
    assert_eq!(load(Offload::Auto, Some(between)).offload(), Offload::Parts);
    assert_eq!(load(Offload::Auto, None).offload(), Offload::Off);
    // That budget in a run: parts samples at the automatic batch, resident is refused.
    let budgeted = SampleOptions {
        batch_size: None,
        memory_budget: Some(between),
        ..options.clone()
    };
    let auto = load(Offload::Auto, Some(between));
    let got = auto
        .sample(&budgeted)
        .expect("one part at a time within the budget");
    let want = resident.sample(&options).expect("resident");
    assert!(got
        .data
        .iter()
        .zip(&want.data)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let e = resident
        .sample(&budgeted)
        .expect_err("resident over the budget")
        .to_string();
    assert!(
        e.contains("memory_budget")
            && e.contains("every part resident")
            && e.contains("offload parts"),
        "{e}"
    );
}

/// `inspect` prints the memory plan phase by phase and the offload mode it resolved.
#[test]
fn inspect_prints_the_memory_plan_and_offload() {
    let dir = fixture().join("pipeline_sd1");
    let run = |extra: &[&str]| common::inspect(&dir, extra);
    let text = run(&[]);
    for want in [
        "memory plan  at batch 1 with guidance",
        "  text encode ",
        "  U-Net sampling ",
        "  decode ",
        "every part resident",
        "one part at a time",
        "offload      off: every part resident (--offload auto",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let text = run(&["--offload", "parts"]);
    assert!(
        text.contains("offload      parts: each phase uploads its part"),
        "{text}"
    );
    // Auto with a budget no all-resident plan fits (1 MiB) resolves to parts.
    let text = run(&["--memory-budget", "1"]);
    assert!(text.contains("offload      parts"), "{text}");
}
