//! Moving host data (the loaders' `Vec<f32>` batches) to and from Burn tensors.

use burn::prelude::*;

/// images: N*C*H*W values -> [N, C, H, W] on `device`.
pub fn images(images: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(images, shape), device)
}

/// labels -> [N] integer tensor on `device`.
pub fn labels(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// A float tensor's values on the host, as f32.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a converted f32 tensor yields f32 values")
}

/// Class labels [N] -> their values on the host.
pub fn label_values(labels: &Tensor<1, Int>) -> Vec<usize> {
    labels
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("a converted i64 tensor yields i64 values")
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

/// logits: [N, K] -> the arg-max class of each row, on the host.
pub fn argmax_rows(logits: Tensor<2>) -> Vec<usize> {
    let [_, k] = logits.dims();
    let values = to_vec(logits);
    values
        .chunks(k.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}
