//! `ROBUSTNESS_CONV_TRACE=1` in the environment: one line on stderr per 2D convolution pass
//! (forward, input gradient, weight gradient) with its shapes, stride and wall time, to see
//! where a training or attack step spends its convolution time (robustness patch). Read once
//! per process; when it is off, a pass costs one cached flag check.

use alloc::string::String;
use alloc::vec::Vec;
use burn_backend::ops::ConvOptions;
use burn_std::Shape;

/// Whether the trace is on.
fn on() -> bool {
    #[cfg(feature = "std")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("ROBUSTNESS_CONV_TRACE").is_some())
    }
    #[cfg(not(feature = "std"))]
    false
}

/// The shapes and stride of a pass, when the trace is on.
pub(crate) fn describe(x: &Shape, w: &Shape, options: &ConvOptions<2>) -> Option<String> {
    if !on() {
        return None;
    }
    let dims = |s: &Shape| (0..s.num_dims()).map(|i| s[i]).collect::<Vec<_>>();
    Some(alloc::format!(
        "x{:?} w{:?} stride{:?}",
        dims(x),
        dims(w),
        options.stride
    ))
}

/// Runs `f`, the `pass` of a convolution; with a description (the trace is on), times it and
/// writes the line.
pub(crate) fn timed<R>(pass: &str, what: Option<String>, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "std")]
    if let Some(what) = what {
        let start = std::time::Instant::now();
        let r = f();
        std::eprintln!(
            "conv-trace {pass} {what} {:.3} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        return r;
    }
    let _ = (pass, what);
    f()
}
