//! Compute device selection: the CPU (Burn's Flex backend) by default; a GPU through the
//! `vulkan` or `cuda` cargo features, chosen at run time with `--device`.

use crate::error::{Error, Result};
use burn::tensor::Device;

/// Device names accepted by `--device`.
pub const DEVICE_NAMES: &str =
    "cpu, vulkan (build with --features vulkan), cuda (build with --features cuda)";

/// Resolves a `--device` name to a Burn device (without autodiff).
pub fn select(name: &str) -> Result<Device> {
    match name.to_ascii_lowercase().as_str() {
        "cpu" | "flex" => Ok(Device::flex()),
        "vulkan" => vulkan(),
        "cuda" => cuda(),
        other => Err(Error::Device(format!(
            "unknown device '{other}': expected one of {DEVICE_NAMES}"
        ))),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan() -> Result<Device> {
    // Initialise eagerly so that a machine without a Vulkan adapter gets an error here, not a
    // panic inside the runtime at the first tensor operation.
    use burn::tensor::wgpu::WgpuBackend;
    Device::wgpu_options()
        .graphics_api(WgpuBackend::Vulkan)
        .init()
        .map_err(|e| {
            Error::Device(format!(
                "no Vulkan GPU could be opened ({e}); is a GPU driver with Vulkan support installed?"
            ))
        })
}

#[cfg(not(feature = "vulkan"))]
fn vulkan() -> Result<Device> {
    Err(Error::Device(
        "this binary was built without Vulkan support: rebuild with `--features vulkan`".into(),
    ))
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
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
}
