//! Output people look at: PNG image grids (adversarial examples, constructed data sets), line
//! plots (robustness curves), written atomically, with an embedded font (no system fonts).

use crate::error::{Error, Result};
use crate::train::checkpoint::write_atomic;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;
use std::sync::OnceLock;

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("drawing {}: {e}", path.display()))
}

/// Registers DejaVu Sans (embedded) as plotters' "sans-serif" once.
pub fn register_embedded_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    })
}

/// Encodes an RGB8 buffer (`width * height * 3` bytes) as PNG.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Writes an RGB8 buffer as a PNG file, atomically.
pub fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let bytes = encode_png(rgb, width, height).map_err(|e| plot_error(path, e))?;
    write_atomic(path, &bytes)
}

/// One image of a grid: [C, H, W] values in [0, 1] (C = 1 or 3) and a caption.
pub struct Tile<'a> {
    /// Pixel values, channel-major.
    pub pixels: &'a [f32],
    /// Text drawn under the image.
    pub caption: String,
}

/// Draws rows of equally sized images (upscaled by `scale`, captions underneath, a title per
/// row) into a PNG.
pub fn image_grid(
    path: &Path,
    rows: &[(String, Vec<Tile<'_>>)],
    channels: usize,
    height: usize,
    width: usize,
    scale: usize,
) -> Result<()> {
    let cols = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0).max(1);
    let (tw, th) = (width * scale, height * scale);
    let (pad, caption_h, title_h) = (6usize, 18usize, 22usize);
    let cell_w = tw + pad;
    let cell_h = th + caption_h + pad;
    let img_w = (pad + cols * cell_w) as u32;
    let img_h = (rows.len() * (cell_h + title_h) + pad) as u32;
    let mut rgb = vec![255u8; img_w as usize * img_h as usize * 3];
    for (r, (_, tiles)) in rows.iter().enumerate() {
        let top = r * (cell_h + title_h) + title_h;
        for (col, tile) in tiles.iter().enumerate() {
            let left = pad + col * cell_w;
            for y in 0..th {
                for x in 0..tw {
                    let (sy, sx) = (y / scale, x / scale);
                    let px = |c: usize| {
                        let c = if channels == 1 { 0 } else { c };
                        let v = tile.pixels.get(c * height * width + sy * width + sx);
                        (v.copied().unwrap_or(0.0).clamp(0.0, 1.0) * 255.0).round() as u8
                    };
                    let o = ((top + y) * img_w as usize + left + x) * 3;
                    rgb[o] = px(0);
                    rgb[o + 1] = px(1);
                    rgb[o + 2] = px(2);
                }
            }
        }
    }
    if register_embedded_font() {
        let root = BitMapBackend::with_buffer(&mut rgb, (img_w, img_h)).into_drawing_area();
        for (r, (title, tiles)) in rows.iter().enumerate() {
            let top = (r * (cell_h + title_h)) as i32;
            root.draw(&Text::new(
                title.clone(),
                (pad as i32, top + 3),
                ("sans-serif", 15),
            ))
            .map_err(|e| plot_error(path, e))?;
            for (col, tile) in tiles.iter().enumerate() {
                let left = (pad + col * cell_w) as i32;
                let y = top + (title_h + th + 2) as i32;
                root.draw(&Text::new(
                    tile.caption.clone(),
                    (left, y),
                    ("sans-serif", 12),
                ))
                .map_err(|e| plot_error(path, e))?;
            }
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    write_png(path, &rgb, img_w, img_h)
}

/// A line plot of one or more named series of (x, y) points into a PNG.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let (w, h) = (800u32, 520u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let (y0, y1) = (y0.min(0.0), y1.max(y0 + 1e-9) * 1.05);
    if register_embedded_font() {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| plot_error(path, e))?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    write_png(path, &rgb, w, h)
}

/// A Markdown table from a header and rows.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    s
}

/// Grouped bar chart: one group per category, one bar per series (values in [0, 1], shown as
/// percentages; `None` leaves a gap, e.g. where the paper gives no figure).
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<()> {
    // Wide enough for every category's label; the y axis runs to 130% so that the legend sits
    // above the bars (only 0-100% is labelled).
    let w = (140 * categories.len() as u32 + 120).max(800);
    let h = 560u32;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    let groups = categories.len().max(1) as f64;
    let k = series.len().max(1) as f64;
    if register_embedded_font() {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..groups, 0.0..130.0)
            .map_err(|e| plot_error(path, e))?;
        let names = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_labels(14)
            .y_label_formatter(&|y: &f64| {
                if *y <= 100.0 + 1e-9 {
                    format!("{y:.0}")
                } else {
                    String::new()
                }
            })
            .x_labels(categories.len().max(1) * 2 + 1)
            .x_label_formatter(&|x: &f64| {
                let i = x.floor() as usize;
                if (x.fract() - 0.5).abs() < 0.05 && i < names.len() {
                    names[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        let width = 0.8 / k;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = Palette99::pick(s).to_rgba();
            let bars = values.iter().enumerate().filter_map(|(g, v)| {
                v.map(|v| {
                    let x0 = g as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.95, 100.0 * v)], color.filled())
                })
            });
            chart
                .draw_series(bars)
                .map_err(|e| plot_error(path, e))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    write_png(path, &rgb, w, h)
}

/// Least-squares line y = a + b x through the points (`None` with fewer than two distinct x).
pub fn trend_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if points.len() < 2 || sxx < 1e-12 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

/// A scatter plot of labelled points with their least-squares trend line (dotted) into a PNG.
pub fn scatter_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(String, f64, f64)],
) -> Result<()> {
    let (w, h) = (800u32, 520u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    let xs = points.iter().map(|p| p.1);
    let ys = points.iter().map(|p| p.2);
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let pad = |a: f64, b: f64| {
        if a > b {
            (0.0, 1.0)
        } else {
            let m = ((b - a) * 0.15).max(0.02);
            (a - m, b + m)
        }
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    if register_embedded_font() {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.1, p.2)).collect();
        if let Some((a, b)) = trend_line(&xy) {
            let red = RED.stroke_width(2);
            let steps = 40;
            let inside = |x: f64| (y0..=y1).contains(&(a + b * x));
            let dashes = (0..steps).step_by(2).filter_map(|i| {
                let xa = x0 + (x1 - x0) * i as f64 / steps as f64;
                let xb = x0 + (x1 - x0) * (i + 1) as f64 / steps as f64;
                (inside(xa) && inside(xb))
                    .then(|| PathElement::new(vec![(xa, a + b * xa), (xb, a + b * xb)], red))
            });
            chart.draw_series(dashes).map_err(|e| plot_error(path, e))?;
        }
        chart
            .draw_series(points.iter().map(|(name, x, y)| {
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 5, BLUE.filled())
                    + Text::new(name.clone(), (8, -6), ("sans-serif", 14))
            }))
            .map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    write_png(path, &rgb, w, h)
}
