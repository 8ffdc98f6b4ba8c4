//! Winograd F(2x2, 3x3) convolution for 3x3 / stride-1 / undilated / ungrouped f32
//! convolutions with enough channels (robustness patch).
//!
//! Each 2x2 block of outputs ("tile") is computed from the 4x4 block of inputs under it:
//!
//! ```text
//! U[xi][co][ci] = (G w[co, ci] G^T)[xi]          (once per call, xi = 4 * row + col)
//! V[ci][xi][p]  = (B^T d[ci, p] B)[xi]           (d: the 4x4 input block of tile p)
//! M[xi][co][p]  = sum_ci U[xi][co][ci] V[ci][xi][p]   (16 GEMMs)
//! y[co, tile p] = A^T M[.][co][p] A              (2x2)
//! ```
//!
//! with the standard F(2, 3) matrices (Lavin and Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016). The GEMMs do 16 multiply-adds per tile and channel pair against
//! im2col's 36: 2.25 times fewer. The input gradient of such a convolution is one too (the
//! kernel rotated by 180 degrees with input and output channels swapped, padding `2 - pad`),
//! and the weight gradient is the adjoint of the same transforms:
//!
//! ```text
//! dM[xi][co][p] = (A dy[co, tile p] A^T)[xi]
//! dw[co, ci]    = G^T (sum_p dM[.][co][p] V[ci][.][p]) G
//! ```
//!
//! Tiles of a block of images are processed together (blocks sized from the shapes only).
//! Blocks run in parallel when there are enough; otherwise the work inside a block is split
//! by channel, transform index or image. Every output element is computed by the same
//! operations in the same order whatever the thread count (the weight gradient sums a fixed
//! number of block partials in order), so results are the same bits on 1 or 16 threads.
//! The results differ from the direct convolution's by rounding only (the transforms add and
//! halve; tests compare against the definition).

use alloc::vec;
use alloc::vec::Vec;

use super::conv_weight_grad::Geometry;

/// Tiles (GEMM columns) wanted per block: images are grouped until a block has this many.
const TARGET_TILES: usize = 256;

/// Fewest input and output channels for which the transforms pay off (the first layer of
/// an RGB network, 3 input channels, stays on im2col).
const MIN_CHANNELS: usize = 16;

/// Least `min(c_in, c_out) x output width`. The transforms' cost per tile grows against the
/// GEMMs' as channels fall (the GEMM work per tile is `c_in x c_out`, the transforms' `c_in +
/// c_out`) and as rows shorten (their loops run along a row of tiles). Measured (2 threads,
/// AVX-512 GEMMs): ResNet-18's stages (64 x 32, 128 x 16, 256 x 8, 512 x 4: 2048 each) run
/// 10-30% faster per pass; the small CNN's 32 -> 64 at 16 wide and 64 -> 128 at 8 wide (512
/// each, batch 128) ran up to 40% slower, so they stay on im2col.
const MIN_CHANNEL_WIDTH: usize = 1024;

/// Partial weight gradients reduced in order (fixed, as in `conv_weight_grad`).
const GRAD_BLOCKS: usize = 8;

/// Whether the forward / input gradient / weight gradient of a convolution with this
/// geometry runs here.
pub(crate) fn applies(geo: &Geometry) -> bool {
    geo.k_h == 3
        && geo.k_w == 3
        && geo.stride == [1, 1]
        && geo.dilation == [1, 1]
        && geo.groups == 1
        && geo.pad[0] <= 2
        && geo.pad[1] <= 2
        && geo.c_in >= MIN_CHANNELS
        && geo.c_out >= MIN_CHANNELS
        && geo.c_in.min(geo.c_out) * geo.out_w.min(geo.w) >= MIN_CHANNEL_WIDTH
        && geo.out_h > 0
        && geo.out_w > 0
        && geo.batch > 0
}

/// [`applies`], unless the environment variable `ROBUSTNESS_NO_WINOGRAD` is set (read once):
/// then every convolution keeps the im2col path, for timing comparisons in one binary and
/// to rule the transforms out when a result looks wrong.
pub(crate) fn enabled(geo: &Geometry) -> bool {
    #[cfg(feature = "std")]
    {
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *OFF.get_or_init(|| std::env::var_os("ROBUSTNESS_NO_WINOGRAD").is_some()) {
            return false;
        }
    }
    applies(geo)
}

/// [`enabled`] for a forward or input gradient, whose output planes are `out_h x out_w`:
/// only when the batch has at least one block's worth of tiles ([`TARGET_TILES`]). Below that
/// the weight transform (16 values per kernel, rewritten on every call) outweighs the
/// savings: ResNet-18's 4x4 stage at batch 32 (128 tiles, 512 channels) ran its forward
/// about twice as slowly as im2col, while its weight gradient (no weight transform) gained.
pub(crate) fn enabled_for_planes(geo: &Geometry, out_h: usize, out_w: usize) -> bool {
    enabled(geo) && enough_tiles(geo.batch, out_h, out_w)
}

fn enough_tiles(batch: usize, out_h: usize, out_w: usize) -> bool {
    batch * out_h.div_ceil(2) * out_w.div_ceil(2) >= TARGET_TILES
}

/// One stride-1 3x3 convolution: `y[n, o, r, c] = sum x[n, i, r + kr - pad_h, c + kc - pad_w]
/// k[o, i, kr, kc]` (zero outside the input), `pad` possibly negative.
#[derive(Clone, Copy)]
struct Problem {
    batch: usize,
    c_in: usize,
    in_h: usize,
    in_w: usize,
    c_out: usize,
    out_h: usize,
    out_w: usize,
    pad: [isize; 2],
}

impl Problem {
    fn tiles_h(&self) -> usize {
        self.out_h.div_ceil(2)
    }
    fn tiles_w(&self) -> usize {
        self.out_w.div_ceil(2)
    }
    fn tiles(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }
    fn images_per_block(&self) -> usize {
        TARGET_TILES
            .div_ceil(self.tiles().max(1))
            .clamp(1, self.batch.max(1))
    }
}

fn forward_problem(geo: &Geometry) -> Problem {
    Problem {
        batch: geo.batch,
        c_in: geo.c_in,
        in_h: geo.h,
        in_w: geo.w,
        c_out: geo.c_out,
        out_h: geo.out_h,
        out_w: geo.out_w,
        pad: [geo.pad[0] as isize, geo.pad[1] as isize],
    }
}

/// `G k G^T` of a 3x3 kernel (row-major) as 16 values.
fn kernel_transform(k: &[f32; 9]) -> [f32; 16] {
    let mut t = [[0.0f32; 3]; 4];
    for j in 0..3 {
        let (a, b, c) = (k[j], k[3 + j], k[6 + j]);
        t[0][j] = a;
        t[1][j] = 0.5 * (a + b + c);
        t[2][j] = 0.5 * (a - b + c);
        t[3][j] = c;
    }
    let mut u = [0.0f32; 16];
    for (i, row) in t.iter().enumerate() {
        let (a, b, c) = (row[0], row[1], row[2]);
        u[4 * i] = a;
        u[4 * i + 1] = 0.5 * (a + b + c);
        u[4 * i + 2] = 0.5 * (a - b + c);
        u[4 * i + 3] = c;
    }
    u
}

/// `U[o][xi][i]` for the forward (`o` = output channel of `w`), or with `flip` for the input
/// gradient (`o` = input channel of `w`, the kernel rotated by 180 degrees). Each row `o`
/// is written contiguously (16 streams), rows in parallel.
fn weight_transform(w: &[f32], c_out: usize, c_in: usize, flip: bool) -> Vec<f32> {
    let (rows, cols) = if flip { (c_in, c_out) } else { (c_out, c_in) };
    let mut u = vec![0.0f32; 16 * rows * cols];
    for_chunks(&mut u, 16 * cols, true, |r, dst| {
        for c in 0..cols {
            let (co, ci) = if flip { (c, r) } else { (r, c) };
            let g = &w[(co * c_in + ci) * 9..][..9];
            let mut k = [0.0f32; 9];
            if flip {
                for (i, v) in k.iter_mut().enumerate() {
                    *v = g[8 - i];
                }
            } else {
                k.copy_from_slice(g);
            }
            for (xi, v) in kernel_transform(&k).into_iter().enumerate() {
                dst[xi * cols + c] = v;
            }
        }
    });
    u
}

/// Scratch of one input plane's transform: its padded plane split into even and odd columns
/// (`2 * (2 * tiles_h + 2) * (tiles_w + 1)`) and the row combinations (`8 * (tiles_w + 1)`).
fn plane_scratch_len(p: &Problem) -> usize {
    let half = p.tiles_w() + 1;
    2 * (2 * p.tiles_h() + 2) * half + 8 * half
}

/// `B^T d B` of every tile of one input plane into `v` (`[xi][ld]`, tile `t` at column
/// `col0 + t`); `scratch` is [`plane_scratch_len`] long.
///
/// With `E` / `O` the even / odd columns of the zero-padded plane, a tile row's column
/// combinations are unit-stride: for tile `tx`, columns `2tx .. 2tx + 3` are `E[tx], O[tx],
/// E[tx + 1], O[tx + 1]`.
fn input_transform(
    plane: &[f32],
    p: &Problem,
    scratch: &mut [f32],
    v: &mut [f32],
    ld: usize,
    col0: usize,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::input_transform(plane, p, scratch, v, ld, col0) };
    }
    input_transform_body(plane, p, scratch, v, ld, col0)
}

/// The same loops compiled with AVX2 (chosen at run time).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn input_transform(
        plane: &[f32],
        p: &Problem,
        scratch: &mut [f32],
        v: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        input_transform_body(plane, p, scratch, v, ld, col0)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn output_transform(
        m: &[f32],
        xi_stride: usize,
        col0: usize,
        p: &Problem,
        bias: f32,
        out: &mut [f32],
    ) {
        output_transform_body(m, xi_stride, col0, p, bias, out)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn output_adjoint(
        g: &[f32],
        p: &Problem,
        dm: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        output_adjoint_body(g, p, dm, ld, col0)
    }
}

/// Index range `lo..hi` of `k < half` with `0 <= 2k + parity - pad < len`.
fn valid_range(parity: isize, pad: isize, len: usize, half: usize) -> (usize, usize) {
    // 2k >= pad - parity and 2k <= len - 1 + pad - parity.
    let lo = (pad - parity).max(0);
    let lo = ((lo + 1) / 2) as usize;
    let top = len as isize - 1 + pad - parity;
    let hi = if top < 0 { 0 } else { (top / 2 + 1) as usize };
    let hi = hi.min(half);
    (lo.min(hi), hi)
}

#[inline(always)]
fn input_transform_body(
    plane: &[f32],
    p: &Problem,
    scratch: &mut [f32],
    v: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let (th, tw) = (p.tiles_h(), p.tiles_w());
    let half = tw + 1;
    let ph = 2 * th + 2;
    let (eo, t) = scratch.split_at_mut(2 * ph * half);
    let (even, odd) = eo.split_at_mut(ph * half);
    // Padded row r holds input row r - pad_h; padded column c holds input column c - pad_w.
    for r in 0..ph {
        let er = &mut even[r * half..][..half];
        let or = &mut odd[r * half..][..half];
        let ir = r as isize - p.pad[0];
        if ir < 0 || ir >= p.in_h as isize {
            er.fill(0.0);
            or.fill(0.0);
            continue;
        }
        let src = &plane[ir as usize * p.in_w..][..p.in_w];
        for (parity, dst) in [(0isize, er), (1, or)] {
            let (lo, hi) = valid_range(parity, p.pad[1], p.in_w, half);
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            if lo < hi {
                // Input column of k = lo: 2 lo + parity - pad >= 0.
                let first = (2 * lo as isize + parity - p.pad[1]) as usize;
                let src = &src[first..];
                for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                    *d = src[2 * k];
                }
            }
        }
    }
    let (te, to) = t.split_at_mut(4 * half);
    for ty in 0..th {
        // Row combinations B^T d over the four padded rows of this tile row.
        for (src, dst) in [(&*even, &mut *te), (&*odd, &mut *to)] {
            let rows = &src[2 * ty * half..][..4 * half];
            let (d0, rest) = rows.split_at(half);
            let (d1, rest) = rest.split_at(half);
            let (d2, d3) = rest.split_at(half);
            let (t0, rest) = dst.split_at_mut(half);
            let (t1, rest) = rest.split_at_mut(half);
            let (t2, t3) = rest.split_at_mut(half);
            for k in 0..half {
                t0[k] = d0[k] - d2[k];
                t1[k] = d1[k] + d2[k];
                t2[k] = d2[k] - d1[k];
                t3[k] = d1[k] - d3[k];
            }
        }
        let base = col0 + ty * tw;
        for i in 0..4 {
            let e = &te[i * half..][..half];
            let o = &to[i * half..][..half];
            let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
            let (r0, rest) = v[4 * i * ld..][..4 * ld].split_at_mut(ld);
            let (r1, rest) = rest.split_at_mut(ld);
            let (r2, r3) = rest.split_at_mut(ld);
            let (r0, r1, r2, r3) = (
                &mut r0[base..base + tw],
                &mut r1[base..base + tw],
                &mut r2[base..base + tw],
                &mut r3[base..base + tw],
            );
            for k in 0..tw {
                r0[k] = e0[k] - e1[k];
                r1[k] = o0[k] + e1[k];
                r2[k] = e1[k] - o0[k];
                r3[k] = o0[k] - o1[k];
            }
        }
    }
}

/// `A^T m A` of every tile of one output plane, `m` read as `[xi][ld]` (tile `t` at column
/// `col0 + t`, transform `xi` at `m[xi * xi_stride..]`), plus `bias`.
fn output_transform(
    m: &[f32],
    xi_stride: usize,
    col0: usize,
    p: &Problem,
    bias: f32,
    out: &mut [f32],
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::output_transform(m, xi_stride, col0, p, bias, out) };
    }
    output_transform_body(m, xi_stride, col0, p, bias, out)
}

#[inline(always)]
fn output_transform_body(
    m: &[f32],
    xi_stride: usize,
    col0: usize,
    p: &Problem,
    bias: f32,
    out: &mut [f32],
) {
    const CHUNK: usize = 16;
    let (th, tw) = (p.tiles_h(), p.tiles_w());
    let (oh, ow) = (p.out_h, p.out_w);
    for ty in 0..th {
        let mut tx0 = 0;
        while tx0 < tw {
            let n = CHUNK.min(tw - tx0);
            let col = col0 + ty * tw + tx0;
            let r = |xi: usize| &m[xi * xi_stride + col..][..n];
            let mut y = [[0.0f32; CHUNK]; 4];
            let mut s0 = [[0.0f32; CHUNK]; 4];
            let mut s1 = [[0.0f32; CHUNK]; 4];
            for k in 0..4 {
                let (a, b, c, d) = (r(k), r(4 + k), r(8 + k), r(12 + k));
                for t in 0..n {
                    s0[k][t] = a[t] + b[t] + c[t];
                    s1[k][t] = b[t] - c[t] - d[t];
                }
            }
            for t in 0..n {
                y[0][t] = s0[0][t] + s0[1][t] + s0[2][t] + bias;
                y[1][t] = s0[1][t] - s0[2][t] - s0[3][t] + bias;
                y[2][t] = s1[0][t] + s1[1][t] + s1[2][t] + bias;
                y[3][t] = s1[1][t] - s1[2][t] - s1[3][t] + bias;
            }
            for i in 0..2 {
                let orow = 2 * ty + i;
                if orow >= oh {
                    continue;
                }
                let dst = &mut out[orow * ow..][..ow];
                let (left, right) = (&y[2 * i], &y[2 * i + 1]);
                for t in 0..n {
                    let c = 2 * (tx0 + t);
                    dst[c] = left[t];
                    if c + 1 < ow {
                        dst[c + 1] = right[t];
                    }
                }
            }
            tx0 += n;
        }
    }
}

/// `A dy A^T` of every tile of one output-gradient plane into `dm` (`[xi][ld]`, tile `t` at
/// column `col0 + t`); positions past the output's edge count as zero.
fn output_adjoint(g: &[f32], p: &Problem, dm: &mut [f32], ld: usize, col0: usize) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::output_adjoint(g, p, dm, ld, col0) };
    }
    output_adjoint_body(g, p, dm, ld, col0)
}

#[inline(always)]
fn output_adjoint_body(g: &[f32], p: &Problem, dm: &mut [f32], ld: usize, col0: usize) {
    let (th, tw) = (p.tiles_h(), p.tiles_w());
    let (oh, ow) = (p.out_h, p.out_w);
    for ty in 0..th {
        for tx in 0..tw {
            let col = col0 + ty * tw + tx;
            let at = |i: usize, j: usize| {
                let (r, c) = (2 * ty + i, 2 * tx + j);
                if r < oh && c < ow { g[r * ow + c] } else { 0.0 }
            };
            let (a, b, c, d) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
            // Rows of A dy: [dy0, dy0 + dy1, dy0 - dy1, -dy1], each a pair.
            let rows = [(a, b), (a + c, b + d), (a - c, b - d), (-c, -d)];
            for (i, &(x, y)) in rows.iter().enumerate() {
                let vals = [x, x + y, x - y, -y];
                for (j, &val) in vals.iter().enumerate() {
                    dm[(4 * i + j) * ld + col] = val;
                }
            }
        }
    }
}

/// Runs `f(index, chunk)` over `data.chunks_mut(size)`, in parallel when asked.
fn for_chunks(
    data: &mut [f32],
    size: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if size == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    if parallel {
        use rayon::prelude::*;
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
        return;
    }
    let _ = parallel;
    for (i, c) in data.chunks_mut(size).enumerate() {
        f(i, c);
    }
}

/// Scratch of one block: `V` (`[c_in][xi][cols]`), `M` (`[xi][c_out][cols]`) and one padded
/// plane per input channel.
fn block_scratch_len(p: &Problem, cols: usize) -> usize {
    16 * p.c_in * cols + 16 * p.c_out * cols + p.c_in * plane_scratch_len(p)
}

/// Input transform of images `n0..n0 + count` into `v` (`[c_in][xi][cols]`).
fn transform_block(
    x: &[f32],
    p: &Problem,
    n0: usize,
    count: usize,
    v: &mut [f32],
    pads: &mut [f32],
    parallel: bool,
) {
    let cols = count * p.tiles();
    let plane = p.in_h * p.in_w;
    let pl = plane_scratch_len(p);
    let v = &mut v[..16 * p.c_in * cols];
    let pads = &mut pads[..p.c_in * pl];
    // Pair each channel's V rows with its own padded plane.
    let mut work: Vec<(&mut [f32], &mut [f32])> =
        v.chunks_mut(16 * cols).zip(pads.chunks_mut(pl)).collect();
    let run = |ci: usize, (vc, pc): &mut (&mut [f32], &mut [f32])| {
        for j in 0..count {
            let src = &x[((n0 + j) * p.c_in + ci) * plane..][..plane];
            input_transform(src, p, pc, vc, cols, j * p.tiles());
        }
    };
    #[cfg(feature = "rayon")]
    if parallel {
        use rayon::prelude::*;
        work.par_iter_mut()
            .enumerate()
            .for_each(|(ci, w)| run(ci, w));
        return;
    }
    let _ = parallel;
    for (ci, w) in work.iter_mut().enumerate() {
        run(ci, w);
    }
}

/// The convolution of `p` with transformed weights `u` (`[c_out][xi][c_in]`).
fn convolve(x: &[f32], u: &[f32], bias: Option<&[f32]>, p: &Problem) -> Vec<f32> {
    let tiles = p.tiles();
    let ipb = p.images_per_block();
    let out_plane = p.out_h * p.out_w;
    let per_image = p.c_out * out_plane;
    let mut out = vec![0.0f32; p.batch * per_image];
    let scratch_len = block_scratch_len(p, ipb * tiles);
    super::conv_native::for_each_block(
        &mut out,
        per_image,
        p.batch,
        ipb,
        scratch_len,
        |n0, count, out_blk, scratch, parallel| {
            let cols = count * tiles;
            let (v, rest) = scratch.split_at_mut(16 * p.c_in * ipb * tiles);
            let (m, pads) = rest.split_at_mut(16 * p.c_out * ipb * tiles);
            transform_block(x, p, n0, count, v, pads, parallel);
            let v: &[f32] = v;
            let m = &mut m[..16 * p.c_out * cols];
            for_chunks(m, p.c_out * cols, parallel, |xi, dst| {
                // SAFETY: lhs is c_out x c_in read from U (`[c_out][xi][c_in]`: row stride
                // 16 * c_in from transform xi; the last row ends at (c_out - 1) * 16 * c_in +
                // xi * c_in + c_in <= u.len()); rhs is c_in x cols read from V likewise (row
                // stride 16 * cols); dst is c_out x cols (row stride cols).
                unsafe {
                    super::conv_native::matmul::<f32>(
                        (p.c_out, cols, p.c_in),
                        dst.as_mut_ptr(),
                        cols,
                        (u.as_ptr().add(xi * p.c_in), 1, 16 * p.c_in),
                        (v.as_ptr().add(xi * cols), 1, 16 * cols),
                        false,
                        false,
                    );
                }
            });
            let m: &[f32] = m;
            for_chunks(out_blk, out_plane, parallel, |idx, dst| {
                let (j, co) = (idx / p.c_out, idx % p.c_out);
                let b = bias.map_or(0.0, |b| b[co]);
                output_transform(&m[co * cols..], p.c_out * cols, j * tiles, p, b, dst);
            });
        },
    );
    out
}

/// Forward: `conv2d(x, w) + bias` (NCHW, `w`: `[c_out, c_in, 3, 3]`) for a geometry that
/// [`applies`].
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, geo: &Geometry) -> Vec<f32> {
    let p = forward_problem(geo);
    let u = weight_transform(w, geo.c_out, geo.c_in, false);
    convolve(x, &u, bias, &p)
}

/// Input gradient (`[batch, c_in, h, w]`) for a geometry that [`applies`], given the output
/// gradient `g` (`[batch, c_out, out_h, out_w]`).
pub(crate) fn x_grad(w: &[f32], g: &[f32], geo: &Geometry) -> Vec<f32> {
    let p = Problem {
        batch: geo.batch,
        c_in: geo.c_out,
        in_h: geo.out_h,
        in_w: geo.out_w,
        c_out: geo.c_in,
        out_h: geo.h,
        out_w: geo.w,
        pad: [2 - geo.pad[0] as isize, 2 - geo.pad[1] as isize],
    };
    let u = weight_transform(w, geo.c_out, geo.c_in, true);
    convolve(g, &u, None, &p)
}

/// Weight gradient (`[c_out, c_in, 3, 3]`) for a geometry that [`applies`], given the input
/// `x` and the output gradient `g`.
pub(crate) fn weight_grad(x: &[f32], g: &[f32], geo: &Geometry) -> Vec<f32> {
    let p = forward_problem(geo);
    let tiles = p.tiles();
    let ipb = p.images_per_block();
    let out_plane = p.out_h * p.out_w;
    let steps = p.batch.div_ceil(ipb);
    let blocks = GRAD_BLOCKS.min(steps);
    let steps_per_block = steps.div_ceil(blocks);
    let (c_in, c_out) = (p.c_in, p.c_out);
    let len = 16 * c_out * c_in;
    // Sum over the images of one block of `dM . V^T`, in the Winograd domain.
    let accumulate = |block: usize, parallel: bool| -> Vec<f32> {
        let mut acc = vec![0.0f32; len];
        let (v_len, dm_len) = (16 * c_in * ipb * tiles, 16 * c_out * ipb * tiles);
        let pads_len = c_in * plane_scratch_len(&p);
        super::conv_native::with_scratch(v_len + dm_len + pads_len, |scratch: &mut [f32]| {
            let (v, rest) = scratch.split_at_mut(v_len);
            let (dm, pads) = rest.split_at_mut(dm_len);
            let start = (block * steps_per_block * ipb).min(p.batch);
            let end = ((block + 1) * steps_per_block * ipb).min(p.batch);
            let mut n0 = start;
            while n0 < end {
                let count = ipb.min(end - n0);
                let cols = count * tiles;
                transform_block(x, &p, n0, count, v, pads, parallel);
                // dM as [c_out][xi][cols].
                for_chunks(
                    &mut dm[..16 * c_out * cols],
                    16 * cols,
                    parallel,
                    |co, d| {
                        for j in 0..count {
                            let src = &g[((n0 + j) * c_out + co) * out_plane..][..out_plane];
                            output_adjoint(src, &p, d, cols, j * tiles);
                        }
                    },
                );
                let (v, dm): (&[f32], &[f32]) = (v, dm);
                let first = n0 == start;
                for_chunks(&mut acc, c_out * c_in, parallel, |xi, dst| {
                    // SAFETY: lhs is c_out x cols read from dM (row stride 16 * cols, starting
                    // at transform xi); rhs = V^T is cols x c_in read from V (element (t, ci)
                    // at ci * 16 * cols + xi * cols + t); dst is c_out x c_in (row stride c_in).
                    unsafe {
                        super::conv_native::matmul::<f32>(
                            (c_out, c_in, cols),
                            dst.as_mut_ptr(),
                            c_in,
                            (dm.as_ptr().add(xi * cols), 1, 16 * cols),
                            (v.as_ptr().add(xi * cols), 16 * cols, 1),
                            false,
                            !first,
                        );
                    }
                });
                n0 += count;
            }
        });
        acc
    };
    #[cfg(feature = "rayon")]
    let partials: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        if blocks >= rayon::current_num_threads() {
            (0..blocks)
                .into_par_iter()
                .map(|b| accumulate(b, false))
                .collect()
        } else {
            (0..blocks).map(|b| accumulate(b, true)).collect()
        }
    };
    #[cfg(not(feature = "rayon"))]
    let partials: Vec<Vec<f32>> = (0..blocks).map(|b| accumulate(b, false)).collect();
    let mut parts = partials.into_iter();
    let mut du = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        for (a, b) in du.iter_mut().zip(part) {
            *a += b;
        }
    }
    // dw[co, ci] = G^T dU G.
    let mut dw = vec![0.0f32; c_out * c_in * 9];
    for co in 0..c_out {
        for ci in 0..c_in {
            let mut t = [[0.0f32; 4]; 3];
            for j in 0..4 {
                let e = |i: usize| du[((4 * i + j) * c_out + co) * c_in + ci];
                let (a, b, c, d) = (e(0), e(1), e(2), e(3));
                t[0][j] = a + 0.5 * (b + c);
                t[1][j] = 0.5 * (b - c);
                t[2][j] = 0.5 * (b + c) + d;
            }
            let dst = &mut dw[(co * c_in + ci) * 9..][..9];
            for (i, row) in t.iter().enumerate() {
                let (a, b, c, d) = (row[0], row[1], row[2], row[3]);
                dst[3 * i] = a + 0.5 * (b + c);
                dst[3 * i + 1] = 0.5 * (b - c);
                dst[3 * i + 2] = 0.5 * (b + c) + d;
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn geometry(
        batch: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        pad: usize,
    ) -> Geometry {
        Geometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            out_h: h + 2 * pad - 2,
            out_w: w + 2 * pad - 2,
            k_h: 3,
            k_w: 3,
            stride: [1, 1],
            pad: [pad, pad],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// Forward, input and weight gradients against the direct sums (f64), with odd and
    /// even planes, paddings 0 / 1 / 2, one image per block and several.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        // `forward`, `x_grad` and `weight_grad` run whatever `applies` says: small shapes.
        for (n, ci, h, w, co, pad) in [
            (2, 16, 5, 7, 17, 1),
            (3, 17, 8, 8, 16, 1),
            (2, 16, 6, 5, 16, 0),
            (2, 16, 4, 3, 18, 2),
            (1, 16, 33, 32, 16, 1),
            (40, 16, 4, 4, 16, 1),
        ] {
            let geo = geometry(n, ci, h, w, co, pad);
            let (oh, ow) = (geo.out_h, geo.out_w);
            let x = values(n * ci * h * w, 1);
            let k = values(co * ci * 9, 2);
            let b = values(co, 3);
            let g = values(n * co * oh * ow, 4);
            let y = forward(&x, &k, Some(&b), &geo);
            let dx = x_grad(&k, &g, &geo);
            let dw = weight_grad(&x, &g, &geo);
            let mut want_y = vec![0.0f64; y.len()];
            let mut want_dx = vec![0.0f64; dx.len()];
            let mut want_dw = vec![0.0f64; dw.len()];
            for i in 0..n {
                for o in 0..co {
                    for r in 0..oh {
                        for c in 0..ow {
                            let yi = ((i * co + o) * oh + r) * ow + c;
                            want_y[yi] += f64::from(b[o]);
                            for q in 0..ci {
                                for kr in 0..3 {
                                    for kc in 0..3 {
                                        let ir = (r + kr) as isize - pad as isize;
                                        let ic = (c + kc) as isize - pad as isize;
                                        if ir < 0 || ic < 0 || ir >= h as isize || ic >= w as isize
                                        {
                                            continue;
                                        }
                                        let xi = ((i * ci + q) * h + ir as usize) * w + ic as usize;
                                        let ki = ((o * ci + q) * 3 + kr) * 3 + kc;
                                        want_y[yi] += f64::from(x[xi]) * f64::from(k[ki]);
                                        want_dx[xi] += f64::from(g[yi]) * f64::from(k[ki]);
                                        want_dw[ki] += f64::from(g[yi]) * f64::from(x[xi]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (name, got, want) in [
                ("y", &y, &want_y),
                ("dx", &dx, &want_dx),
                ("dw", &dw, &want_dw),
            ] {
                assert_eq!(got.len(), want.len(), "{name} length");
                let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                for (i, (a, e)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (f64::from(*a) - e).abs() <= 1e-5 * scale,
                        "{name}[{i}] of {:?}: {a} against {e}",
                        (n, ci, h, w, co, pad)
                    );
                }
            }
        }
    }

    /// The same bits on 1 and 4 threads: blocks spread over threads (1 thread) or the work
    /// inside a block split (4 threads, 3 blocks), and weight-gradient partials.
    #[cfg(feature = "rayon")]
    #[test]
    fn winograd_bits_do_not_depend_on_the_thread_count() {
        for (n, ci, h, w, co, pad) in [(3, 16, 32, 32, 17, 1), (40, 16, 5, 4, 16, 1)] {
            let geo = geometry(n, ci, h, w, co, pad);
            let x = values(n * ci * h * w, 5);
            let k = values(co * ci * 9, 6);
            let g = values(n * co * geo.out_h * geo.out_w, 7);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("thread pool");
                pool.install(|| {
                    (
                        forward(&x, &k, Some(&g[..co]), &geo),
                        x_grad(&k, &g, &geo),
                        weight_grad(&x, &g, &geo),
                    )
                })
            };
            let (a, b) = (run(1), run(4));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.0), bits(&b.0), "forward");
            assert_eq!(bits(&a.1), bits(&b.1), "input gradient");
            assert_eq!(bits(&a.2), bits(&b.2), "weight gradient");
        }
    }

    #[test]
    fn winograd_leaves_other_convolutions_alone() {
        let base = geometry(2, 16, 64, 64, 16, 1);
        assert!(applies(&base));
        // ResNet-18's stages and VGG's narrowest one; not the small CNN's layers.
        for (c, hw) in [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)] {
            assert!(applies(&geometry(32, c, hw, hw, c, 1)));
        }
        assert!(!applies(&geometry(128, 32, 16, 16, 64, 1)));
        assert!(!applies(&geometry(128, 64, 8, 8, 128, 1)));
        assert!(!applies(&geometry(128, 128, 8, 8, 64, 1)));
        let mut g = base;
        g.stride = [2, 2];
        assert!(!applies(&g));
        let mut g = base;
        g.c_in = 3;
        assert!(!applies(&g));
        let mut g = base;
        g.groups = 2;
        assert!(!applies(&g));
        let mut g = base;
        g.k_h = 1;
        g.k_w = 1;
        assert!(!applies(&g));
        let mut g = base;
        g.dilation = [2, 2];
        assert!(!applies(&g));
        // Forward and input gradient: at least 256 output tiles in the batch.
        assert!(enough_tiles(16, 8, 8));
        assert!(enough_tiles(8, 11, 12));
        assert!(!enough_tiles(15, 8, 8));
        assert!(!enough_tiles(32, 4, 4));
    }
}
