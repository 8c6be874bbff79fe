//! The library as an application uses it: sampling through a device the application opened with
//! plain wgpu (`GpuContext::from_device`), the limits such a device must have, and the crate-root
//! API (`Pipeline`, `SampleOptions`, `Samples`, `SchedulerKind`).

use std::path::{Path, PathBuf};

use wgpu_diffusion::{wgpu, GpuContext, Pipeline, SampleOptions, SchedulerKind};

fn bundled_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-ddpm")
}

/// The application's adapter, chosen with plain wgpu from the standard `WGPU_*` variables
/// (as the tests' own context is). A missing adapter fails, never skips.
fn app_adapter() -> wgpu::Adapter {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .unwrap_or_else(|e| {
        panic!(
            "no GPU adapter for the application device: {e} (`make test` installs \
             mesa-vulkan-drivers when apt-get is usable)"
        )
    })
}

fn app_device(adapter: &wgpu::Adapter, limits: wgpu::Limits) -> (wgpu::Device, wgpu::Queue) {
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("application device"),
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap_or_else(|e| panic!("request_device on {:?}: {e}", adapter.get_info().name))
}

fn options() -> SampleOptions {
    SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: 3,
        num_images: 2,
        seed: 11,
        class_labels: Some(vec![3, 8]),
        ..SampleOptions::default()
    }
}

/// A device requested with only `GpuContext::required_limits()` (plus the adapter's buffer sizes,
/// which the limits leave to each allocation's own check) samples the bundled model, and gives
/// the same images as a context that opened its own device on the same adapter with all of the
/// adapter's limits. The application's handles stay usable afterwards.
#[test]
fn from_device_samples_on_an_application_device() {
    let adapter = app_adapter();
    let full = adapter.limits();
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: full.max_storage_buffer_binding_size,
        max_buffer_size: full.max_buffer_size,
        ..GpuContext::required_limits()
    };
    let (device, queue) = app_device(&adapter, limits.clone());
    let ctx = GpuContext::from_device(&adapter, device.clone(), queue.clone())
        .unwrap_or_else(|e| panic!("from_device with the required limits: {e}"));
    assert_eq!(ctx.adapter.info.name, adapter.get_info().name);
    assert_eq!(
        ctx.adapter.limits.max_compute_workgroup_storage_size,
        limits.max_compute_workgroup_storage_size,
        "the context must plan with the device's limits, not the adapter's"
    );
    let pipeline = Pipeline::load_with(&ctx, &bundled_model()).expect("load on the app device");
    let samples = pipeline
        .sample(&options())
        .expect("sample on the app device");
    assert_eq!(samples.shape, [2, 1, 28, 28]);
    assert!(
        samples.data.iter().all(|v| v.is_finite()),
        "non-finite sample"
    );
    let first = samples.image(0);
    assert!(
        first.iter().any(|&v| v != first[0]),
        "image 0 is constant ({})",
        first[0]
    );
    assert_eq!(samples.to_rgba8(1).len(), 28 * 28 * 4);

    let own = GpuContext::from_adapter(&adapter).expect("own device on the same adapter");
    let reference = Pipeline::load_with(&own, &bundled_model())
        .expect("load")
        .sample(&options())
        .expect("sample on the context's own device");
    let (worst, at) = samples
        .data
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0.0f32, 0),
            |(w, at), (i, d)| if d > w { (d, i) } else { (w, at) },
        );
    assert!(
        worst <= 1e-5,
        "application device vs own device: max |diff| {worst:e} at element {at}"
    );

    // The application still owns a working device and queue. (Its own buffers are not ours to
    // count, so the counted-creation rule of clippy.toml does not apply.)
    #[allow(clippy::disallowed_methods)]
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("application buffer"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, &[1u8; 16]);
    queue.submit([]);
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("the application's device still polls");
}

/// A device requested with wgpu's downlevel defaults (4 storage buffers per stage, 16 352 bytes
/// of workgroup storage) cannot run `conv2d`: `from_device` says which limits are short and what
/// to request, before any shader is built.
#[test]
fn from_device_rejects_a_device_below_the_required_limits() {
    let adapter = app_adapter();
    let (device, queue) = app_device(&adapter, wgpu::Limits::downlevel_defaults());
    let err = GpuContext::from_device(&adapter, device, queue).expect_err("limits too low");
    let msg = err.to_string();
    for expected in [
        "GpuContext::from_device",
        "max_storage_buffers_per_shader_stage: device has 4, needs 8",
        "max_compute_workgroup_storage_size: device has 16352, needs 16384",
        "adapter.limits()",
    ] {
        assert!(msg.contains(expected), "missing {expected:?} in: {msg}");
    }
}

/// The required limits are WebGPU's defaults where they matter: a device requested with
/// `wgpu::Limits::default()` (what most applications ask for) qualifies.
#[test]
fn webgpu_default_limits_meet_the_requirement() {
    let required = GpuContext::required_limits();
    assert!(
        required.check_limits(&wgpu::Limits::default()),
        "required limits exceed WebGPU's defaults: {required:?}"
    );
    assert!(!required.check_limits(&wgpu::Limits::downlevel_defaults()));
}

/// `required_limits().max_storage_buffers_per_shader_stage` is what the shaders really bind:
/// counted by naga per entry point (storage variables the entry point uses), it covers every
/// kernel and is reached by one (so the requirement is not inflated).
#[test]
fn required_storage_buffers_match_the_shaders() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut most = (0, String::new());
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        files += 1;
        let source = std::fs::read_to_string(&path).expect("read shader");
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for (index, entry_point) in module.entry_points.iter().enumerate() {
            let uses = info.get_entry_point(index);
            let storage = module
                .global_variables
                .iter()
                .filter(|(handle, var)| {
                    matches!(var.space, naga::AddressSpace::Storage { .. })
                        && !uses[*handle].is_empty()
                })
                .count();
            if storage > most.0 {
                most = (storage, format!("{}:{}", path.display(), entry_point.name));
            }
        }
    }
    assert!(
        files >= 10,
        "found only {files} shaders in {}",
        dir.display()
    );
    let required = GpuContext::required_limits().max_storage_buffers_per_shader_stage;
    assert_eq!(
        most.0, required as usize,
        "the most storage buffers one entry point binds ({}) differs from the required limit",
        most.1
    );
}
