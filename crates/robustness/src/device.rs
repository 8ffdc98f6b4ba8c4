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
