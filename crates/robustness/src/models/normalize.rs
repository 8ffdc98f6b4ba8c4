//! Input normalisation as the model's first layer, so every model takes raw images in [0, 1]
//! and attacks work in pixel space (as `InputNormalize` in the reference library).

use burn::prelude::*;

/// Per-channel `(clamp(x, 0, 1) - mean) / std`, with the statistics stored as plain numbers
/// (not parameters). The clamp is the reference library's `InputNormalize`: it is the identity on
/// images, and it zeroes the input gradient of pixels sitting exactly at 0 or 1 (PyTorch's clamp
/// gradient), which changes the direction of L2 attack steps; our golden test pins this.
/// Non-image inputs (the synthetic feature model) are not clamped.
#[derive(Module, Debug)]
pub struct Normalize {
    #[module(skip)]
    mean: Vec<f32>,
    #[module(skip)]
    std: Vec<f32>,
    #[module(skip)]
    clamp: bool,
}

impl Normalize {
    /// `mean` and `std` have one entry per channel; `std` entries must be positive. `clamp`:
    /// clamp inputs to [0, 1] first (images).
    pub fn new(mean: Vec<f32>, std: Vec<f32>, clamp: bool) -> Self {
        Self { mean, std, clamp }
    }

    /// Whether inputs are clamped to [0, 1] (image models).
    pub fn clamps(&self) -> bool {
        self.clamp
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
        let x = if self.clamp { clamp_like_pytorch(x) } else { x };
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

/// clamp(x, 0, 1) whose gradient is 1 strictly inside (0, 1) and 0 at or beyond the bounds, as
/// PyTorch's clamp (Burn's passes the gradient at the bounds too). Written as
/// `clamp(x).detach() + (x - x.detach()) * interior`: the value is clamp(x), the gradient the mask.
fn clamp_like_pytorch(x: Tensor<4>) -> Tensor<4> {
    if !x.is_autodiff() {
        return x.clamp(0.0, 1.0);
    }
    let interior = x
        .clone()
        .greater_elem(0.0)
        .bool_and(x.clone().lower_elem(1.0))
        .float();
    let constant = x.clone().detach();
    constant.clone().clamp(0.0, 1.0) + (x - constant) * interior
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_channel() {
        let device = Device::flex();
        let n = Normalize::new(vec![0.5, 0.25], vec![0.5, 0.25], true);
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

    #[test]
    fn clamp_gradient_is_zero_at_the_bounds_like_pytorch() {
        let device = Device::flex().autodiff();
        let n = Normalize::new(vec![0.0], vec![1.0], true);
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![0.0f32, 0.5, 1.0, 1.5], [1, 1, 1, 4]),
            &device,
        )
        .require_grad();
        let y = n.forward(x.clone());
        let values = crate::tensors::to_vec(y.clone());
        assert_eq!(values, vec![0.0, 0.5, 1.0, 1.0]);
        let grads = y.sum().backward();
        let g = crate::tensors::to_vec(x.grad(&grads).expect("grad"));
        assert_eq!(g, vec![0.0, 1.0, 0.0, 0.0]);
    }
}
