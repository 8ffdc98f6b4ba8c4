//! Clean evaluation: accuracy, per-class accuracy and the confusion matrix of a classifier on a
//! data set (batch norm in inference mode, no gradients).

use crate::data::Dataset;
use crate::models::Classifier;
use crate::tensors;
use burn::prelude::*;
use serde::Serialize;

/// Clean-accuracy report.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Fraction of correctly classified examples, in [0, 1].
    pub accuracy: f64,
    /// Per-class accuracy (fraction of each true class classified correctly; NaN-free: a class
    /// without examples gets 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Number of examples.
    pub examples: usize,
}

/// Predicted classes for every example of `dataset`.
pub fn predict(
    model: &Classifier,
    dataset: &Dataset,
    batch_size: usize,
    device: &Device,
) -> Vec<usize> {
    let model = model.for_inference();
    let device = device.clone().without_autodiff();
    let n = dataset.len();
    let (c, h, w) = (dataset.channels, dataset.height, dataset.width);
    let per = dataset.image_len();
    let mut out = Vec::with_capacity(n);
    let batch_size = batch_size.max(1);
    for start in (0..n).step_by(batch_size) {
        let end = (start + batch_size).min(n);
        let x = tensors::images(
            dataset.images[start * per..end * per].to_vec(),
            [end - start, c, h, w],
            &device,
        );
        out.extend(tensors::argmax_rows(model.forward(x)));
    }
    out
}

/// Logits of `model` on `images` (`shape` = [N, C, H, W], values in [0, 1]), row-major
/// `[N, classes]`, computed `batch_size` images at a time.
pub fn logits(
    model: &Classifier,
    images: &[f32],
    shape: [usize; 4],
    batch_size: usize,
    device: &Device,
) -> Vec<f32> {
    let model = model.for_inference();
    let device = device.clone().without_autodiff();
    let [n, c, h, w] = shape;
    let per = c * h * w;
    let mut out = Vec::new();
    let batch_size = batch_size.max(1);
    for start in (0..n).step_by(batch_size) {
        let end = (start + batch_size).min(n);
        let x = tensors::images(
            images[start * per..end * per].to_vec(),
            [end - start, c, h, w],
            &device,
        );
        out.extend(tensors::to_vec(model.forward(x)));
    }
    out
}

/// Accuracy, per-class accuracy and confusion matrix of `model` on `dataset`.
pub fn evaluate(
    model: &Classifier,
    dataset: &Dataset,
    batch_size: usize,
    device: &Device,
) -> EvalReport {
    let predictions = predict(model, dataset, batch_size, device);
    report(&predictions, &dataset.labels, dataset.num_classes())
}

/// Builds a report from predictions and true labels.
pub fn report(predictions: &[usize], labels: &[usize], num_classes: usize) -> EvalReport {
    let k = num_classes.max(1);
    let mut confusion = vec![vec![0usize; k]; k];
    for (&p, &y) in predictions.iter().zip(labels) {
        if y < k && p < k {
            confusion[y][p] += 1;
        }
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let total: usize = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[i] as f64 / total as f64
            }
        })
        .collect();
    EvalReport {
        accuracy: if labels.is_empty() {
            0.0
        } else {
            correct as f64 / labels.len() as f64
        },
        per_class_accuracy,
        confusion,
        examples: labels.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_confusions() {
        let r = report(&[0, 1, 1, 0], &[0, 1, 0, 0], 2);
        assert_eq!(r.confusion, vec![vec![2, 1], vec![0, 1]]);
        assert!((r.accuracy - 0.75).abs() < 1e-12);
        assert!((r.per_class_accuracy[0] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class_accuracy[1], 1.0);
    }
}
