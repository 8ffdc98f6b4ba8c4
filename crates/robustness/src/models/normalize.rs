//! Input normalisation as the model's first layer, so every model takes raw images in [0, 1]
//! and attacks work in pixel space (as `InputNormalize` in the reference library).

use burn::prelude::*;

/// Per-channel `(x - mean) / std`, with the statistics stored as plain numbers (not parameters).
#[derive(Module, Debug)]
pub struct Normalize {
    #[module(skip)]
    mean: Vec<f32>,
    #[module(skip)]
    std: Vec<f32>,
}

impl Normalize {
    /// `mean` and `std` have one entry per channel; `std` entries must be positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self { mean, std }
    }

    /// Per-channel means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel standard deviations.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// x: [batch, C, H, W] in [0, 1] -> [batch, C, H, W] normalised.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let c = self.mean.len();
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        let shift: Vec<f32> = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(m, s)| -m / s)
            .collect();
        let scale = Tensor::<1>::from_floats(scale.as_slice(), &device).reshape([1, c, 1, 1]);
        let shift = Tensor::<1>::from_floats(shift.as_slice(), &device).reshape([1, c, 1, 1]);
        x * scale + shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_channel() {
        let device = Device::flex();
        let n = Normalize::new(vec![0.5, 0.25], vec![0.5, 0.25]);
        // [1, 2, 1, 2]
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32, 1.0, 0.25, 0.0], [1, 2, 1, 2]),
            &device,
        );
        let y: Vec<f32> = crate::tensors::to_vec(n.forward(x));
        let expected = [0.0, 1.0, 0.0, -1.0];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }
}
