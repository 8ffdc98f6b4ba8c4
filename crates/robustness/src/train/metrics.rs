//! Per-epoch metrics, and the `metrics.jsonl` file that holds one JSON object per epoch.

use crate::error::{Error, Result};
use crate::train::checkpoint::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss (on adversarial inputs when adversarially training).
    pub train_loss: f64,
    /// Training accuracy, a fraction in [0, 1].
    pub train_accuracy: f64,
    /// Test accuracy, a fraction in [0, 1].
    pub test_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall-clock seconds of the whole epoch: training, evaluation, checkpoint.
    pub seconds: f64,
    /// Wall-clock seconds of the training pass (batches, steps, metrics).
    pub train_seconds: f64,
    /// Seconds inside the framework steps alone (upload, forward, loss, backward, optimizer
    /// step); `train_seconds / step_seconds - 1` is the loop's overhead.
    #[serde(default)]
    pub step_seconds: f64,
    /// Seconds of the test-set evaluation.
    #[serde(default)]
    pub eval_seconds: f64,
    /// Robust test accuracy (adversarial training with `--adv-eval`), in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust_test_accuracy: Option<f64>,
    /// With `--ema`: test accuracy of the optimizer's own weights (`test_accuracy` is the
    /// average's), in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_test_accuracy: Option<f64>,
}

/// Writes all epochs' metrics as JSON lines, atomically (the file is rewritten each epoch, so a
/// crash never leaves a torn line).
pub fn write_jsonl(path: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in metrics {
        let line = serde_json::to_string(m)
            .map_err(|e| Error::Config(format!("cannot serialise metrics: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Reads `metrics.jsonl`, keeping the epochs `<= up_to` (those a checkpoint covers).
pub fn read_jsonl(path: &Path, up_to: usize) -> Result<Vec<EpochMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let m: EpochMetrics = serde_json::from_str(line).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("line {}: malformed metrics: {e}", i + 1),
        })?;
        if m.epoch <= up_to {
            out.push(m);
        }
    }
    Ok(out)
}
