//! Replays every committed fuzz corpus file (`fuzz/corpus/TARGET/*`) through the same entry
//! points the `cargo fuzz` targets call ([`wgpu_diffusion::fuzzing`]), so a plain `cargo test`
//! catches a regression of any input a fuzzer once found, with no fuzzer installed. An input
//! that panics fails the test with its target and file name.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use wgpu_diffusion::fuzzing::{bundled_configs, corpus_dir, TARGETS};

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: cannot list the corpus: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.retain(|p| p.is_file());
    files.sort();
    files
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let mut failures = Vec::new();
    let mut total = 0;
    for target in TARGETS {
        let files = corpus_files(target.name);
        // A target without seeds would make this test vacuous for it.
        assert!(
            files.len() >= 3,
            "fuzz/corpus/{} holds {} file(s); commit its seed corpus",
            target.name,
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            total += 1;
            if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
                failures.push(format!("{}: {}", target.name, file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} corpus inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The CLI-argument target prepares runs against the bundled models; without their configs it
/// would return at once and test nothing.
#[test]
fn the_sample_args_target_sees_the_bundled_models() {
    let configs = bundled_configs().unwrap_or_else(|e| panic!("bundled model configs: {e}"));
    assert_eq!(configs.len(), 2);
}

/// Every target's corpus folder is one the fuzz crate builds a target for.
#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap_or_else(|e| panic!("fuzz/Cargo.toml: {e}"));
    for target in TARGETS {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{}.rs", target.name));
        assert!(bin.is_file(), "{} is missing", bin.display());
        assert!(
            manifest.contains(&format!("name = \"{}\"", target.name)),
            "fuzz/Cargo.toml has no [[bin]] {}",
            target.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes found by the seeds and the fuzzers, each fixed at its root: the input is in the corpus
// and here, with the error it must give now.

/// `steps_offset` near `usize::MAX` overflowed `i·ratio + steps_offset` (a debug-build panic, a
/// wrapped timestep in release); it is now a timestep outside the training range, blamed on
/// `steps_offset`.
#[test]
fn a_huge_steps_offset_is_an_error_naming_it() {
    use wgpu_diffusion::sampling::prepare::plan;
    use wgpu_diffusion::schedule::SchedulerConfig;
    use wgpu_diffusion::{SampleOptions, SchedulerKind};
    let text =
        std::fs::read_to_string(corpus_dir("scheduler_config").join("steps_offset_huge")).unwrap();
    let config =
        SchedulerConfig::from_json_str(&text, std::path::Path::new("scheduler_config.json"))
            .unwrap();
    for kind in [
        SchedulerKind::Ddpm,
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
    ] {
        let options = SampleOptions {
            scheduler: Some(kind),
            steps: 3,
            ..SampleOptions::default()
        };
        let err = plan(&config, &options).expect_err("a timestep past the training range");
        assert!(err.to_string().contains("steps_offset"), "{kind:?}: {err}");
    }
}

/// A classes.json checked against `num_class_embeds = 0` computed `0 - 1` for its message.
#[test]
fn classes_against_zero_class_embeds_is_an_error_not_an_underflow() {
    use wgpu_diffusion::sampling::{check_classes, ClassNames};
    let path = std::path::Path::new("classes.json");
    let classes = ClassNames::from_json_str(r#"{"A": 1, "a": 2}"#, path).unwrap();
    let err = check_classes(path, &classes, Some(0)).expect_err("no label fits");
    assert!(err.to_string().contains("num_class_embeds = 0"), "{err}");
    assert!(err.to_string().contains("classes.json"), "{err}");
}

/// `sample_size: 2^32` (found by the unet_config fuzzer) passed the config checks and overflowed
/// `C·H·W` in `RunSpec::prepare`; the resolution is now refused, naming config.json.
#[test]
fn a_sample_size_whose_element_count_overflows_is_a_resolution_error() {
    use wgpu_diffusion::model::unet_2d::config::UNet2DConfig;
    use wgpu_diffusion::sampling::{ClassNames, RunSpec, UNetConfig};
    use wgpu_diffusion::schedule::SchedulerConfig;
    use wgpu_diffusion::SampleOptions;
    let text =
        std::fs::read_to_string(corpus_dir("unet_config").join("crash-sample-size-overflow"))
            .unwrap();
    let config =
        UNet2DConfig::from_json_str(&text, std::path::Path::new("model/config.json")).unwrap();
    let options = SampleOptions::default();
    let err = RunSpec::prepare(
        &UNetConfig::Plain(config),
        &SchedulerConfig::default(),
        &ClassNames::default(),
        &options,
    )
    .expect_err("an image of 2^64 elements");
    let message = err.to_string();
    assert!(message.contains("overflow the element count"), "{message}");
    assert!(message.contains("model/config.json"), "{message}");
}

/// `num-images 1575896501` (found by the sample_args fuzzer) made `RunSpec::prepare` build one
/// label per image for the class-conditional bundled model: 12.6 GB, an abort. Labels and
/// prompts are now a list cycled by image index: preparing 4·10⁹ images allocates nothing per
/// image, for both bundled models.
#[test]
fn preparing_billions_of_images_allocates_nothing_per_image() {
    use wgpu_diffusion::sampling::Chunk;
    use wgpu_diffusion::SampleOptions;
    let configs = bundled_configs().unwrap_or_else(|e| panic!("bundled model configs: {e}"));
    let n = 4_000_000_000usize;
    let chunk = Chunk {
        first_image: n - 3,
        images: 3,
    };
    let ddpm = SampleOptions {
        num_images: n,
        class_labels: Some(vec![1, 2]),
        guidance_scale: Some(2.0),
        ..SampleOptions::default()
    };
    let spec = configs[0].prepare(&ddpm).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.labels.as_ref().map(|l| l.len()), Some(n));
    // n − 3 is odd: labels 2, 1, 2, then the null label 10 per image for guidance.
    assert_eq!(spec.model_labels(&chunk), Some(vec![2, 1, 2, 10, 10, 10]));
    let sd = SampleOptions {
        num_images: n,
        prompts: Some(vec!["a shirt".into(), "a bag".into()]),
        ..SampleOptions::default()
    };
    let spec = configs[1].prepare(&sd).unwrap_or_else(|e| panic!("{e}"));
    let text = spec.text.as_ref().expect("a text run");
    assert_eq!(text.prompts.len(), n);
    assert_eq!(text.prompts.slice(n - 2..n + 5), vec!["a shirt", "a bag"]);
    assert_eq!(text.negative_prompts.period(), vec![String::new()]);
}

/// Given noise for 4 images of 2³¹×2³¹ (found while replaying the seeds): `n·C·H·W` overflowed
/// in the length check; it is now a mismatch naming `init_noise`.
#[test]
fn given_noise_for_an_overflowing_size_is_a_length_error() {
    use wgpu_diffusion::SampleOptions;
    let configs = bundled_configs().unwrap_or_else(|e| panic!("bundled model configs: {e}"));
    let side = 1usize << 31;
    let options = SampleOptions {
        num_images: 4,
        height: Some(side),
        width: Some(side),
        init_noise: Some(vec![0.0; 5]),
        class_labels: Some(vec![1]),
        ..SampleOptions::default()
    };
    let err = configs[0]
        .prepare(&options)
        .expect_err("5 values cannot be 4 images of 2^62 elements");
    assert!(err.to_string().contains("init_noise"), "{err}");
}
