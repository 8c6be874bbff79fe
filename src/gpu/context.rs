//! Adapter selection (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`), device
//! creation with the adapter's own limits, the pipeline cache, and the counted creation of
//! buffers and bind groups (every one in the crate goes through [`GpuContext::create_buffer`],
//! [`GpuContext::create_buffer_init`] or [`GpuContext::create_bind_group`], so a test can prove
//! that a sampling run allocates nothing per step). Shader modules and pipelines are built inside
//! error scopes so a broken shader is an `Err`, not a panic (as cubecl does).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::dispatch::{Access, BindLayout};
use crate::gpu::kernel::{EntryPoint, Kernel};
use crate::gpu::pipeline_cache::{self, DiskCache, PipelineCacheStatus};
use crate::gpu::shape::{cpu_shape_unsupported, KernelChoice, KernelShape, TilePolicy};

/// How to pick the adapter. `Default` reads nothing; [`GpuOptions::from_env`] reads the standard
/// wgpu variables; CLI flags override fields after that.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Comma list of backends (`vulkan`, `metal`, `dx12`, `gl`); `None` = all.
    pub backends: Option<String>,
    /// Case-insensitive substring of the adapter name; `None` = best by power preference.
    pub adapter_name: Option<String>,
    /// `high` (default; discrete GPUs first) or `low` (integrated first).
    pub power_preference: Option<String>,
    /// Directory of the on-disk pipeline cache (Vulkan only; see
    /// [`crate::gpu::pipeline_cache`]); `None` = no cache, nothing read or written.
    pub pipeline_cache_dir: Option<PathBuf>,
    /// Which kernel family to run ([`crate::gpu::shape`]): `auto` (`None`), `gpu` or `cpu`.
    pub kernels: Option<String>,
    /// naga's shader runtime checks: `on` (`None`, the default) or `off`
    /// ([`GpuContext::shader_checks`]; case-insensitive).
    pub shader_checks: Option<String>,
    /// How the GPU-shaped GEMM kernels size their tiles ([`TilePolicy`]): `auto` (`None`:
    /// adaptive on GPUs, fixed on CPU adapters), `fixed` or `adaptive`.
    pub tiles: Option<String>,
}

impl GpuOptions {
    /// Options from `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`, and the pipeline
    /// cache under the user's cache directory unless `WGPU_DIFFUSION_PIPELINE_CACHE=off`
    /// ([`pipeline_cache::dir_from_env`]), the kernel shape from `WGPU_DIFFUSION_KERNELS`, and
    /// the shader runtime checks from `WGPU_DIFFUSION_SHADER_CHECKS`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        GpuOptions {
            backends: var("WGPU_BACKEND"),
            adapter_name: var("WGPU_ADAPTER_NAME"),
            power_preference: var("WGPU_POWER_PREF"),
            pipeline_cache_dir: pipeline_cache::dir_from_env(),
            kernels: var("WGPU_DIFFUSION_KERNELS"),
            shader_checks: var("WGPU_DIFFUSION_SHADER_CHECKS"),
            tiles: var("WGPU_DIFFUSION_TILES"),
        }
    }

    /// `shader_checks` as a bool (true = checks on): `None` is on, else `on` or `off`
    /// (case-insensitive); anything else is an error naming the variable and the flag.
    pub fn parse_shader_checks(&self) -> Result<bool> {
        let Some(value) = &self.shader_checks else {
            return Ok(true);
        };
        match value.trim().to_lowercase().as_str() {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(Error::BadGpuOption {
                name: "shader runtime checks (WGPU_DIFFUSION_SHADER_CHECKS / --shader-checks)"
                    .into(),
                value: value.clone(),
                expected: "on or off".into(),
            }),
        }
    }

    fn parse_kernels(&self) -> Result<KernelChoice> {
        match &self.kernels {
            None => Ok(KernelChoice::Auto),
            Some(v) => KernelChoice::parse("kernel shape (WGPU_DIFFUSION_KERNELS / --kernels)", v),
        }
    }

    fn parse_backends(&self) -> Result<wgpu::Backends> {
        let Some(list) = &self.backends else {
            return Ok(wgpu::Backends::all());
        };
        let mut backends = wgpu::Backends::empty();
        for name in list.split(',') {
            backends |= match name.trim().to_lowercase().as_str() {
                "vulkan" | "vk" => wgpu::Backends::VULKAN,
                "metal" | "mtl" => wgpu::Backends::METAL,
                "dx12" | "d3d12" => wgpu::Backends::DX12,
                "gl" | "gles" | "opengl" => wgpu::Backends::GL,
                _ => {
                    return Err(Error::BadGpuOption {
                        name: "backend (WGPU_BACKEND / --backend)".into(),
                        value: name.to_string(),
                        expected: "a comma list of vulkan, metal, dx12, gl".into(),
                    })
                }
            };
        }
        Ok(backends)
    }

    fn parse_power(&self) -> Result<wgpu::PowerPreference> {
        match self
            .power_preference
            .as_deref()
            .map(|s| s.trim().to_lowercase())
        {
            None => Ok(wgpu::PowerPreference::HighPerformance),
            Some(p) if p == "high" || p == "high-performance" => {
                Ok(wgpu::PowerPreference::HighPerformance)
            }
            Some(p) if p == "low" || p == "low-power" => Ok(wgpu::PowerPreference::LowPower),
            Some(p) if p == "none" => Ok(wgpu::PowerPreference::None),
            Some(p) => Err(Error::BadGpuOption {
                name: "power preference (WGPU_POWER_PREF)".into(),
                value: p,
                expected: "high, low or none".into(),
            }),
        }
    }
}

/// What `adapters` prints about one adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> Self {
        AdapterSummary {
            info: adapter.get_info(),
            limits: adapter.limits(),
            features: adapter.features(),
        }
    }

    /// `name (backend, type)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }
}

type PipelineKey = (EntryPoint, BindLayout, Vec<(&'static str, u64)>);

/// An explicit bind-group layout and the pipeline layout built on it.
type ExplicitLayout = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// How many buffers and bind groups a context has created so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocations {
    pub buffers: u64,
    pub bind_groups: u64,
}

impl Allocations {
    /// What was created between `earlier` and `self`.
    pub fn since(self, earlier: Allocations) -> Allocations {
        Allocations {
            buffers: self.buffers - earlier.buffers,
            bind_groups: self.bind_groups - earlier.bind_groups,
        }
    }
}

/// A device, its queue and the compiled pipelines. Built once and shared (`Arc`) by everything
/// that records work on it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// The adapter's name and backend, with the limits and features of `device` (all of the
    /// adapter's when the context opened the device itself; what the application requested
    /// with [`GpuContext::from_device`]).
    pub adapter: AdapterSummary,
    modules: Mutex<HashMap<Kernel, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    layouts: Mutex<HashMap<BindLayout, ExplicitLayout>>,
    buffers_created: AtomicU64,
    bind_groups_created: AtomicU64,
    /// The first error wgpu reported outside an error scope (validation at dispatch, device lost).
    uncaptured: Arc<Mutex<Option<String>>>,
    /// The on-disk pipeline cache every pipeline is compiled through, when there is one.
    disk_cache: Option<DiskCache>,
    pipeline_cache_status: PipelineCacheStatus,
    /// true: dispatch the CPU-shaped kernels where a layer fits them ([`KernelShape::Cpu`]).
    cpu_kernels: AtomicBool,
    /// true: [`TilePolicy::Adaptive`] tiles for the GPU-shaped GEMMs.
    adaptive_tiles: AtomicBool,
    /// false: shader modules are built without naga's runtime checks
    /// ([`GpuContext::shader_checks`]). Fixed when the context is made, so the module cache
    /// (keyed by kernel alone) never mixes checked and unchecked modules.
    shader_checks: bool,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter.describe())
            .finish()
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see through the chosen backends.
pub fn enumerate(options: &GpuOptions) -> Result<Vec<AdapterSummary>> {
    let backends = options.parse_backends()?;
    let adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    Ok(adapters.iter().map(AdapterSummary::of).collect())
}

/// Order of preference by device type for `power` (lower is better).
fn rank(device_type: wgpu::DeviceType, power: wgpu::PowerPreference) -> u8 {
    use wgpu::DeviceType::*;
    match (power, device_type) {
        (wgpu::PowerPreference::LowPower, IntegratedGpu) => 0,
        (wgpu::PowerPreference::LowPower, DiscreteGpu) => 1,
        (_, DiscreteGpu) => 0,
        (_, IntegratedGpu) => 1,
        (_, VirtualGpu) => 2,
        (_, Other) => 3,
        (_, Cpu) => 4,
    }
}

/// At equal device type a native backend wins over GL: the same Mesa llvmpipe is often visible
/// twice (lavapipe through Vulkan and llvmpipe through GL), and Vulkan is the path CI tests and
/// the one with timestamp queries and a pipeline cache. Not left to wgpu's enumeration order.
fn backend_rank(backend: wgpu::Backend) -> u8 {
    match backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

/// Which of `adapters` `options` pick: the first whose name contains `adapter_name`
/// (case-insensitive), else the best by power preference, then backend ([`backend_rank`]), then
/// enumeration order. `None` when `adapters` is empty or no name matches.
pub fn choose(adapters: &[wgpu::AdapterInfo], options: &GpuOptions) -> Result<Option<usize>> {
    let power = options.parse_power()?;
    Ok(match &options.adapter_name {
        Some(wanted) => {
            let needle = wanted.to_lowercase();
            adapters
                .iter()
                .position(|a| a.name.to_lowercase().contains(&needle))
        }
        None => adapters
            .iter()
            .enumerate()
            .min_by_key(|(i, a)| (rank(a.device_type, power), backend_rank(a.backend), *i))
            .map(|(i, _)| i),
    })
}

/// `name: device has X, needs Y` for each limit of `limits` below
/// [`GpuContext::required_limits`] (empty when all are met).
fn missing_limits(limits: &wgpu::Limits) -> Vec<String> {
    let mut missing = Vec::new();
    GpuContext::required_limits().check_limits_with_fail_fn(limits, false, |name, needed, have| {
        missing.push(format!("{name}: device has {have}, needs {needed}"))
    });
    missing
}

impl GpuContext {
    /// Picks an adapter by `options` and opens a device with the adapter's own limits.
    pub fn new(options: &GpuOptions) -> Result<Arc<GpuContext>> {
        let backends = options.parse_backends()?;
        let instance = instance(backends);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        if adapters.is_empty() {
            let details = match &options.backends {
                Some(b) => format!(" for backends {b:?}"),
                None => String::new(),
            };
            return Err(Error::NoAdapter { details });
        }
        let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
        let chosen = match choose(&infos, options)?.and_then(|i| adapters.get(i)) {
            Some(adapter) => adapter,
            None => {
                return Err(Error::AdapterNotFound {
                    wanted: options.adapter_name.clone().unwrap_or_default(),
                    available: adapters
                        .iter()
                        .map(|a| AdapterSummary::of(a).describe())
                        .collect::<Vec<_>>()
                        .join("; "),
                })
            }
        };
        Self::open(chosen, options)
    }

    /// Opens a device on `adapter`, asking for its full limits and the optional features we use
    /// (no pipeline cache: nothing is read from or written to disk).
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Arc<GpuContext>> {
        Self::open(adapter, &GpuOptions::default())
    }

    /// As [`GpuContext::from_adapter`], with the on-disk pipeline cache of
    /// `options.pipeline_cache_dir` where the backend has one (the adapter-choosing fields of
    /// `options` are not used here).
    pub fn open(adapter: &wgpu::Adapter, options: &GpuOptions) -> Result<Arc<GpuContext>> {
        let kernels = options.parse_kernels()?;
        let shader_checks = options.parse_shader_checks()?;
        let summary = AdapterSummary::of(adapter);
        let tiles = TilePolicy::parse(
            "GEMM tile policy (WGPU_DIFFUSION_TILES)",
            options.tiles.as_deref(),
            summary.info.device_type,
        )?;
        let info = adapter.get_info();
        let cache_file = match &options.pipeline_cache_dir {
            None => Err("disabled".to_string()),
            Some(dir) => pipeline_cache::file_for(dir, &info)
                .ok_or_else(|| format!("the {:?} backend has none", info.backend)),
        }
        .and_then(|file| {
            if summary.features.contains(wgpu::Features::PIPELINE_CACHE) {
                Ok(file)
            } else {
                Err("the adapter lacks PIPELINE_CACHE".to_string())
            }
        });
        let mut wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        if cache_file.is_ok() {
            wanted |= wgpu::Features::PIPELINE_CACHE;
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgpu-diffusion"),
            required_features: summary.features & wanted,
            required_limits: summary.limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: summary.describe(),
                message: e.to_string(),
            }
        })?;
        let (disk_cache, status) = match cache_file {
            Ok(file) => {
                let (cache, status) = DiskCache::open(&device, file);
                (Some(cache), status)
            }
            Err(why) => (None, PipelineCacheStatus::Off(why)),
        };
        let ctx = Self::with_device(info, device, queue, disk_cache, status, shader_checks);
        ctx.set_kernels(kernels)?;
        ctx.set_tile_policy(tiles);
        Ok(ctx)
    }

    /// Wraps a device the application already owns (a renderer, a game engine, another compute
    /// library), so sampling shares its device and queue instead of opening a second one.
    /// `device` and `queue` are cheap handles: the application keeps its clones and may go on
    /// using them.
    ///
    /// `adapter` is the adapter `device` was requested from; it tells the context its name and
    /// backend and whether it runs compute shaders at all. The context plans with `device`'s own
    /// limits and features (what was requested, not what the adapter could offer), and checks
    /// them against [`GpuContext::required_limits`]: a device requested with lower limits (for
    /// example `wgpu::Limits::downlevel_defaults()`) is an error naming each limit that is too
    /// low. Requesting `adapter.limits()` gives the largest buffers and batches.
    ///
    /// The context installs its own uncaptured-error handler on `device` (replacing any the
    /// application set), so that wgpu validation errors during sampling come back as `Err`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use wgpu_diffusion::{wgpu, GpuContext, Pipeline, SampleOptions};
    ///
    /// // The application's own device, made with plain wgpu.
    /// let instance = wgpu::Instance::default();
    /// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    /// let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
    ///     required_limits: adapter.limits(),
    ///     ..Default::default()
    /// }))?;
    ///
    /// let ctx = GpuContext::from_device(&adapter, device.clone(), queue.clone())?;
    /// let pipeline = Pipeline::load_with(&ctx, "weights/fashion-ddpm".as_ref())?;
    /// let samples = pipeline.sample(&SampleOptions { num_images: 2, ..Default::default() })?;
    /// # let _ = samples;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_device(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Arc<GpuContext>> {
        let info = adapter.get_info();
        let describe = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            return Err(Error::invalid(
                "GpuContext::from_device",
                format!(
                    "adapter {describe} does not run compute shaders (its downlevel flags lack \
                     COMPUTE_SHADERS); wgpu-diffusion needs a Vulkan, Metal, DX12 or GL 4.3+ \
                     adapter"
                ),
            ));
        }
        let too_low = missing_limits(&device.limits());
        if !too_low.is_empty() {
            return Err(Error::invalid(
                "GpuContext::from_device",
                format!(
                    "the device on adapter {describe} was requested with limits too low for \
                     wgpu-diffusion's kernels: {}; request the device with `adapter.limits()` or \
                     at least `GpuContext::required_limits()`",
                    too_low.join(", ")
                ),
            ));
        }
        Ok(Self::with_device(
            info,
            device,
            queue,
            None,
            PipelineCacheStatus::Off("a device the application opened".into()),
            true,
        ))
    }

    /// The least a device must allow for every kernel to build and run (WebGPU's default limits
    /// for these fields, which any Vulkan, Metal or DX12 adapter and Mesa's GL drivers meet):
    ///
    /// - 8 storage buffers per shader stage (`conv2d` binds input, residual, per-image bias,
    ///   weights and their vec4 view, bias, the im2col table and the output);
    /// - 16 KiB of workgroup storage and 256 invocations per workgroup, 256 × 16 × 1 in
    ///   x × y × z (the 16 × 16-invocation GEMM tiles of `conv2d` and `matmul` hold two 8 KiB
    ///   slices; the element-wise kernels run 256 × 1 × 1);
    /// - 65 535 workgroups per dimension (larger grids are split into 2-D).
    ///
    /// Every other field is `wgpu::Limits::downlevel_webgl2_defaults()`'s. Buffer sizes are not
    /// part of it: each allocation checks the device's binding and buffer limits itself and says
    /// which tensor did not fit.
    pub fn required_limits() -> wgpu::Limits {
        wgpu::Limits {
            max_storage_buffers_per_shader_stage: 8,
            max_compute_workgroup_storage_size: 16384,
            max_compute_invocations_per_workgroup: 256,
            max_compute_workgroup_size_x: 256,
            max_compute_workgroup_size_y: 16,
            max_compute_workgroup_size_z: 1,
            max_compute_workgroups_per_dimension: 65535,
            ..wgpu::Limits::downlevel_webgl2_defaults()
        }
    }

    /// The context around an open device: installs the uncaptured-error sink and takes the
    /// limits and features from the device itself.
    fn with_device(
        info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        disk_cache: Option<DiskCache>,
        pipeline_cache_status: PipelineCacheStatus,
        shader_checks: bool,
    ) -> Arc<Self> {
        let summary = AdapterSummary {
            info,
            limits: device.limits(),
            features: device.features(),
        };
        let uncaptured = Arc::new(Mutex::new(None::<String>));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        Arc::new(GpuContext {
            device,
            queue,
            adapter: summary,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            buffers_created: AtomicU64::new(0),
            bind_groups_created: AtomicU64::new(0),
            uncaptured,
            disk_cache,
            pipeline_cache_status,
            cpu_kernels: AtomicBool::new(false),
            adaptive_tiles: AtomicBool::new(false),
            shader_checks,
        })
        .with_auto_kernels()
    }

    fn with_auto_kernels(self: Arc<Self>) -> Arc<Self> {
        if let Ok(shape) = KernelChoice::Auto.resolve(&self.adapter) {
            self.cpu_kernels
                .store(shape == KernelShape::Cpu, Ordering::Relaxed);
        }
        if let Ok(policy) = TilePolicy::parse("tiles", None, self.adapter.info.device_type) {
            self.set_tile_policy(policy);
        }
        self
    }

    /// How the GPU-shaped GEMM kernels size their workgroup tiles ([`TilePolicy`]; results are
    /// the same bits either way).
    pub fn tile_policy(&self) -> TilePolicy {
        if self.adaptive_tiles.load(Ordering::Relaxed) {
            TilePolicy::Adaptive
        } else {
            TilePolicy::Fixed
        }
    }

    /// Switches the tile policy for launches built from now on.
    pub fn set_tile_policy(&self, policy: TilePolicy) {
        self.adaptive_tiles
            .store(policy == TilePolicy::Adaptive, Ordering::Relaxed);
    }

    /// The kernel family this context dispatches ([`crate::gpu::shape`]).
    pub fn kernel_shape(&self) -> KernelShape {
        if self.cpu_kernels.load(Ordering::Relaxed) {
            KernelShape::Cpu
        } else {
            KernelShape::Gpu
        }
    }

    /// Switches the kernel family for launches built from now on (built ones keep theirs):
    /// `Err` when `cpu` is asked of a device that cannot run it. `auto` re-derives the default.
    pub fn set_kernels(&self, choice: KernelChoice) -> Result<KernelShape> {
        let shape = choice.resolve(&self.adapter)?;
        self.cpu_kernels
            .store(shape == KernelShape::Cpu, Ordering::Relaxed);
        Ok(shape)
    }

    /// Whether this context's shader modules carry naga's runtime checks (true, the default) or
    /// were built without them (`WGPU_DIFFUSION_SHADER_CHECKS=off`, `--shader-checks off`,
    /// [`GpuOptions::shader_checks`]). Fixed when the context is made; a context from
    /// [`GpuContext::from_device`] or [`GpuContext::from_adapter`] keeps the checks on.
    pub fn shader_checks(&self) -> bool {
        self.shader_checks
    }

    /// Why this device cannot run the CPU-shaped kernels (`None`: it can).
    pub fn cpu_kernels_unsupported(&self) -> Option<String> {
        cpu_shape_unsupported(&self.adapter)
    }

    /// What became of the on-disk pipeline cache (its [`PipelineCacheStatus::warning`] is worth
    /// showing the user).
    pub fn pipeline_cache_status(&self) -> &PipelineCacheStatus {
        &self.pipeline_cache_status
    }

    /// Saves the pipeline cache to its file if pipelines were compiled since it was loaded or
    /// last saved; returns the file written. Dropping the context saves too, ignoring errors.
    pub fn save_pipeline_cache(&self) -> Result<Option<PathBuf>> {
        match &self.disk_cache {
            Some(cache) => cache.save(),
            None => Ok(None),
        }
    }

    /// The largest storage-buffer binding this device accepts, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        let limits = &self.adapter.limits;
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
    }

    /// Returns (and clears) an error wgpu raised outside an error scope since the last check.
    pub fn check_errors(&self, context: &str) -> Result<()> {
        let taken = self.uncaptured.lock().ok().and_then(|mut slot| slot.take());
        match taken {
            Some(message) => Err(Error::gpu(context, message)),
            None => Ok(()),
        }
    }

    fn module(&self, kernel: Kernel) -> Result<wgpu::ShaderModule> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| Error::gpu("shader cache", "poisoned"))?;
        if let Some(module) = modules.get(&kernel) {
            return Ok(module.clone());
        }
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name()),
            source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = if self.shader_checks {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: only the crate's own registry shaders reach here (`kernel.source()` is an
            // `include_str!` of shaders/*.wgsl, src/gpu/kernel.rs; no caller can pass WGSL in),
            // and they were audited for what the unchecked modules drop (README, "Shader
            // runtime checks"): every storage-buffer index is behind an explicit bounds test
            // (`i < count`, or a `select` to index 0 whose value is discarded) whose bound the
            // host launcher checked against the bound tensor's length; every workgroup-array,
            // local-array and vector index is in range by construction (reduction trees, tile
            // slices, `j < 4`); every loop runs to a parameter or a constant; every integer
            // divisor is a constant, a parameter the launcher checks is non-zero, or a factor
            // of a count the invocation has already tested its index against. The setting is
            // fixed when the context is made, so `modules` (keyed by kernel) never mixes
            // checked and unchecked modules. Pipelines from either kind share the on-disk
            // cache safely: the Vulkan pipeline cache (src/gpu/pipeline_cache.rs) is keyed by
            // the driver on the SPIR-V it is given, which differs wherever naga injected a
            // check (and where nothing was injected the code is the same).
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                kernel: kernel.shader_path().into(),
                entry_point: "(module)".into(),
                message: err.to_string(),
            });
        }
        modules.insert(kernel, module.clone());
        Ok(module)
    }

    /// A buffer (counted in [`GpuContext::allocations`]).
    #[allow(clippy::disallowed_methods)]
    pub fn create_buffer(&self, desc: &wgpu::BufferDescriptor) -> wgpu::Buffer {
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.device.create_buffer(desc)
    }

    /// A buffer holding `desc.contents` (counted in [`GpuContext::allocations`]).
    #[allow(clippy::disallowed_methods)]
    pub fn create_buffer_init(&self, desc: &wgpu::util::BufferInitDescriptor) -> wgpu::Buffer {
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.device.create_buffer_init(desc)
    }

    /// A bind group (counted in [`GpuContext::allocations`]).
    #[allow(clippy::disallowed_methods)]
    pub fn create_bind_group(&self, desc: &wgpu::BindGroupDescriptor) -> wgpu::BindGroup {
        self.bind_groups_created.fetch_add(1, Ordering::Relaxed);
        self.device.create_bind_group(desc)
    }

    /// Buffers and bind groups created on this context so far.
    pub fn allocations(&self) -> Allocations {
        Allocations {
            buffers: self.buffers_created.load(Ordering::Relaxed),
            bind_groups: self.bind_groups_created.load(Ordering::Relaxed),
        }
    }

    /// The bind-group layout of `layout` (an explicit one; `None` for [`BindLayout::Auto`]),
    /// created once per context so every pipeline and bind group built on it is compatible.
    pub fn bind_group_layout(&self, layout: BindLayout) -> Result<Option<wgpu::BindGroupLayout>> {
        Ok(self.explicit_layout(layout)?.map(|(bgl, _)| bgl))
    }

    fn explicit_layout(&self, layout: BindLayout) -> Result<Option<ExplicitLayout>> {
        let BindLayout::DynamicUniform {
            storage,
            uniform_size,
        } = layout
        else {
            return Ok(None);
        };
        let mut layouts = self
            .layouts
            .lock()
            .map_err(|_| Error::gpu("layout cache", "poisoned"))?;
        if let Some(found) = layouts.get(&layout) {
            return Ok(Some(found.clone()));
        }
        let mut entries: Vec<wgpu::BindGroupLayoutEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *access == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: storage.len() as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: NonZeroU64::new(uniform_size),
            },
            count: None,
        });
        let label = format!("{} storage + dynamic uniform", storage.len());
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bgl = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!("bind group layout {label}"), err));
        }
        let made = (bgl, pipeline_layout);
        layouts.insert(layout, made.clone());
        Ok(Some(made))
    }

    /// The compute pipeline for `entry` with the given bind-group layout and override constants,
    /// compiled once and cached. The label is `kernel/entry`, so captures read like code.
    pub fn pipeline(
        &self,
        entry: EntryPoint,
        layout: BindLayout,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key: PipelineKey = (
            entry,
            layout,
            constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        );
        {
            let cache = self
                .pipelines
                .lock()
                .map_err(|_| Error::gpu("pipeline cache", "poisoned"))?;
            if let Some(p) = cache.get(&key) {
                return Ok(p.clone());
            }
        }
        let kernel = entry.kernel;
        let module = self.module(kernel)?;
        let explicit = self.explicit_layout(layout)?;
        let label = entry.to_string();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: explicit.as_ref().map(|(_, pl)| pl),
                module: &module,
                entry_point: Some(entry.name),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self.disk_cache.as_ref().map(|c| &c.cache),
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                kernel: kernel.shader_path().into(),
                entry_point: entry.name.into(),
                message: err.to_string(),
            });
        }
        if let Some(cache) = &self.disk_cache {
            cache.touch();
        }
        self.pipelines
            .lock()
            .map_err(|_| Error::gpu("pipeline cache", "poisoned"))?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Number of pipelines compiled so far (for `inspect` and the bench).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Records `dispatches` into one compute pass of one command buffer and submits it. Does not
    /// wait: the next readback (or [`GpuContext::wait`]) is the sync point.
    pub fn submit(&self, dispatches: &[&crate::gpu::Dispatch]) -> Result<()> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        crate::gpu::Dispatch::record_all(&mut encoder, dispatches);
        self.queue.submit([encoder.finish()]);
        self.check_errors("submit")
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu("waiting for the GPU", e))?;
        self.check_errors("GPU work")
    }
}

impl Drop for GpuContext {
    /// Saves the pipeline cache for library users who never call
    /// [`GpuContext::save_pipeline_cache`]; an error here only costs the next run its compile.
    fn drop(&mut self) {
        let _ = self.save_pipeline_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        name: &str,
        device_type: wgpu::DeviceType,
        backend: wgpu::Backend,
    ) -> wgpu::AdapterInfo {
        let mut info = wgpu::AdapterInfo::new(device_type, backend);
        info.name = name.into();
        info
    }

    #[test]
    fn shader_checks_parse_on_off_and_name_the_option_otherwise() {
        let with = |v: Option<&str>| GpuOptions {
            shader_checks: v.map(str::to_owned),
            ..GpuOptions::default()
        };
        assert!(with(None).parse_shader_checks().unwrap());
        assert!(with(Some("on")).parse_shader_checks().unwrap());
        assert!(with(Some(" ON ")).parse_shader_checks().unwrap());
        assert!(!with(Some("off")).parse_shader_checks().unwrap());
        assert!(!with(Some("Off")).parse_shader_checks().unwrap());
        for bad in ["true", "0", "unchecked"] {
            let e = with(Some(bad))
                .parse_shader_checks()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("WGPU_DIFFUSION_SHADER_CHECKS")
                    && e.contains("--shader-checks")
                    && e.contains("on or off")
                    && e.contains(bad),
                "{e}"
            );
        }
    }

    #[test]
    fn vulkan_wins_over_gl_at_equal_type_but_not_over_a_better_device() {
        use wgpu::{Backend, DeviceType};
        let gl_first = [
            info("llvmpipe", DeviceType::Cpu, Backend::Gl),
            info("llvmpipe", DeviceType::Cpu, Backend::Vulkan),
        ];
        let options = GpuOptions::default();
        assert_eq!(choose(&gl_first, &options).unwrap(), Some(1));
        let gpu_on_gl = [
            info("llvmpipe", DeviceType::Cpu, Backend::Vulkan),
            info("NVIDIA H100", DeviceType::DiscreteGpu, Backend::Gl),
        ];
        assert_eq!(choose(&gpu_on_gl, &options).unwrap(), Some(1));
        let by_name = GpuOptions {
            adapter_name: Some("LLVMPIPE".into()),
            ..GpuOptions::default()
        };
        assert_eq!(choose(&gpu_on_gl, &by_name).unwrap(), Some(0));
        let missing = GpuOptions {
            adapter_name: Some("radeon".into()),
            ..GpuOptions::default()
        };
        assert_eq!(choose(&gpu_on_gl, &missing).unwrap(), None);
        assert_eq!(choose(&[], &options).unwrap(), None);
    }
}
