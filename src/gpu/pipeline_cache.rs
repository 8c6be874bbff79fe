//! The on-disk pipeline cache: wgpu's `PIPELINE_CACHE` (a `VkPipelineCache` on Vulkan, the only
//! backend that has one) loaded from and saved to a file under the user's cache directory, so a
//! second run skips the driver's shader compilation where the driver keeps it in that cache.
//! One file per adapter and driver version (wgpu's `pipeline_cache_key` plus the driver string),
//! written atomically (temp file + rename); a corrupt, truncated or foreign file is ignored with a
//! warning and overwritten. `WGPU_DIFFUSION_PIPELINE_CACHE=off` (or the CLI's
//! `--no-pipeline-cache`) disables it; any other value is the directory to use.
//!
//! Contexts with shader runtime checks on and off (`GpuOptions::shader_checks`) share the file:
//! the driver keys a `VkPipelineCache` entry on the pipeline's SPIR-V, and a module built without
//! naga's checks has different SPIR-V wherever a check was dropped, so a checked pipeline is never
//! handed out for an unchecked one or the reverse (identical SPIR-V is identical code).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// The environment variable that disables (`off`, `0`, `false`, `no`) or relocates the cache.
pub const ENV: &str = "WGPU_DIFFUSION_PIPELINE_CACHE";

/// The directory `WGPU_DIFFUSION_PIPELINE_CACHE`, `XDG_CACHE_HOME` and `HOME` name, in that
/// order: `$WGPU_DIFFUSION_PIPELINE_CACHE`, `$XDG_CACHE_HOME/wgpu-diffusion`,
/// `$HOME/.cache/wgpu-diffusion`. `None` when the variable disables the cache or no directory
/// can be named.
pub fn dir_from_env() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(value) = var(ENV) {
        let text = value.to_string_lossy().trim().to_lowercase();
        if matches!(text.as_str(), "off" | "0" | "false" | "no") {
            return None;
        }
        return Some(PathBuf::from(value));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("wgpu-diffusion"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".cache").join("wgpu-diffusion"))
}

/// The cache file for `info` in `dir`, or `None` for a backend without a pipeline cache. The
/// name is wgpu's key (backend, vendor, device) plus the driver string, so a driver upgrade
/// starts a new file instead of handing the driver another version's blobs.
pub fn file_for(dir: &Path, info: &wgpu::AdapterInfo) -> Option<PathBuf> {
    let key = wgpu::util::pipeline_cache_key(info)?;
    let driver: String = format!("{}_{}", info.driver, info.driver_info)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(dir.join(format!("{key}_{driver}.bin")))
}

/// What the context did with the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineCacheStatus {
    /// Not in use, and why (disabled, a backend without one, a device the application opened).
    Off(String),
    /// In use: `loaded_bytes` read from `path` (0 when the file did not exist yet).
    Active { path: PathBuf, loaded_bytes: usize },
    /// `path` existed but could not be used (`reason`); the cache started empty and the file
    /// will be replaced when the cache is saved.
    Ignored { path: PathBuf, reason: String },
}

impl PipelineCacheStatus {
    /// A one-line warning for a cache file that was ignored.
    pub fn warning(&self) -> Option<String> {
        match self {
            PipelineCacheStatus::Ignored { path, reason } => Some(format!(
                "pipeline cache {} ignored ({reason}); shaders compile from scratch and the file \
                 will be rewritten",
                path.display()
            )),
            _ => None,
        }
    }
}

/// A live cache: the wgpu object, where it is saved, and whether pipelines were added since the
/// last save.
pub(crate) struct DiskCache {
    pub(crate) cache: wgpu::PipelineCache,
    path: PathBuf,
    dirty: AtomicBool,
}

impl DiskCache {
    /// Opens the cache of `path` on `device` (which must have `Features::PIPELINE_CACHE`). A file
    /// that wgpu refuses (bad magic, truncated, another adapter or driver, another wgpu) is
    /// ignored: the status says so and the cache starts empty.
    pub(crate) fn open(device: &wgpu::Device, path: PathBuf) -> (DiskCache, PipelineCacheStatus) {
        let (data, mut status) = match std::fs::read(&path) {
            Ok(bytes) => {
                let loaded_bytes = bytes.len();
                (
                    Some(bytes),
                    PipelineCacheStatus::Active {
                        path: path.clone(),
                        loaded_bytes,
                    },
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                None,
                PipelineCacheStatus::Active {
                    path: path.clone(),
                    loaded_bytes: 0,
                },
            ),
            Err(e) => (
                None,
                PipelineCacheStatus::Ignored {
                    path: path.clone(),
                    reason: format!("cannot read it: {e}"),
                },
            ),
        };
        let mut cache = None;
        if let Some(bytes) = &data {
            // `fallback: false` turns every unusable file into a validation error we can see.
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            // SAFETY: wgpu validates the header (magic, wgpu's cache ABI, backend, adapter key,
            // the driver's validation key, length) before handing the data to the driver, and
            // the file is only ever written from `PipelineCache::get_data` by `save`. A file
            // edited by hand past those checks is what wgpu's docs call impossible to prove.
            let made = unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("wgpu-diffusion pipeline cache"),
                    data: Some(bytes),
                    fallback: false,
                })
            };
            match pollster::block_on(scope.pop()) {
                None => cache = Some(made),
                Some(err) => {
                    status = PipelineCacheStatus::Ignored {
                        path: path.clone(),
                        reason: err.to_string(),
                    }
                }
            }
        }
        let cache = cache.unwrap_or_else(|| {
            // SAFETY: no data is handed to the driver.
            unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("wgpu-diffusion pipeline cache"),
                    data: None,
                    fallback: true,
                })
            }
        });
        // An ignored file is rewritten at the next save even if nothing new is compiled.
        let dirty = matches!(status, PipelineCacheStatus::Ignored { .. });
        (
            DiskCache {
                cache,
                path,
                dirty: AtomicBool::new(dirty),
            },
            status,
        )
    }

    /// Notes that a pipeline was compiled through the cache.
    pub(crate) fn touch(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the cache's data to its file (temp file beside it, then rename) when pipelines
    /// were compiled since the last save. Returns the path written, `None` when nothing was.
    pub(crate) fn save(&self) -> Result<Option<PathBuf>> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(None);
        };
        let result = write_atomically(&self.path, &data);
        if result.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        result.map(|()| Some(self.path.clone()))
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline-cache".into());
    // Unique per write: test threads (and processes) share one cache file and save at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let number = WRITES.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.{}.{number}.tmp", std::process::id()));
    let written = std::fs::write(&temp, data).and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(backend: wgpu::Backend, driver_info: &str) -> wgpu::AdapterInfo {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, backend);
        info.name = "llvmpipe (LLVM 15.0.6, 256 bits)".into();
        info.vendor = 0x10005;
        info.driver = "llvmpipe".into();
        info.driver_info = driver_info.into();
        info
    }

    #[test]
    fn one_file_per_driver_version_and_none_for_gl() {
        let dir = Path::new("/c");
        let a = file_for(
            dir,
            &info(wgpu::Backend::Vulkan, "Mesa 22.3.6 (LLVM 15.0.6)"),
        );
        let b = file_for(
            dir,
            &info(wgpu::Backend::Vulkan, "Mesa 25.0.7 (LLVM 19.1.7)"),
        );
        let a = a.expect("vulkan has a cache");
        assert_ne!(Some(&a), b.as_ref());
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            name.starts_with("wgpu_pipeline_cache_vulkan_")
                && name.contains("Mesa_22.3.6")
                && !name.contains(' ')
                && !name.contains('/'),
            "{name}"
        );
        assert_eq!(file_for(dir, &info(wgpu::Backend::Gl, "x")), None);
    }

    #[test]
    fn written_atomically_over_an_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join("cache.bin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp file left behind: {names:?}");
    }
}
