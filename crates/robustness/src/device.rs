//! Compute device selection: the CPU (Burn's Flex backend) by default; a GPU through the
//! `vulkan` or `cuda` cargo features, chosen at run time with `--device`.

use crate::error::{Error, Result};
use burn::tensor::Device;

/// Device names accepted by `--device`.
pub const DEVICE_NAMES: &str =
    "cpu, vulkan[:I] (build with --features vulkan), cuda[:I] (build with --features cuda)";

/// Resolves a `--device` name to one Burn device (without autodiff): `cpu`, `vulkan`,
/// `vulkan:I` (the I-th discrete GPU), `cuda` or `cuda:I`. A comma-separated list is refused
/// here: only training uses several devices ([`select_many`]).
pub fn select(name: &str) -> Result<Device> {
    let mut devices = select_many(name)?;
    if devices.len() > 1 {
        return Err(Error::Device(format!(
            "--device {name}: several devices are used only by `train` (data-parallel); for constructions and evaluations run one process per device with --shard K/N"
        )));
    }
    Ok(devices.remove(0))
}

/// Resolves a comma-separated `--device` list (`cuda:0,cuda:1`, `vulkan:0,vulkan:1`, ...) to
/// the devices of a data-parallel run, in order; the first holds the model. The same device may
/// appear twice (`cpu,cpu`: two replicas sharing the CPU's cores, which checks the data-parallel
/// path on a machine without GPUs but makes nothing faster).
pub fn select_many(list: &str) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    for item in list.split(',') {
        let item = item.trim().to_ascii_lowercase();
        let (name, index) = match item.split_once(':') {
            Some((name, index)) => {
                let index: usize = index.parse().map_err(|_| {
                    Error::Device(format!(
                        "'{item}': the index after ':' must be a number (e.g. cuda:1)"
                    ))
                })?;
                (name, Some(index))
            }
            None => (item.as_str(), None),
        };
        let device = match name {
            "cpu" | "flex" if index.is_none() => Device::flex(),
            "cpu" | "flex" => {
                return Err(Error::Device(format!(
                    "'{item}': the CPU has no index (use cpu)"
                )));
            }
            "vulkan" => vulkan(index)?,
            "cuda" => cuda(index)?,
            "" => {
                return Err(Error::Device(format!(
                    "--device '{list}': an empty entry in the list"
                )));
            }
            other => {
                return Err(Error::Device(format!(
                    "unknown device '{other}': expected one of {DEVICE_NAMES}"
                )));
            }
        };
        devices.push(device);
    }
    Ok(devices)
}

#[cfg(feature = "vulkan")]
fn vulkan(index: Option<usize>) -> Result<Device> {
    // Initialise eagerly so that a machine without a Vulkan adapter gets an error here, not a
    // panic inside the runtime at the first tensor operation.
    use burn::tensor::wgpu::WgpuBackend;
    let mut options = Device::wgpu_options().graphics_api(WgpuBackend::Vulkan);
    if let Some(i) = index {
        options = options.device_kind(burn::tensor::DeviceKind::DiscreteGpu(i));
    }
    options.init().map_err(|e| {
        Error::Device(format!(
            "no Vulkan GPU{} could be opened ({e}); is a GPU driver with Vulkan support installed?",
            index.map(|i| format!(" number {i}")).unwrap_or_default()
        ))
    })
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_index: Option<usize>) -> Result<Device> {
    Err(Error::Device(
        "this binary was built without Vulkan support: rebuild with `--features vulkan`".into(),
    ))
}

#[cfg(feature = "cuda")]
fn cuda(index: Option<usize>) -> Result<Device> {
    Ok(Device::cuda(index.unwrap_or(0)))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: Option<usize>) -> Result<Device> {
    Err(Error::Device(
        "this binary was built without CUDA support: rebuild with `--features cuda` (needs network access at build time)".into(),
    ))
}

/// A short human-readable description of the device, for logs and benchmark tables.
pub fn describe(device: &Device) -> String {
    format!("{device:?}")
}

/// Which matrix-multiply kernels the CPU backend uses on this machine: the build's `x86-v4`
/// feature compiles AVX-512 kernels in, and `gemm` picks them at run time only when the CPU has
/// AVX-512F (otherwise AVX2 + FMA, then SSE / scalar), so one binary runs everywhere.
pub fn cpu_kernels() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        match (cfg!(feature = "x86-v4"), avx512, avx2) {
            (true, true, _) => "avx512 (x86-v4 build)",
            (false, true, _) => "avx2+fma (AVX-512 available: build with --features x86-v4)",
            (_, false, true) => "avx2+fma",
            _ => "sse/scalar",
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        "native"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_unknown_names_are_errors() {
        assert!(select("cpu").is_ok());
        let err = select("tpu").expect_err("tpu is not a device");
        assert!(err.to_string().contains("unknown device 'tpu'"));
    }

    #[test]
    fn device_lists_name_every_replica_and_bad_entries_are_errors() {
        assert_eq!(select_many("cpu").expect("one cpu").len(), 1);
        assert_eq!(select_many("cpu, cpu").expect("two cpu replicas").len(), 2);
        let err = select("cpu,cpu").expect_err("select takes one device");
        assert!(err.to_string().contains("only by `train`"), "{err}");
        for (bad, says) in [
            ("cpu:1", "no index"),
            ("cuda:x", "must be a number"),
            ("cpu,,cpu", "empty entry"),
            ("cpu,tpu", "unknown device 'tpu'"),
        ] {
            let err = select_many(bad).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }
}
