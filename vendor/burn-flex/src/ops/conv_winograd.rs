//! Winograd convolution for 3x3 / stride-1 / undilated / ungrouped f32 convolutions with
//! enough channels (robustness patch), with output tiles of 4x4 (F(4x4, 3x3)) or 2x2
//! (F(2x2, 3x3)).
//!
//! Each `m x m` block of outputs ("tile") is computed from the `(m + 2) x (m + 2)` block of
//! inputs under it; with `t = m + 2` and `xi` indexing the `t x t` transformed values:
//!
//! ```text
//! U[xi][co][ci] = (G w[co, ci] G^T)[xi]          (once per call)
//! V[ci][xi][p]  = (B^T d[ci, p] B)[xi]           (d: the t x t input block of tile p)
//! M[xi][co][p]  = sum_ci U[xi][co][ci] V[ci][xi][p]   (t * t GEMMs)
//! y[co, tile p] = A^T M[.][co][p] A              (m x m)
//! ```
//!
//! with the standard matrices (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016). Per output and channel pair the GEMMs do `t^2 / m^2` multiply-adds
//! against im2col's 9: 4 for F(2x2, 3x3) (2.25 times fewer), 2.25 for F(4x4, 3x3) (4 times
//! fewer), whose transformed tensors are also 44% smaller per output. F(4x4, 3x3)'s
//! transforms multiply by 2, 4, 5, 8 and divide by 6 and 24, so its rounding error is larger
//! (still ~1e-6 relative in the tests, against the direct sums in f64). The input gradient of
//! such a convolution is one too (the kernel rotated by 180 degrees with input and output
//! channels swapped, padding `2 - pad`), and the weight gradient is the adjoint of the same
//! transforms:
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
//! The results differ from the direct convolution's by rounding only (tests compare against
//! the definition).

use alloc::vec::Vec;

use super::conv_weight_grad::Geometry;

/// Tiles (GEMM columns) wanted per block: images are grouped until a block has this many.
const TARGET_TILES: usize = 256;

/// Fewest input and output channels for which the transforms pay off (the first layer of
/// an RGB network, 3 input channels, stays on im2col).
const MIN_CHANNELS: usize = 16;

/// Least `min(c_in, c_out) x output width`. The transforms' cost per tile grows against the
/// GEMMs' as channels fall (the GEMM work per tile is `c_in x c_out`, the transforms' `c_in +
/// c_out`) and as rows shorten (their loops run along a row of tiles). ResNet-18's stages (64
/// x 32, 128 x 16, 256 x 8, 512 x 4: 2048 each) run 10-30% faster per pass (2x2 tiles, 2
/// threads, AVX-512 GEMMs). The small CNN's 32 -> 64 at 16 wide and 64 -> 128 at 8 wide (512
/// each, batch 128, 4x4 tiles) also win since the kernel transforms were vectorised: on a
/// 2-core Intel Xeon (2026-12-06) 27-45% per pass (forward 5.7 -> 4.1 and 5.4 -> 3.2 ms, input
/// gradient 6.8 -> 4.6 and 6.4 -> 3.6, weight gradient 6.6 -> 6.4 and 6.9 -> 4.1), and on a
/// 2-core AMD EPYC (2026-12-06, alternated runs of one binary) the small CNN's train step
/// 81.5-84.4 -> 65.4-72.2 ms and its PGD step 52.2-76.8 -> 41.1-45.7 ms (batch 128). Until
/// then this was 1024 on AMD CPUs, where the first measurements (before the vectorised
/// transforms) had the small CNN's layers up to 40% slower.
const MIN_CHANNEL_WIDTH: usize = 512;

/// Partial weight gradients reduced in order (fixed, as in `conv_weight_grad`).
const GRAD_BLOCKS: usize = 8;

/// Whether the forward / input gradient / weight gradient of a convolution with this
/// geometry runs here (with one of the two tile sizes).
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

/// The tile size a pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileSize {
    /// F(2x2, 3x3).
    Two,
    /// F(4x4, 3x3).
    Four,
}

/// What the environment asks for (read once): `ROBUSTNESS_NO_WINOGRAD` keeps every
/// convolution on the im2col path (for timing comparisons in one binary, and to rule the
/// transforms out when a result looks wrong); `ROBUSTNESS_WINOGRAD_TILE=2` or `4` forces one
/// tile size wherever Winograd applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Override {
    None,
    Off,
    Tile(TileSize),
}

fn env_override() -> Override {
    #[cfg(feature = "std")]
    {
        static MODE: std::sync::OnceLock<Override> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| {
            if std::env::var_os("ROBUSTNESS_NO_WINOGRAD").is_some() {
                return Override::Off;
            }
            match std::env::var("ROBUSTNESS_WINOGRAD_TILE").as_deref() {
                Ok("2") => Override::Tile(TileSize::Two),
                Ok("4") => Override::Tile(TileSize::Four),
                _ => Override::None,
            }
        })
    }
    #[cfg(not(feature = "std"))]
    Override::None
}

/// The tile size for a weight gradient of this geometry, if Winograd runs it (see
/// [`choose`]).
pub(crate) fn weight_grad_tile(geo: &Geometry) -> Option<TileSize> {
    choose(geo, None)
}

/// The tile size for a forward or input gradient whose output planes are `out_h x out_w`,
/// if Winograd runs it (see [`choose`]).
pub(crate) fn plane_tile(geo: &Geometry, out_h: usize, out_w: usize) -> Option<TileSize> {
    choose(geo, Some((out_h, out_w)))
}

/// Fewest tiles in the batch for a forward or input gradient with either tile size. Each
/// call transforms every kernel (`t^2` values, against `t^2` multiply-adds per kernel and
/// tile in the GEMMs), so with few tiles im2col wins: at ResNet-18's 4x4 stage (512
/// channels) 8 images (32 tiles of 2x2) tie, 2 images (8 tiles) run 2-3 times as long.
const PLANE_MIN_TILES: usize = 64;

/// Fewest tiles of 2x2 / of 4x4 for a weight gradient, whose Winograd-domain sums
/// (`t^2` values per kernel against 9) cost more than im2col's when the batch is small.
/// 2x2 tiles against im2col since the kernel adjoints run 8 at a time (2 threads, median
/// of 5, ms): 512 channels at 4x4, 8 / 16 / 32 / 64 / 128 tiles: 2.0 / 2.4 / 2.8 / 4.0 /
/// 6.5 against 0.8 / 1.5 / 2.9 / 5.7 / 7.7; 256 at 8x8, 64 / 128 tiles: 1.0 / 1.7 against
/// 1.5 / 1.7; 128 at 16x16, 64 tiles: 0.37 against 0.43.
const GRAD_MIN_TILES_TWO: usize = 64;
const GRAD_MIN_TILES_FOUR: usize = 128;

/// Fewest 4x4 tiles for a weight gradient on planes narrower than 8 on Intel CPUs (see
/// [`intel_cpu`]): on a 2-core Xeon (AVX-512, 2 MiB L2 per core) ResNet-18's 512-channel 4x4
/// stage at batch 32 (32 tiles) took 5.8-6.0 ms per weight gradient with 4x4 tiles against
/// 7.2-7.4 ms with 2x2 tiles.
const GRAD_MIN_TILES_FOUR_INTEL: usize = 32;

/// Whether this is an Intel CPU, whose tile-size rules differ (read once). The rules of
/// [`choose`] were measured on an AMD EPYC; on a 2-core Intel Xeon (2026-12-06) 4x4 tiles
/// also won where they lost there: forward and input gradient on ResNet-18's 32-wide planes
/// at 64 channels (6.3-6.9 against 7.4-7.7 ms per pass, batch 32) and the weight gradient of
/// its 4x4 planes ([`GRAD_MIN_TILES_FOUR_INTEL`]). The choice depends on the machine and the
/// shapes only, never on the thread count, so results stay the same bits on any number of
/// threads (and the same on one machine from run to run).
fn intel_cpu() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *INTEL.get_or_init(|| {
            // `ROBUSTNESS_WINOGRAD_RULES=intel|other` picks a rule set by hand, to measure
            // one set against the other on a new CPU.
            match std::env::var("ROBUSTNESS_WINOGRAD_RULES").as_deref() {
                Ok("intel") => return true,
                Ok("other") => return false,
                _ => {}
            }
            // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
            #[allow(unused_unsafe)]
            let id = unsafe { core::arch::x86_64::__cpuid(0) };
            // The vendor string "GenuineIntel" in EBX, EDX, ECX.
            id.ebx == u32::from_le_bytes(*b"Genu")
                && id.edx == u32::from_le_bytes(*b"ineI")
                && id.ecx == u32::from_le_bytes(*b"ntel")
        })
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    false
}

/// The tile size for one pass, from per-pass timings of both sizes and im2col (2 threads,
/// AVX-512 GEMMs, AMD EPYC; ResNet-18's stages at batch 2-128, `vendor/README.md`):
///
/// - forward and input gradient (`planes` given): 4x4 tiles on planes 8 to 16 wide (15-40%
///   faster than 2x2 there); not on 32-wide planes at 64 channels, where the 2x2 transforms,
///   vectorised along rows of tiles, are cheaper per output than the 4x4 ones; not on 4x4
///   planes, one tile per image, where the 36-value weight transform and the GEMMs' narrow
///   right-hand side made them 2-4 times slower; else 2x2 tiles; at least
///   [`PLANE_MIN_TILES`] tiles either way;
/// - weight gradient: 4x4 tiles on planes at least 8 wide with [`GRAD_MIN_TILES_FOUR`]
///   tiles, else 2x2 tiles with [`GRAD_MIN_TILES_TWO`], else im2col.
///
/// On Intel CPUs ([`intel_cpu`]) 4x4 tiles also run the forward and input gradient on
/// planes wider than 16, and the weight gradient on planes narrower than 8 with
/// [`GRAD_MIN_TILES_FOUR_INTEL`] tiles.
///
/// `ROBUSTNESS_WINOGRAD_TILE` forces one size wherever either would run.
fn choose(geo: &Geometry, planes: Option<(usize, usize)>) -> Option<TileSize> {
    let forced = match env_override() {
        Override::Off => return None,
        Override::Tile(t) => Some(t),
        Override::None => None,
    };
    if !applies(geo) {
        return None;
    }
    let chosen = rule(geo, planes, intel_cpu())?;
    Some(forced.unwrap_or(chosen))
}

/// The tile-size rules of [`choose`] for a geometry where Winograd applies, on an Intel CPU
/// or not.
fn rule(geo: &Geometry, planes: Option<(usize, usize)>, intel: bool) -> Option<TileSize> {
    let (h, w) = planes.unwrap_or((geo.out_h, geo.out_w));
    let tiles = |m: usize| geo.batch * h.div_ceil(m) * w.div_ceil(m);
    let (four, two) = match planes {
        Some(_) => (
            ((8..=16).contains(&w) || (intel && w > 16)) && tiles(4) >= PLANE_MIN_TILES,
            tiles(2) >= PLANE_MIN_TILES,
        ),
        None => (
            (w >= 8 && tiles(4) >= GRAD_MIN_TILES_FOUR)
                || (intel && w < 8 && tiles(4) >= GRAD_MIN_TILES_FOUR_INTEL),
            tiles(2) >= GRAD_MIN_TILES_TWO,
        ),
    };
    if four {
        Some(TileSize::Four)
    } else if two {
        Some(TileSize::Two)
    } else {
        None
    }
}

/// One stride-1 3x3 convolution: `y[n, o, r, c] = sum x[n, i, r + kr - pad_h, c + kc - pad_w]
/// k[o, i, kr, kc]` (zero outside the input), `pad` possibly negative, computed in tiles of
/// `m x m` outputs, in blocks of images whose size is a multiple of `group` (up to the batch).
#[derive(Clone, Copy)]
struct Problem {
    m: usize,
    group: usize,
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
    fn new<W: Tile>(geo: &Geometry) -> Problem {
        Problem {
            m: W::M,
            group: W::GROUP,
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
    /// The convolution whose forward is the input gradient of `geo`'s.
    fn transposed<W: Tile>(geo: &Geometry) -> Problem {
        Problem {
            c_in: geo.c_out,
            in_h: geo.out_h,
            in_w: geo.out_w,
            c_out: geo.c_in,
            out_h: geo.h,
            out_w: geo.w,
            pad: [2 - geo.pad[0] as isize, 2 - geo.pad[1] as isize],
            ..Problem::new::<W>(geo)
        }
    }
    fn tiles_h(&self) -> usize {
        self.out_h.div_ceil(self.m)
    }
    fn tiles_w(&self) -> usize {
        self.out_w.div_ceil(self.m)
    }
    fn tiles(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }
    fn images_per_block(&self) -> usize {
        let want = TARGET_TILES.div_ceil(self.tiles().max(1));
        (want.div_ceil(self.group) * self.group).clamp(1, self.batch.max(1))
    }
    fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }
    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }
}

/// One tile size's transforms, one channel of a block of images at a time.
trait Tile {
    /// Outputs per tile side.
    const M: usize;
    /// Transformed values per tile: `(M + 2)^2`.
    const XI: usize;
    /// Images per block are a multiple of this (up to the batch).
    const GROUP: usize;
    /// `G k G^T` of a 3x3 kernel (row-major) into `u` (`XI` values); with `S` = [`Vals`],
    /// of [`LANES`] kernels at once.
    fn kernel_transform<S: Num>(k: &[S; 9], u: &mut [S]);
    /// `G^T du G` (`du(xi)`, `XI` values) into the 3x3 kernel `dst`; with `S` = [`Vals`],
    /// of [`LANES`] kernels at once.
    fn kernel_adjoint<S: Num>(du: impl Fn(usize) -> S, dst: &mut [S]);
    /// Scratch of one channel's [`Tile::input_channel`] or [`Tile::adjoint_channel`].
    fn channel_scratch_len(p: &Problem) -> usize;
    /// `B^T d B` of every tile of input channel `ci` of images `n0 .. n0 + count` of `x`
    /// into `vc` (`[xi][count * tiles]`, in this tile size's column order).
    fn input_channel(
        x: &[f32],
        p: &Problem,
        ci: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        vc: &mut [f32],
    );
    /// `A dy A^T` of every tile of output channel `co` of images `n0 .. n0 + count` of the
    /// output gradient `g` into `dc` (`[xi][count * tiles]`); positions past the output's
    /// edge count as zero.
    fn adjoint_channel(
        g: &[f32],
        p: &Problem,
        co: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        dc: &mut [f32],
    );
    /// `A^T M A + bias` of every tile of output channel `co` (`M` read from `m`, `[xi][c_out]
    /// [count * tiles]`) into the planes `(j, co)` of the block's output at `out`
    /// (`[count][c_out][out_h][out_w]`).
    ///
    /// # Safety
    /// `out` points at `count * c_out * out_h * out_w` writable values, and no other thread
    /// touches the planes of channel `co` meanwhile.
    unsafe fn output_channel(
        m: &[f32],
        p: &Problem,
        co: usize,
        count: usize,
        bias: f32,
        out: *mut f32,
    );
}

/// F(2x2, 3x3), one image plane at a time, vectorised along rows of tiles; column of tile
/// `t` of image `j`: `j * tiles + t`.
struct F2;
/// F(4x4, 3x3), [`LANES`] images at a time, vectorised across them; column of tile `t` of
/// image `j`: `t * count + j`.
struct F4;

/// Index range `lo..hi` of `k < len_out` with `0 <= step * k + phase - pad < len`.
fn valid_range(
    step: isize,
    phase: isize,
    pad: isize,
    len: usize,
    len_out: usize,
) -> (usize, usize) {
    let lo = (pad - phase).max(0);
    let lo = ((lo + step - 1) / step) as usize;
    let top = len as isize - 1 + pad - phase;
    let hi = if top < 0 {
        0
    } else {
        (top / step + 1) as usize
    };
    let hi = hi.min(len_out);
    (lo.min(hi), hi)
}

/// `N` consecutive rows of `ld` values from the start of `buf`.
fn rows_mut<const N: usize>(buf: &mut [f32], ld: usize) -> [&mut [f32]; N] {
    let mut rest = buf;
    core::array::from_fn(|_| {
        let cur = core::mem::take(&mut rest);
        let n = ld.min(cur.len());
        let (row, tail) = cur.split_at_mut(n);
        rest = tail;
        row
    })
}

/// `N` consecutive rows of `ld` values from the start of `buf`.
fn rows_ref<const N: usize>(buf: &[f32], ld: usize) -> [&[f32]; N] {
    core::array::from_fn(|i| &buf[i * ld..][..ld])
}

impl Tile for F2 {
    const M: usize = 2;
    const XI: usize = 16;
    const GROUP: usize = 1;

    #[inline(always)]
    fn kernel_transform<S: Num>(k: &[S; 9], u: &mut [S]) {
        // G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
        let g = |a: S, b: S, c: S| [a, (a + b + c) * 0.5, (a - b + c) * 0.5, c];
        let cols: [[S; 4]; 3] = core::array::from_fn(|j| g(k[j], k[3 + j], k[6 + j]));
        for i in 0..4 {
            u[4 * i..][..4].copy_from_slice(&g(cols[0][i], cols[1][i], cols[2][i]));
        }
    }

    #[inline(always)]
    fn kernel_adjoint<S: Num>(du: impl Fn(usize) -> S, dst: &mut [S]) {
        let gt = |a: S, b: S, c: S, d: S| [a + (b + c) * 0.5, (b - c) * 0.5, (b + c) * 0.5 + d];
        let t: [[S; 3]; 4] = core::array::from_fn(|j| gt(du(j), du(4 + j), du(8 + j), du(12 + j)));
        for i in 0..3 {
            dst[3 * i..][..3].copy_from_slice(&gt(t[0][i], t[1][i], t[2][i], t[3][i]));
        }
    }

    /// The padded plane split into even and odd columns (`2 * (2 * tiles_h + 2) * (tiles_w +
    /// 1)`) and the row combinations (`8 * (tiles_w + 1)`).
    fn channel_scratch_len(p: &Problem) -> usize {
        let half = p.tiles_w() + 1;
        2 * (2 * p.tiles_h() + 2) * half + 8 * half
    }

    #[inline(always)]
    fn input_channel(
        x: &[f32],
        p: &Problem,
        ci: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        vc: &mut [f32],
    ) {
        let (plane, tiles) = (p.in_plane(), p.tiles());
        for j in 0..count {
            let src = &x[((n0 + j) * p.c_in + ci) * plane..][..plane];
            F2::input_plane(src, p, scratch, vc, count * tiles, j * tiles);
        }
    }

    #[inline(always)]
    fn adjoint_channel(
        g: &[f32],
        p: &Problem,
        co: usize,
        n0: usize,
        count: usize,
        _scratch: &mut [f32],
        dc: &mut [f32],
    ) {
        let (plane, tiles) = (p.out_plane(), p.tiles());
        for j in 0..count {
            let src = &g[((n0 + j) * p.c_out + co) * plane..][..plane];
            F2::adjoint_plane(src, p, dc, count * tiles, j * tiles);
        }
    }

    #[inline(always)]
    unsafe fn output_channel(
        m: &[f32],
        p: &Problem,
        co: usize,
        count: usize,
        bias: f32,
        out: *mut f32,
    ) {
        let (plane, tiles) = (p.out_plane(), p.tiles());
        let cols = count * tiles;
        for j in 0..count {
            // SAFETY: plane (j, co) of the block lies within `out` and only this call
            // writes it (the caller's contract).
            let dst = unsafe {
                core::slice::from_raw_parts_mut(out.add((j * p.c_out + co) * plane), plane)
            };
            F2::output_plane(&m[co * cols..], p.c_out * cols, j * tiles, p, bias, dst);
        }
    }
}

impl F2 {
    /// `B^T d B` of every tile of one input plane into `v` (`[xi][ld]`, tile `t` at column
    /// `col0 + t`). With `E` / `O` the even / odd columns of the zero-padded plane, a tile
    /// row's column combinations are unit-stride: for tile `tx`, columns `2tx .. 2tx + 3` are
    /// `E[tx], O[tx], E[tx + 1], O[tx + 1]`.
    #[inline(always)]
    fn input_plane(
        plane: &[f32],
        p: &Problem,
        scratch: &mut [f32],
        v: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        let (th, tw) = (p.tiles_h(), p.tiles_w());
        let half = tw + 1;
        let row_len = 2 * half;
        let ph = 2 * th + 2;
        let (padded, t) = scratch.split_at_mut(ph * row_len);
        // Padded row r holds input row r - pad_h, as [even columns | odd columns].
        for (r, dst) in padded.chunks_mut(row_len).enumerate() {
            split_row(input_row(plane, p, r), p.pad[1], 2, half, dst);
        }
        let t = &mut t[..4 * row_len];
        for ty in 0..th {
            // Row combinations B^T d over the four padded rows of this tile row.
            let [d0, d1, d2, d3] = rows_ref::<4>(&padded[2 * ty * row_len..], row_len);
            let [t0, t1, t2, t3] = rows_mut::<4>(t, row_len);
            for k in 0..row_len {
                t0[k] = d0[k] - d2[k];
                t1[k] = d1[k] + d2[k];
                t2[k] = d2[k] - d1[k];
                t3[k] = d1[k] - d3[k];
            }
            let base = col0 + ty * tw;
            for i in 0..4 {
                let row = &t[i * row_len..][..row_len];
                let (e, o) = row.split_at(half);
                let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
                let [r0, r1, r2, r3] = rows_mut::<4>(&mut v[4 * i * ld..], ld);
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

    /// `A^T m A` of every tile of one output plane, `m` read as `[xi][ld]` (tile `t` at
    /// column `col0 + t`, transform `xi` at `m[xi * xi_stride..]`), plus `bias`.
    #[inline(always)]
    fn output_plane(
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

    /// `A dy A^T` of every tile of one output-gradient plane into `dm` (`[xi][ld]`, tile `t`
    /// at column `col0 + t`); positions past the output's edge count as zero.
    #[inline(always)]
    fn adjoint_plane(g: &[f32], p: &Problem, dm: &mut [f32], ld: usize, col0: usize) {
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
}

/// Splits one padded input row into `phases` interleaved parts: part `q` holds padded
/// columns `q, q + phases, q + 2 phases, ..` (`half` of them, zero outside the input), so
/// that a tile's columns are unit-stride across a row of tiles.
#[inline(always)]
fn split_row(src: Option<&[f32]>, pad: isize, phases: usize, half: usize, dst: &mut [f32]) {
    let Some(src) = src else {
        dst.fill(0.0);
        return;
    };
    for (q, part) in dst.chunks_mut(half).take(phases).enumerate() {
        let (lo, hi) = valid_range(phases as isize, q as isize, pad, src.len(), half);
        part[..lo].fill(0.0);
        part[hi..].fill(0.0);
        if lo < hi {
            // Input column of k = lo: phases * lo + q - pad >= 0.
            let first = (phases * lo) as isize + q as isize - pad;
            let src = &src[first as usize..];
            for (k, d) in part[lo..hi].iter_mut().enumerate() {
                *d = src[phases * k];
            }
        }
    }
}

/// Input row `r - pad_h` of `plane`, if inside it.
#[inline(always)]
fn input_row<'a>(plane: &'a [f32], p: &Problem, r: usize) -> Option<&'a [f32]> {
    let ir = r as isize - p.pad[0];
    (ir >= 0 && ir < p.in_h as isize).then(|| &plane[ir as usize * p.in_w..][..p.in_w])
}

/// `B^T x` for F(4x4, 3x3): `B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1
/// 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`.
#[inline(always)]
fn f4_bt(x: [f32; 6]) -> [f32; 6] {
    let [a, b, c, d, e, f] = x;
    let (p, q) = (e - c, 2.0 * (d - b));
    [
        4.0 * a - 5.0 * c + e,
        (d + e) - 4.0 * (b + c),
        (e - d) + 4.0 * (b - c),
        p + q,
        p - q,
        4.0 * b - 5.0 * d + f,
    ]
}

/// `A^T x` for F(4x4, 3x3): `A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
#[inline(always)]
fn f4_at(x: [f32; 6]) -> [f32; 4] {
    let [a, b, c, d, e, f] = x;
    let (p1, m1, p2, m2) = (b + c, b - c, d + e, d - e);
    [a + p1 + p2, m1 + 2.0 * m2, p1 + 4.0 * p2, m1 + 8.0 * m2 + f]
}

/// `A y` (the adjoint of [`f4_at`]).
#[inline(always)]
fn f4_a(y: [f32; 4]) -> [f32; 6] {
    let [a, b, c, d] = y;
    let (p, q) = (a + c, b + d);
    let (p4, q2) = (a + 4.0 * c, 2.0 * b + 8.0 * d);
    [a, p + q, p - q, p4 + q2, p4 - q2, d]
}

const SIXTH: f32 = 1.0 / 6.0;
const TWELFTH: f32 = 1.0 / 12.0;
const TWENTY_FOURTH: f32 = 1.0 / 24.0;

/// `G k`: `G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]`.
#[inline(always)]
fn f4_g<S: Num>(k: [S; 3]) -> [S; 6] {
    let [a, b, c] = k;
    let s = a + c;
    let t = a * TWENTY_FOURTH + c * SIXTH;
    [
        a * 0.25,
        -(s + b) * SIXTH,
        (b - s) * SIXTH,
        t + b * TWELFTH,
        t - b * TWELFTH,
        c,
    ]
}

/// `G^T x` (the adjoint of [`f4_g`]).
#[inline(always)]
fn f4_gt<S: Num>(x: [S; 6]) -> [S; 3] {
    let [a, b, c, d, e, f] = x;
    let (s, t) = (b + c, d + e);
    [
        a * 0.25 - s * SIXTH + t * TWENTY_FOURTH,
        (c - b) * SIXTH + (d - e) * TWELFTH,
        (t - s) * SIXTH + f,
    ]
}

/// Images an F(4x4, 3x3) transform runs across (one AVX2 vector of f32).
const LANES: usize = 8;
type Lanes = [f32; LANES];

/// What the kernel transforms compute with: one `f32`, or [`Vals`] (one value of each of
/// [`LANES`] kernels, so that the transforms of a row of kernels vectorise). The operations
/// are the same in the same order either way, so both give the same bits.
trait Num:
    Copy
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Neg<Output = Self>
    + core::ops::Mul<f32, Output = Self>
{
}

impl Num for f32 {}

/// One value of each of [`LANES`] kernels.
#[derive(Clone, Copy)]
struct Vals(Lanes);

impl Vals {
    /// The `LANES` values from `src[0 .. LANES]`.
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        Vals(core::array::from_fn(|l| src[l]))
    }
}

impl Num for Vals {}

impl core::ops::Add for Vals {
    type Output = Vals;
    #[inline(always)]
    fn add(self, o: Vals) -> Vals {
        Vals(core::array::from_fn(|l| self.0[l] + o.0[l]))
    }
}

impl core::ops::Sub for Vals {
    type Output = Vals;
    #[inline(always)]
    fn sub(self, o: Vals) -> Vals {
        Vals(core::array::from_fn(|l| self.0[l] - o.0[l]))
    }
}

impl core::ops::Neg for Vals {
    type Output = Vals;
    #[inline(always)]
    fn neg(self) -> Vals {
        Vals(core::array::from_fn(|l| -self.0[l]))
    }
}

impl core::ops::Mul<f32> for Vals {
    type Output = Vals;
    #[inline(always)]
    fn mul(self, f: f32) -> Vals {
        Vals(core::array::from_fn(|l| self.0[l] * f))
    }
}

/// Up to [`LANES`] planes (`h x w`, `stride` apart in `src`) interleaved and zero-padded:
/// `dst[(r * pw + c) * LANES + l]` is plane `l`'s value at row `r - pad_h`, column `c -
/// pad_w` (zero outside it and for lanes past `lanes`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn interleave(
    src: &[f32],
    stride: usize,
    lanes: usize,
    (h, w): (usize, usize),
    pad: [isize; 2],
    (ph, pw): (usize, usize),
    dst: &mut [f32],
) {
    let dst = &mut dst[..ph * pw * LANES];
    dst.fill(0.0);
    let c_lo = pad[1].max(0) as usize;
    let c_hi = (w as isize + pad[1]).clamp(0, pw as isize) as usize;
    if c_lo >= c_hi {
        return;
    }
    for l in 0..lanes {
        let plane = &src[l * stride..][..h * w];
        for r in 0..ph {
            let ir = r as isize - pad[0];
            if ir < 0 || ir >= h as isize {
                continue;
            }
            let row = &plane[ir as usize * w..][(c_lo as isize - pad[1]) as usize..];
            let out = &mut dst[(r * pw + c_lo) * LANES + l..];
            for (k, &val) in row[..c_hi - c_lo].iter().enumerate() {
                out[k * LANES] = val;
            }
        }
    }
}

/// The first `lanes` of `vals` into `dst` (whole vectors copied with a fixed length, which
/// compiles to vector moves instead of a `memcpy` call).
#[inline(always)]
fn store_lanes(dst: &mut [f32], vals: &Lanes, lanes: usize) {
    if lanes == LANES {
        dst[..LANES].copy_from_slice(vals);
    } else {
        dst[..lanes].copy_from_slice(&vals[..lanes]);
    }
}

/// The first `lanes` values of `src` into `vals` (the rest left as they are).
#[inline(always)]
fn load_lanes(src: &[f32], vals: &mut Lanes, lanes: usize) {
    if lanes == LANES {
        vals.copy_from_slice(&src[..LANES]);
    } else {
        vals[..lanes].copy_from_slice(&src[..lanes]);
    }
}

/// `B^T d B` of one 6x6 tile of [`LANES`] images.
#[inline(always)]
fn f4_input_tile(d: &[[Lanes; 6]; 6]) -> [Lanes; 36] {
    let mut t = [[[0.0f32; LANES]; 6]; 6];
    for c in 0..6 {
        for l in 0..LANES {
            let r = f4_bt(core::array::from_fn(|k| d[k][c][l]));
            for i in 0..6 {
                t[i][c][l] = r[i];
            }
        }
    }
    let mut out = [[0.0f32; LANES]; 36];
    for i in 0..6 {
        for l in 0..LANES {
            let r = f4_bt(core::array::from_fn(|k| t[i][k][l]));
            for j in 0..6 {
                out[6 * i + j][l] = r[j];
            }
        }
    }
    out
}

/// `A^T m A` of one tile of [`LANES`] images.
#[inline(always)]
fn f4_output_tile(m: &[Lanes; 36]) -> [[Lanes; 4]; 4] {
    let mut s = [[[0.0f32; LANES]; 6]; 4];
    for k in 0..6 {
        for l in 0..LANES {
            let r = f4_at(core::array::from_fn(|i| m[6 * i + k][l]));
            for i in 0..4 {
                s[i][k][l] = r[i];
            }
        }
    }
    let mut y = [[[0.0f32; LANES]; 4]; 4];
    for i in 0..4 {
        for l in 0..LANES {
            let r = f4_at(core::array::from_fn(|k| s[i][k][l]));
            for j in 0..4 {
                y[i][j][l] = r[j];
            }
        }
    }
    y
}

/// `A dy A^T` of one 4x4 tile of [`LANES`] images.
#[inline(always)]
fn f4_adjoint_tile(dy: &[[Lanes; 4]; 4]) -> [Lanes; 36] {
    let mut t = [[[0.0f32; LANES]; 4]; 6];
    for c in 0..4 {
        for l in 0..LANES {
            let r = f4_a(core::array::from_fn(|k| dy[k][c][l]));
            for i in 0..6 {
                t[i][c][l] = r[i];
            }
        }
    }
    let mut out = [[0.0f32; LANES]; 36];
    for i in 0..6 {
        for l in 0..LANES {
            let r = f4_a(core::array::from_fn(|k| t[i][k][l]));
            for j in 0..6 {
                out[6 * i + j][l] = r[j];
            }
        }
    }
    out
}

impl Tile for F4 {
    const M: usize = 4;
    const XI: usize = 36;
    const GROUP: usize = LANES;

    #[inline(always)]
    fn kernel_transform<S: Num>(k: &[S; 9], u: &mut [S]) {
        let cols: [[S; 6]; 3] = core::array::from_fn(|j| f4_g([k[j], k[3 + j], k[6 + j]]));
        for i in 0..6 {
            u[6 * i..][..6].copy_from_slice(&f4_g([cols[0][i], cols[1][i], cols[2][i]]));
        }
    }

    #[inline(always)]
    fn kernel_adjoint<S: Num>(du: impl Fn(usize) -> S, dst: &mut [S]) {
        let t: [[S; 3]; 6] =
            core::array::from_fn(|j| f4_gt(core::array::from_fn(|i| du(6 * i + j))));
        for i in 0..3 {
            dst[3 * i..][..3].copy_from_slice(&f4_gt(core::array::from_fn(|j| t[j][i])));
        }
    }

    /// One interleaved, zero-padded group of input planes (`(4 tiles_h + 2) x (4 tiles_w +
    /// 2) x LANES`; the output-gradient planes of the adjoint are smaller).
    fn channel_scratch_len(p: &Problem) -> usize {
        (4 * p.tiles_h() + 2) * (4 * p.tiles_w() + 2) * LANES
    }

    #[inline(always)]
    fn input_channel(
        x: &[f32],
        p: &Problem,
        ci: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        vc: &mut [f32],
    ) {
        let (th, tw) = (p.tiles_h(), p.tiles_w());
        let (ph, pw) = (4 * th + 2, 4 * tw + 2);
        let plane = p.in_plane();
        let ld = count * th * tw;
        for g0 in (0..count).step_by(LANES) {
            let lanes = LANES.min(count - g0);
            let src = &x[((n0 + g0) * p.c_in + ci) * plane..];
            interleave(
                src,
                p.c_in * plane,
                lanes,
                (p.in_h, p.in_w),
                p.pad,
                (ph, pw),
                scratch,
            );
            let xs: &[f32] = scratch;
            for ty in 0..th {
                for tx in 0..tw {
                    let mut d = [[[0.0f32; LANES]; 6]; 6];
                    for (r, dr) in d.iter_mut().enumerate() {
                        let row = &xs[((4 * ty + r) * pw + 4 * tx) * LANES..][..6 * LANES];
                        for (c, dc) in dr.iter_mut().enumerate() {
                            dc.copy_from_slice(&row[c * LANES..][..LANES]);
                        }
                    }
                    let out = f4_input_tile(&d);
                    let col = (ty * tw + tx) * count + g0;
                    for (xi, vals) in out.iter().enumerate() {
                        store_lanes(&mut vc[xi * ld + col..], vals, lanes);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn adjoint_channel(
        g: &[f32],
        p: &Problem,
        co: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        dc: &mut [f32],
    ) {
        let (th, tw) = (p.tiles_h(), p.tiles_w());
        let (ph, pw) = (4 * th, 4 * tw);
        let plane = p.out_plane();
        let ld = count * th * tw;
        for g0 in (0..count).step_by(LANES) {
            let lanes = LANES.min(count - g0);
            let src = &g[((n0 + g0) * p.c_out + co) * plane..];
            interleave(
                src,
                p.c_out * plane,
                lanes,
                (p.out_h, p.out_w),
                [0, 0],
                (ph, pw),
                scratch,
            );
            let ys: &[f32] = scratch;
            for ty in 0..th {
                for tx in 0..tw {
                    let mut dy = [[[0.0f32; LANES]; 4]; 4];
                    for (r, dr) in dy.iter_mut().enumerate() {
                        let row = &ys[((4 * ty + r) * pw + 4 * tx) * LANES..][..4 * LANES];
                        for (c, dc) in dr.iter_mut().enumerate() {
                            dc.copy_from_slice(&row[c * LANES..][..LANES]);
                        }
                    }
                    let out = f4_adjoint_tile(&dy);
                    let col = (ty * tw + tx) * count + g0;
                    for (xi, vals) in out.iter().enumerate() {
                        store_lanes(&mut dc[xi * ld + col..], vals, lanes);
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn output_channel(
        m: &[f32],
        p: &Problem,
        co: usize,
        count: usize,
        bias: f32,
        out: *mut f32,
    ) {
        let (th, tw) = (p.tiles_h(), p.tiles_w());
        let (oh, ow, plane) = (p.out_h, p.out_w, p.out_plane());
        let cols = count * th * tw;
        let (mc, xs) = (&m[co * cols..], p.c_out * cols);
        for g0 in (0..count).step_by(LANES) {
            let lanes = LANES.min(count - g0);
            for ty in 0..th {
                for tx in 0..tw {
                    let col = (ty * tw + tx) * count + g0;
                    let mut mm = [[0.0f32; LANES]; 36];
                    for (xi, v) in mm.iter_mut().enumerate() {
                        load_lanes(&mc[xi * xs + col..], v, lanes);
                    }
                    let y = f4_output_tile(&mm);
                    let rows = (oh - 4 * ty).min(4);
                    let width = (ow - 4 * tx).min(4);
                    for l in 0..lanes {
                        let at = ((g0 + l) * p.c_out + co) * plane + 4 * ty * ow + 4 * tx;
                        for (i, yi) in y.iter().enumerate().take(rows) {
                            for (j, yij) in yi.iter().enumerate().take(width) {
                                // SAFETY: row 4 ty + i < out_h and column 4 tx + j < out_w of
                                // plane (g0 + l, co), within `out` and written only here.
                                unsafe { *out.add(at + i * ow + j) = yij[l] + bias };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`Tile::input_channel`], compiled with AVX2 where the CPU has it (checked at run time).
fn input_channel<W: Tile>(
    x: &[f32],
    p: &Problem,
    ci: usize,
    n0: usize,
    count: usize,
    scratch: &mut [f32],
    vc: &mut [f32],
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::input_channel::<W>(x, p, ci, n0, count, scratch, vc) };
    }
    W::input_channel(x, p, ci, n0, count, scratch, vc)
}

/// [`Tile::adjoint_channel`], compiled with AVX2 where the CPU has it.
fn adjoint_channel<W: Tile>(
    g: &[f32],
    p: &Problem,
    co: usize,
    n0: usize,
    count: usize,
    scratch: &mut [f32],
    dc: &mut [f32],
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::adjoint_channel::<W>(g, p, co, n0, count, scratch, dc) };
    }
    W::adjoint_channel(g, p, co, n0, count, scratch, dc)
}

/// [`Tile::output_channel`], compiled with AVX2 where the CPU has it.
///
/// # Safety
/// As [`Tile::output_channel`].
unsafe fn output_channel<W: Tile>(
    m: &[f32],
    p: &Problem,
    co: usize,
    count: usize,
    bias: f32,
    out: *mut f32,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above); `out` as the caller guarantees.
        return unsafe { avx2::output_channel::<W>(m, p, co, count, bias, out) };
    }
    // SAFETY: as the caller guarantees.
    unsafe { W::output_channel(m, p, co, count, bias, out) }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn input_channel<W: Tile>(
        x: &[f32],
        p: &Problem,
        ci: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        vc: &mut [f32],
    ) {
        W::input_channel(x, p, ci, n0, count, scratch, vc)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn adjoint_channel<W: Tile>(
        g: &[f32],
        p: &Problem,
        co: usize,
        n0: usize,
        count: usize,
        scratch: &mut [f32],
        dc: &mut [f32],
    ) {
        W::adjoint_channel(g, p, co, n0, count, scratch, dc)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn output_channel<W: Tile>(
        m: &[f32],
        p: &Problem,
        co: usize,
        count: usize,
        bias: f32,
        out: *mut f32,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe { W::output_channel(m, p, co, count, bias, out) }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transform_row<W: Tile>(
        w: &[f32],
        c_in: usize,
        flip: bool,
        r: usize,
        cols: usize,
        dst: &mut [f32],
    ) {
        transform_row_with::<W>(w, c_in, flip, r, cols, dst)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn adjoint_rows<W: Tile>(
        parts: &[Vec<f32>],
        kernels: usize,
        idx0: usize,
        dst: &mut [f32],
    ) {
        adjoint_rows_with::<W>(parts, kernels, idx0, dst)
    }
}

/// `U[o][xi][i]` for the forward (`o` = output channel of `w`), or with `flip` for the input
/// gradient (`o` = input channel of `w`, the kernel rotated by 180 degrees). Each row `o`
/// is written contiguously (`XI` streams), rows in parallel.
fn weight_transform<W: Tile>(w: &[f32], c_out: usize, c_in: usize, flip: bool) -> Vec<f32> {
    let (rows, cols) = if flip { (c_in, c_out) } else { (c_out, c_in) };
    let mut u = super::conv_native::output_vec::<f32>(W::XI * rows * cols);
    for_chunks(&mut u, W::XI * cols, true, |r, dst| {
        transform_row::<W>(w, c_in, flip, r, cols, dst)
    });
    u
}

/// Row `r` of [`weight_transform`] (`dst`: `[xi][cols]`), [`LANES`] kernels at a time,
/// compiled with AVX2 where the CPU has it.
fn transform_row<W: Tile>(
    w: &[f32],
    c_in: usize,
    flip: bool,
    r: usize,
    cols: usize,
    dst: &mut [f32],
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::transform_row::<W>(w, c_in, flip, r, cols, dst) };
    }
    transform_row_with::<W>(w, c_in, flip, r, cols, dst)
}

#[inline(always)]
fn transform_row_with<W: Tile>(
    w: &[f32],
    c_in: usize,
    flip: bool,
    r: usize,
    cols: usize,
    dst: &mut [f32],
) {
    let kernel = |c: usize| -> [f32; 9] {
        let (co, ci) = if flip { (c, r) } else { (r, c) };
        let g = &w[(co * c_in + ci) * 9..][..9];
        if flip {
            core::array::from_fn(|i| g[8 - i])
        } else {
            core::array::from_fn(|i| g[i])
        }
    };
    let mut c = 0;
    while c + LANES <= cols {
        let ks: [[f32; 9]; LANES] = core::array::from_fn(|l| kernel(c + l));
        let k: [Vals; 9] = core::array::from_fn(|e| Vals(core::array::from_fn(|l| ks[l][e])));
        let mut t = [Vals([0.0; LANES]); 36];
        let t = &mut t[..W::XI];
        W::kernel_transform(&k, t);
        for (xi, v) in t.iter().enumerate() {
            dst[xi * cols + c..][..LANES].copy_from_slice(&v.0);
        }
        c += LANES;
    }
    let mut t = [0.0f32; 36];
    let t = &mut t[..W::XI];
    for c in c..cols {
        W::kernel_transform(&kernel(c), t);
        for (xi, &v) in t.iter().enumerate() {
            dst[xi * cols + c] = v;
        }
    }
}

/// Kernels per parallel chunk of [`kernel_adjoints`].
const ADJOINT_CHUNK: usize = 256;

/// `dw[idx] = G^T dU[idx] G` for every kernel `idx` (`c_out * c_in` of them), where
/// `dU[xi][idx]` is the sum of `parts` in their order; [`LANES`] kernels at a time, chunks
/// in parallel.
fn kernel_adjoints<W: Tile>(parts: &[Vec<f32>], kernels: usize) -> Vec<f32> {
    let mut dw = super::conv_native::output_vec::<f32>(kernels * 9);
    for_chunks(&mut dw, ADJOINT_CHUNK * 9, true, |chunk, dst| {
        let idx0 = chunk * ADJOINT_CHUNK;
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above).
            return unsafe { avx2::adjoint_rows::<W>(parts, kernels, idx0, dst) };
        }
        adjoint_rows_with::<W>(parts, kernels, idx0, dst)
    });
    dw
}

/// Kernels `idx0 ..` of [`kernel_adjoints`] into `dst` (`[idx - idx0][9]`).
#[inline(always)]
fn adjoint_rows_with<W: Tile>(parts: &[Vec<f32>], kernels: usize, idx0: usize, dst: &mut [f32]) {
    let count = dst.len() / 9;
    let mut j = 0;
    while j + LANES <= count {
        let at = idx0 + j;
        let du = |xi: usize| {
            let mut parts = parts.iter();
            let first = parts
                .next()
                .map_or(Vals([0.0; LANES]), |p| Vals::load(&p[xi * kernels + at..]));
            parts.fold(first, |acc, p| acc + Vals::load(&p[xi * kernels + at..]))
        };
        let mut out = [Vals([0.0; LANES]); 9];
        W::kernel_adjoint(du, &mut out);
        for l in 0..LANES {
            for (e, v) in out.iter().enumerate() {
                dst[(j + l) * 9 + e] = v.0[l];
            }
        }
        j += LANES;
    }
    for j in j..count {
        let at = idx0 + j;
        let du = |xi: usize| {
            let mut parts = parts.iter();
            let first = parts.next().map_or(0.0, |p| p[xi * kernels + at]);
            parts.fold(first, |acc, p| acc + p[xi * kernels + at])
        };
        W::kernel_adjoint(du, &mut dst[j * 9..][..9]);
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

/// Runs `f(i, a_i, b_i)` over the pairs of `a.chunks_mut(a_size)` and `b.chunks_mut(b_size)`,
/// in parallel when asked.
fn for_pairs(
    a: &mut [f32],
    a_size: usize,
    b: &mut [f32],
    b_size: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) {
    if a_size == 0 {
        return;
    }
    let b_size = b_size.max(1);
    let mut work: Vec<(&mut [f32], &mut [f32])> =
        a.chunks_mut(a_size).zip(b.chunks_mut(b_size)).collect();
    #[cfg(feature = "rayon")]
    if parallel {
        use rayon::prelude::*;
        work.par_iter_mut()
            .enumerate()
            .for_each(|(i, (x, y))| f(i, x, y));
        return;
    }
    let _ = parallel;
    for (i, (x, y)) in work.iter_mut().enumerate() {
        f(i, x, y);
    }
}

/// A block's output, written plane by plane from several threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the planes each thread writes are disjoint (`Tile::output_channel`'s contract).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Scratch of one block: `V` (`[c_in][xi][cols]`), `M` (`[xi][c_out][cols]`) and the
/// channels' transform scratch (one per channel, which run in parallel).
fn block_scratch_len<W: Tile>(p: &Problem, cols: usize) -> usize {
    W::XI * p.c_in * cols + W::XI * p.c_out * cols + channel_scratch_total::<W>(p)
}

/// Transform scratch for every input or output channel (`max(c_in, c_out)` of them, at least
/// one value each so that the channels pair up with their scratch).
fn channel_scratch_total<W: Tile>(p: &Problem) -> usize {
    p.c_in.max(p.c_out) * W::channel_scratch_len(p).max(1)
}

/// Input transform of images `n0..n0 + count` into `v` (`[c_in][xi][cols]`).
fn transform_block<W: Tile>(
    x: &[f32],
    p: &Problem,
    n0: usize,
    count: usize,
    v: &mut [f32],
    scratch: &mut [f32],
    parallel: bool,
) {
    let cols = count * p.tiles();
    let v = &mut v[..W::XI * p.c_in * cols];
    let cs = W::channel_scratch_len(p).max(1);
    for_pairs(v, W::XI * cols, scratch, cs, parallel, |ci, vc, sc| {
        input_channel::<W>(x, p, ci, n0, count, sc, vc)
    });
}

/// The convolution of `p` with transformed weights `u` (`[c_out][xi][c_in]`).
fn convolve<W: Tile>(x: &[f32], u: &[f32], bias: Option<&[f32]>, p: &Problem) -> Vec<f32> {
    let xn = W::XI;
    let tiles = p.tiles();
    let ipb = p.images_per_block();
    let per_image = p.c_out * p.out_plane();
    // Every output tile is written whole (`output_channel`).
    let mut out = super::conv_native::output_vec::<f32>(p.batch * per_image);
    let scratch_len = block_scratch_len::<W>(p, ipb * tiles);
    super::conv_native::for_each_block(
        &mut out,
        per_image,
        p.batch,
        ipb,
        scratch_len,
        |n0, count, out_blk, scratch, parallel| {
            let cols = count * tiles;
            let (v, rest) = scratch.split_at_mut(xn * p.c_in * ipb * tiles);
            let (m, cscratch) = rest.split_at_mut(xn * p.c_out * ipb * tiles);
            transform_block::<W>(x, p, n0, count, v, cscratch, parallel);
            let v: &[f32] = v;
            let m = &mut m[..xn * p.c_out * cols];
            for_chunks(m, p.c_out * cols, parallel, |xi, dst| {
                // SAFETY: lhs is c_out x c_in read from U (`[c_out][xi][c_in]`: row stride
                // XI * c_in from transform xi; the last row ends at (c_out - 1) * XI * c_in +
                // xi * c_in + c_in <= u.len()); rhs is c_in x cols read from V likewise (row
                // stride XI * cols); dst is c_out x cols (row stride cols).
                unsafe {
                    super::conv_native::matmul::<f32>(
                        (p.c_out, cols, p.c_in),
                        dst.as_mut_ptr(),
                        cols,
                        (u.as_ptr().add(xi * p.c_in), 1, xn * p.c_in),
                        (v.as_ptr().add(xi * cols), 1, xn * cols),
                        false,
                        false,
                    );
                }
            });
            let m: &[f32] = m;
            let out = OutPtr(out_blk.as_mut_ptr());
            let run = |co: usize| {
                let b = bias.map_or(0.0, |b| b[co]);
                // SAFETY: `out_blk` holds the block's `count` images; each channel's planes
                // are written by this call only.
                unsafe { output_channel::<W>(m, p, co, count, b, out.get()) };
            };
            #[cfg(feature = "rayon")]
            if parallel {
                use rayon::prelude::*;
                (0..p.c_out).into_par_iter().for_each(run);
                return;
            }
            (0..p.c_out).for_each(run);
        },
    );
    out
}

/// Forward: `conv2d(x, w) + bias` (NCHW, `w`: `[c_out, c_in, 3, 3]`) with tiles of `tile`.
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    geo: &Geometry,
    tile: TileSize,
) -> Vec<f32> {
    fn run<W: Tile>(x: &[f32], w: &[f32], bias: Option<&[f32]>, geo: &Geometry) -> Vec<f32> {
        let u = weight_transform::<W>(w, geo.c_out, geo.c_in, false);
        convolve::<W>(x, &u, bias, &Problem::new::<W>(geo))
    }
    match tile {
        TileSize::Two => run::<F2>(x, w, bias, geo),
        TileSize::Four => run::<F4>(x, w, bias, geo),
    }
}

/// Input gradient (`[batch, c_in, h, w]`) given the output gradient `g` (`[batch, c_out,
/// out_h, out_w]`), with tiles of `tile`.
pub(crate) fn x_grad(w: &[f32], g: &[f32], geo: &Geometry, tile: TileSize) -> Vec<f32> {
    fn run<W: Tile>(w: &[f32], g: &[f32], geo: &Geometry) -> Vec<f32> {
        let p = Problem::transposed::<W>(geo);
        let u = weight_transform::<W>(w, geo.c_out, geo.c_in, true);
        convolve::<W>(g, &u, None, &p)
    }
    match tile {
        TileSize::Two => run::<F2>(w, g, geo),
        TileSize::Four => run::<F4>(w, g, geo),
    }
}

/// Weight gradient (`[c_out, c_in, 3, 3]`) given the input `x` and the output gradient `g`,
/// with tiles of `tile`.
pub(crate) fn weight_grad(x: &[f32], g: &[f32], geo: &Geometry, tile: TileSize) -> Vec<f32> {
    match tile {
        TileSize::Two => weight_grad_with::<F2>(x, g, geo),
        TileSize::Four => weight_grad_with::<F4>(x, g, geo),
    }
}

fn weight_grad_with<W: Tile>(x: &[f32], g: &[f32], geo: &Geometry) -> Vec<f32> {
    let xn = W::XI;
    let p = Problem::new::<W>(geo);
    let tiles = p.tiles();
    let ipb = p.images_per_block();
    let steps = p.batch.div_ceil(ipb);
    let blocks = GRAD_BLOCKS.min(steps);
    let steps_per_block = steps.div_ceil(blocks);
    let (c_in, c_out) = (p.c_in, p.c_out);
    let len = xn * c_out * c_in;
    // Sum over the images of one block of `dM . V^T`, in the Winograd domain.
    let accumulate = |block: usize, parallel: bool| -> Vec<f32> {
        // The block's first product overwrites `acc`, later ones add to it; a block
        // without images (more blocks than steps) contributes zeros.
        let mut acc = super::conv_native::output_vec::<f32>(len);
        let (v_len, dm_len) = (xn * c_in * ipb * tiles, xn * c_out * ipb * tiles);
        let cs_len = channel_scratch_total::<W>(&p);
        super::conv_native::with_scratch(v_len + dm_len + cs_len, |scratch: &mut [f32]| {
            let (v, rest) = scratch.split_at_mut(v_len);
            let (dm, cscratch) = rest.split_at_mut(dm_len);
            let start = (block * steps_per_block * ipb).min(p.batch);
            let end = ((block + 1) * steps_per_block * ipb).min(p.batch);
            let mut n0 = start;
            while n0 < end {
                let count = ipb.min(end - n0);
                let cols = count * tiles;
                transform_block::<W>(x, &p, n0, count, v, cscratch, parallel);
                // dM as [c_out][xi][cols].
                let cs = W::channel_scratch_len(&p).max(1);
                let dm_block = &mut dm[..xn * c_out * cols];
                for_pairs(dm_block, xn * cols, cscratch, cs, parallel, |co, d, sc| {
                    adjoint_channel::<W>(g, &p, co, n0, count, sc, d)
                });
                let (v, dm): (&[f32], &[f32]) = (v, dm);
                let first = n0 == start;
                for_chunks(&mut acc, c_out * c_in, parallel, |xi, dst| {
                    // SAFETY: lhs is c_out x cols read from dM (row stride XI * cols, starting
                    // at transform xi); rhs = V^T is cols x c_in read from V (element (t, ci)
                    // at ci * XI * cols + xi * cols + t); dst is c_out x c_in (row stride c_in).
                    unsafe {
                        super::conv_native::matmul_nt::<f32>(
                            (c_out, c_in, cols),
                            dst.as_mut_ptr(),
                            c_in,
                            (dm.as_ptr().add(xi * cols), xn * cols),
                            (v.as_ptr().add(xi * cols), xn * cols),
                            !first,
                        );
                    }
                });
                n0 += count;
            }
            if start == end {
                acc.fill(0.0);
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
    // dw[co, ci] = G^T dU G, dU the sum of the partials in block order.
    kernel_adjoints::<W>(&partials, c_out * c_in)
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

    /// The transforms of whole rows of kernels, [`LANES`] at a time, give the same bits as
    /// one kernel at a time, for both tile sizes, flipped or not, with channel counts that
    /// leave a partial group of lanes; likewise the adjoint, summing two partials.
    #[test]
    fn lane_transforms_match_one_kernel_at_a_time() {
        fn check<W: Tile>() {
            let (c_out, c_in) = (11, 19);
            let w = values(c_out * c_in * 9, 7);
            for flip in [false, true] {
                let u = weight_transform::<W>(&w, c_out, c_in, flip);
                let (rows, cols) = if flip { (c_in, c_out) } else { (c_out, c_in) };
                for r in 0..rows {
                    for c in 0..cols {
                        let (co, ci) = if flip { (c, r) } else { (r, c) };
                        let g = &w[(co * c_in + ci) * 9..][..9];
                        let k: [f32; 9] =
                            core::array::from_fn(|e| if flip { g[8 - e] } else { g[e] });
                        let mut t = [0.0f32; 36];
                        W::kernel_transform(&k, &mut t[..W::XI]);
                        for xi in 0..W::XI {
                            let got = u[(r * W::XI + xi) * cols + c];
                            assert_eq!(
                                got.to_bits(),
                                t[xi].to_bits(),
                                "flip {flip} ({r}, {c}) {xi}"
                            );
                        }
                    }
                }
            }
            let kernels = c_out * c_in;
            let parts = [values(W::XI * kernels, 8), values(W::XI * kernels, 9)];
            let dw = kernel_adjoints::<W>(&parts, kernels);
            for idx in 0..kernels {
                let mut want = [0.0f32; 9];
                W::kernel_adjoint(
                    |xi| parts[0][xi * kernels + idx] + parts[1][xi * kernels + idx],
                    &mut want,
                );
                for e in 0..9 {
                    assert_eq!(dw[idx * 9 + e].to_bits(), want[e].to_bits(), "kernel {idx}");
                }
            }
        }
        check::<F2>();
        check::<F4>();
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

    /// Forward, input and weight gradients against the direct sums (f64), with both tile
    /// sizes, planes that are and are not multiples of the tile, paddings 0 / 1 / 2, one
    /// image per block and several.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        for tile in [TileSize::Two, TileSize::Four] {
            matches_the_direct_convolution(tile);
        }
    }

    fn matches_the_direct_convolution(tile: TileSize) {
        // `forward`, `x_grad` and `weight_grad` run whatever `applies` says: small shapes.
        for (n, ci, h, w, co, pad) in [
            (2, 16, 5, 7, 17, 1),
            (3, 17, 8, 8, 16, 1),
            (2, 16, 6, 5, 16, 0),
            (2, 16, 4, 3, 18, 2),
            (1, 16, 33, 32, 16, 1),
            (40, 16, 4, 4, 16, 1),
            (3, 16, 9, 11, 16, 1),
            (2, 16, 7, 6, 16, 2),
            (20, 16, 24, 24, 16, 1),
        ] {
            let geo = geometry(n, ci, h, w, co, pad);
            let (oh, ow) = (geo.out_h, geo.out_w);
            let x = values(n * ci * h * w, 1);
            let k = values(co * ci * 9, 2);
            let b = values(co, 3);
            let g = values(n * co * oh * ow, 4);
            let y = forward(&x, &k, Some(&b), &geo, tile);
            let dx = x_grad(&k, &g, &geo, tile);
            let dw = weight_grad(&x, &g, &geo, tile);
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
                        "{name}[{i}] of {:?} with {tile:?}: {a} against {e}",
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
        for (tile, (n, ci, h, w, co, pad)) in [TileSize::Two, TileSize::Four]
            .into_iter()
            .flat_map(|t| [(t, (3, 16, 32, 32, 17, 1)), (t, (40, 16, 5, 4, 16, 1))])
        {
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
                        forward(&x, &k, Some(&g[..co]), &geo, tile),
                        x_grad(&k, &g, &geo, tile),
                        weight_grad(&x, &g, &geo, tile),
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
        // ResNet-18's stages, VGG's narrowest one and the small CNN's layers, not narrower ones.
        for (c, hw) in [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)] {
            assert!(applies(&geometry(32, c, hw, hw, c, 1)));
        }
        assert!(applies(&geometry(128, 32, 16, 16, 64, 1)));
        assert!(applies(&geometry(128, 64, 8, 8, 128, 1)));
        assert!(applies(&geometry(128, 128, 8, 8, 64, 1)));
        assert!(!applies(&geometry(128, 32, 8, 8, 64, 1)));
        assert!(!applies(&geometry(128, 16, 16, 16, 64, 1)));
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
        // Forward and input gradient: 4x4 tiles on planes 8 to 16 wide with 64 of them,
        // else 2x2 tiles with 64 of them, else im2col.
        let geo = |n: usize, hw: usize| {
            let c = 2048 / hw;
            geometry(n, c, hw, hw, c, 1)
        };
        let tile = |n: usize, hw: usize| rule(&geo(n, hw), Some((hw, hw)), false);
        assert_eq!(tile(32, 32), Some(TileSize::Two));
        assert_eq!(tile(4, 16), Some(TileSize::Four));
        assert_eq!(tile(16, 8), Some(TileSize::Four));
        assert_eq!(tile(8, 8), Some(TileSize::Two));
        assert_eq!(tile(3, 8), None);
        assert_eq!(tile(128, 4), Some(TileSize::Two));
        assert_eq!(tile(16, 4), Some(TileSize::Two));
        assert_eq!(tile(8, 4), None);
        // Weight gradient: 4x4 tiles on planes at least 8 wide with 128 of them, else 2x2
        // tiles with 64, else im2col.
        let grad = |n: usize, hw: usize| rule(&geo(n, hw), None, false);
        assert_eq!(grad(2, 32), Some(TileSize::Four));
        assert_eq!(grad(32, 8), Some(TileSize::Four));
        assert_eq!(grad(16, 8), Some(TileSize::Two));
        assert_eq!(grad(4, 8), Some(TileSize::Two));
        assert_eq!(grad(3, 8), None);
        assert_eq!(grad(32, 4), Some(TileSize::Two));
        assert_eq!(grad(16, 4), Some(TileSize::Two));
        assert_eq!(grad(8, 4), None);
        // On Intel CPUs: 4x4 tiles also for the forward and input gradient on planes wider
        // than 16, and for the weight gradient on planes narrower than 8 with 32 tiles.
        let tile = |n: usize, hw: usize| rule(&geo(n, hw), Some((hw, hw)), true);
        assert_eq!(tile(32, 32), Some(TileSize::Four));
        assert_eq!(tile(1, 32), Some(TileSize::Four));
        assert_eq!(tile(4, 16), Some(TileSize::Four));
        assert_eq!(tile(8, 8), Some(TileSize::Two));
        assert_eq!(tile(128, 4), Some(TileSize::Two));
        assert_eq!(tile(8, 4), None);
        let grad = |n: usize, hw: usize| rule(&geo(n, hw), None, true);
        assert_eq!(grad(2, 32), Some(TileSize::Four));
        assert_eq!(grad(16, 8), Some(TileSize::Two));
        assert_eq!(grad(32, 4), Some(TileSize::Four));
        assert_eq!(grad(16, 4), Some(TileSize::Two));
        assert_eq!(grad(8, 4), None);
    }

    /// Not a check: a measurement, run by hand, behind the tile-size rules of [`choose`]
    /// (`cargo test --release --features x86-v4 --lib time_winograd_passes -- --ignored
    /// --nocapture`, once as is and once with `ROBUSTNESS_NO_WINOGRAD=1` for im2col): the
    /// best of 6 calls of each pass, in ms, for ResNet-18's stages at several batch sizes.
    #[test]
    #[ignore = "a timing measurement, not a check"]
    fn time_winograd_passes() {
        extern crate std;
        use std::time::Instant;
        for (n, c, hw) in [
            (2, 512, 4),
            (8, 512, 4),
            (8, 256, 8),
            (4, 128, 16),
            (16, 256, 8),
            (64, 512, 4),
            (64, 256, 8),
            (32, 64, 32),
            (32, 128, 16),
            (32, 256, 8),
            (32, 512, 4),
            (128, 64, 32),
            (128, 128, 16),
            (128, 256, 8),
            (128, 512, 4),
        ] {
            let geo = geometry(n, c, hw, hw, c, 1);
            let x = values(n * c * hw * hw, 1);
            let k = values(c * c * 9, 2);
            let g = values(n * c * hw * hw, 4);
            let time = |f: &dyn Fn() -> Vec<f32>| {
                let mut best = f64::MAX;
                for _ in 0..6 {
                    let t = Instant::now();
                    let r = f();
                    core::hint::black_box(r);
                    best = best.min(t.elapsed().as_secs_f64() * 1e3);
                }
                best
            };
            let mut line = std::format!("n{n} c{c} {hw}x{hw}:");
            if std::env::var_os("ROBUSTNESS_NO_WINOGRAD").is_some() {
                use crate::{FlexTensor, Layout};
                use burn_backend::DType;
                use burn_backend::ops::ConvOptions;
                use burn_std::{Bytes, Shape};
                let t = |v: &[f32], s: [usize; 4]| {
                    FlexTensor::new(
                        Bytes::from_elems(v.to_vec()),
                        Layout::contiguous(Shape::from(s.to_vec())),
                        DType::F32,
                    )
                };
                let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
                let xs = [n, c, hw, hw];
                let ks = [c, c, 3, 3];
                let f = time(&|| {
                    let r = super::super::conv_native::conv2d_forward::<f32>(
                        t(&x, xs),
                        t(&k, ks),
                        None,
                        &opts,
                    );
                    core::hint::black_box(r);
                    Vec::new()
                });
                let dx = time(&|| {
                    let r = super::super::conv_native::conv2d_x_grad::<f32>(
                        &Shape::from(xs.to_vec()),
                        t(&k, ks),
                        t(&g, xs),
                        &opts,
                    );
                    core::hint::black_box(r);
                    Vec::new()
                });
                let dw = time(&|| {
                    let r = super::super::conv_weight_grad::conv2d_weight_grad::<f32>(
                        t(&x, xs),
                        &Shape::from(ks.to_vec()),
                        t(&g, xs),
                        &opts,
                    );
                    core::hint::black_box(r);
                    Vec::new()
                });
                std::println!("{line}  im2col fwd {f:.1} dx {dx:.1} dw {dw:.1}");
                continue;
            }
            for tile in [TileSize::Two, TileSize::Four] {
                let f = time(&|| forward(&x, &k, None, &geo, tile));
                let dx = time(&|| x_grad(&k, &g, &geo, tile));
                let dw = time(&|| weight_grad(&x, &g, &geo, tile));
                line += &std::format!("  {tile:?} fwd {f:.1} dx {dx:.1} dw {dw:.1}");
            }
            std::println!("{line}");
        }
    }
}
