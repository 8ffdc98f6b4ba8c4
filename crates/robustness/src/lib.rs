//! `robustness`: adversarial robustness research in Rust, on the Burn framework.
//!
//! Data sets ([`data`]), classifiers that take raw [0, 1] images ([`models`]), training with
//! crash-safe checkpoints ([`train`]), evaluation ([`eval`]), the data-set constructions of
//! "Adversarial Examples Are Not Bugs, They Are Features" ([`construct`]) and image synthesis
//! with a single classifier ([`synthesis`]).
//!
//! ```no_run
//! use robustness::{data, defaults, device, train};
//! # fn main() -> robustness::Result<()> {
//! let split = data::load(data::DatasetKind::Digits, None, 0, &Default::default())?;
//! let config = defaults::for_dataset(data::DatasetKind::Digits);
//! let cpu = device::select("cpu")?;
//! let out = std::path::Path::new("runs/digits");
//! let summary = train::train(&config, &split, out, false, &cpu, &mut train::Silent)?;
//! println!("test accuracy {:.2}%", 100.0 * summary.test_accuracy);
//! # Ok(()) }
//! ```

pub mod attack;
pub mod bench;
pub mod construct;
pub mod data;
pub mod defaults;
pub mod device;
pub mod error;
pub mod eval;
pub mod interop;
pub mod models;
pub mod report;
pub mod synthesis;
pub mod tensors;
pub mod theory;
pub mod train;

pub use burn::tensor::Device;
pub use error::{Error, Result};
pub use models::{Arch, Classifier, ModelSpec};
