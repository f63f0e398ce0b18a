//! Charts with plotters, as SVG (for the HTML page, inline) and PNG, with a bundled font
//! (DejaVu Sans, `font/`) so they render the same on a bare machine.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("font/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
pub const WIDTH: u32 = 860;
pub const HEIGHT: u32 = 480;

/// Registers the bundled font as plotters' "sans-serif". The charts call it; so must any other
/// plotters user in the process (criterion's plots in `benches/`): this build of plotters has no
/// system fonts, and text without a registered font is an error.
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid; a failure would only mean text is not drawn.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Measured points joined by a line.
    Line,
    /// A prediction: dashed, no markers.
    Dashed,
}

#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's entry; empty for none (a series another one already names).
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// Palette index (a prediction takes its measured series' colour); None: the series' own.
    pub color: Option<usize>,
}

/// A line chart: series over a numeric x axis (log scale when the values span a wide range),
/// with optional horizontal reference lines (a card's capacity).
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    /// A log y axis (a context axis, which doubles).
    pub log_y: bool,
    pub series: Vec<Series>,
    pub hlines: Vec<(String, f64)>,
}

/// Grouped bars: for each group (a model × format), one bar per member (a machine).
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub members: Vec<String>,
    /// values[group][member]; None where that machine has no figure.
    pub values: Vec<Vec<Option<f64>>>,
}

/// A grid of verdicts: rows (cards) × columns (a model in a format), each cell coloured by its
/// level (0 fits, 1 tight, 2 does not fit, 3 not applicable) and labelled (e.g. the GiB left free).
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    /// A line under the grid: what the figures assume.
    pub caption: String,
    pub rows: Vec<String>,
    /// Column headers, two lines each (model, format).
    pub cols: Vec<(String, String)>,
    /// cells[row][col]: (level, text).
    pub cells: Vec<Vec<(u8, String)>>,
    /// What a cell's text is, for the legend: "GiB free" (a fit's; "short" where it does not
    /// fit), or "× concurrency" (vLLM's).
    pub unit: String,
}

/// Horizontal stacked bars: per group (a case) a bar or two (predicted, measured), each made of
/// named segments (weights, KV cache ...) in the legend's colours, its total at its end.
#[derive(Debug, Clone)]
pub struct StackedBars {
    pub title: String,
    /// A line under the bars: what the segments mean.
    pub caption: String,
    /// The segments' names, in drawing order (the legend).
    pub segments: Vec<String>,
    pub groups: Vec<StackGroup>,
}

#[derive(Debug, Clone)]
pub struct StackGroup {
    pub label: String,
    pub bars: Vec<StackBar>,
}

#[derive(Debug, Clone)]
pub struct StackBar {
    /// "predicted", "measured".
    pub label: String,
    /// GiB per segment (as `StackedBars::segments`); 0 where the bar has no such part.
    pub values: Vec<f64>,
}

impl StackedBars {
    const LEFT: u32 = 330;
    const TOP: u32 = 70;
    const BAR_H: u32 = 13;
    const GAP: u32 = 12;

    fn group_h(g: &StackGroup) -> u32 {
        g.bars.len().max(1) as u32 * (Self::BAR_H + 2) + Self::GAP
    }

    fn size(&self) -> (u32, u32) {
        let bars: u32 = self.groups.iter().map(Self::group_h).sum();
        (WIDTH, Self::TOP + bars + 70)
    }
}

/// Text at a pixel, vertically centred there, for the charts laid out by hand.
fn label<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &str,
    at: (i32, i32),
    size: u32,
    h_pos: HPos,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.draw(&Text::new(
        s.to_string(),
        at,
        (FAMILY, size)
            .into_font()
            .into_text_style(root)
            .pos(Pos::new(h_pos, VPos::Center)),
    ))
    .map_err(draw_err)
}

fn draw_stacked<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &StackedBars) -> Result<()>
where
    DB::ErrorType: 'static,
{
    register_font();
    root.fill(&WHITE).map_err(draw_err)?;
    let text = |s: &str, at: (i32, i32), size: u32, h_pos: HPos| label(&root, s, at, size, h_pos);
    text(&c.title, (12, 16), 18, HPos::Left)?;
    let max = c
        .groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.values.iter().sum::<f64>()))
        .fold(0.0, f64::max);
    if c.groups.is_empty() || max <= 0.0 {
        no_data(&root, &c.title)?;
        return root.present().map_err(draw_err);
    }
    // The legend, under the title.
    let mut x = 12;
    for (i, name) in c.segments.iter().enumerate() {
        root.draw(&Rectangle::new([(x, 36), (x + 12, 48)], color(i).filled()))
            .map_err(draw_err)?;
        text(name, (x + 17, 42), 12, HPos::Left)?;
        x += 24 + 7 * name.chars().count() as i32;
    }
    let (left, top) = (StackedBars::LEFT as i32, StackedBars::TOP as i32);
    let span = (WIDTH as i32 - left - 90) as f64;
    let step = nice_step(max / 5.0);
    let scale = span / max.max(step);
    let bottom = top + c.groups.iter().map(StackedBars::group_h).sum::<u32>() as i32;
    let mut t = 0.0;
    while t <= max + 1e-9 {
        let gx = left + (t * scale) as i32;
        root.draw(&PathElement::new(
            vec![(gx, top - 4), (gx, bottom)],
            RGBColor(220, 220, 220).stroke_width(1),
        ))
        .map_err(draw_err)?;
        text(&human(t), (gx, bottom + 10), 11, HPos::Center)?;
        t += step;
    }
    text(
        "GiB",
        (left + span as i32 / 2, bottom + 28),
        13,
        HPos::Center,
    )?;
    let mut y = top;
    for g in &c.groups {
        let bh = StackedBars::BAR_H as i32;
        let gh = g.bars.len().max(1) as i32 * (bh + 2);
        text(&g.label, (12, y + gh / 2), 12, HPos::Left)?;
        for b in &g.bars {
            text(&b.label, (left - 6, y + bh / 2), 10, HPos::Right)?;
            let mut x0 = left as f64;
            for (i, v) in b.values.iter().enumerate() {
                let w = v.max(0.0) * scale;
                if w > 0.0 {
                    root.draw(&Rectangle::new(
                        [(x0 as i32, y), ((x0 + w).round() as i32, y + bh)],
                        color(i).filled(),
                    ))
                    .map_err(draw_err)?;
                }
                x0 += w;
            }
            let total: f64 = b.values.iter().sum();
            text(
                &format!("{total:.2} GiB"),
                (x0 as i32 + 5, y + bh / 2),
                11,
                HPos::Left,
            )?;
            y += bh + 2;
        }
        y += StackedBars::GAP as i32;
    }
    text(&c.caption, (12, bottom + 48), 12, HPos::Left)?;
    root.present().map_err(draw_err)
}

/// A round tick step (1, 2 or 5 × a power of ten) of about `rough`.
fn nice_step(rough: f64) -> f64 {
    let p = 10f64.powf(rough.max(1e-12).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * p)
}

impl Heatmap {
    const LEFT: u32 = 190;
    const TOP: u32 = 78;
    const CELL_W: u32 = 72;
    const CELL_H: u32 = 22;

    fn size(&self) -> (u32, u32) {
        (
            (Self::LEFT + Self::CELL_W * self.cols.len() as u32 + 20).max(WIDTH),
            Self::TOP + Self::CELL_H * self.rows.len() as u32 + 64,
        )
    }
}

fn draw_heatmap<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, h: &Heatmap) -> Result<()>
where
    DB::ErrorType: 'static,
{
    register_font();
    root.fill(&WHITE).map_err(draw_err)?;
    let text =
        |s: &str, x: i32, y: i32, size: u32, h_pos: HPos| label(&root, s, (x, y), size, h_pos);
    text(&h.title, 12, 16, 18, HPos::Left)?;
    if h.rows.is_empty() || h.cols.is_empty() {
        no_data(&root, &h.title)?;
        return root.present().map_err(draw_err);
    }
    let (left, top, cw, ch) = (
        Heatmap::LEFT as i32,
        Heatmap::TOP as i32,
        Heatmap::CELL_W as i32,
        Heatmap::CELL_H as i32,
    );
    for (c, (model, format)) in h.cols.iter().enumerate() {
        let x = left + c as i32 * cw + cw / 2;
        text(model, x, top - 34, 13, HPos::Center)?;
        text(format, x, top - 17, 11, HPos::Center)?;
    }
    const LEVELS: [RGBColor; 4] = [
        RGBColor(120, 190, 120),
        RGBColor(245, 200, 90),
        RGBColor(230, 130, 120),
        RGBColor(225, 225, 225),
    ];
    for (r, name) in h.rows.iter().enumerate() {
        let y = top + r as i32 * ch;
        text(name, left - 8, y + ch / 2, 12, HPos::Right)?;
        for (c, (level, label)) in h.cells[r].iter().enumerate() {
            let x = left + c as i32 * cw;
            let fill = LEVELS[(*level as usize).min(3)];
            root.draw(&Rectangle::new(
                [(x + 1, y + 1), (x + cw - 1, y + ch - 1)],
                fill.filled(),
            ))
            .map_err(draw_err)?;
            text(label, x + cw / 2, y + ch / 2, 11, HPos::Center)?;
        }
    }
    let bottom = top + h.rows.len() as i32 * ch;
    let mut x = 12;
    let any_na = h.cells.iter().flatten().any(|c| c.0 == 3);
    let gib = h.unit == "GiB free";
    let names = [
        format!("fits ({})", h.unit),
        if gib { "tight (over 90%)" } else { "tight" }.to_string(),
        if gib {
            "does not fit (GiB short)".to_string()
        } else {
            format!("does not fit ({})", h.unit)
        },
        "n/a".to_string(),
    ];
    for (level, name) in names.iter().enumerate().take(if any_na { 4 } else { 3 }) {
        root.draw(&Rectangle::new(
            [(x, bottom + 12), (x + 14, bottom + 26)],
            LEVELS[level].filled(),
        ))
        .map_err(draw_err)?;
        text(name, x + 20, bottom + 19, 12, HPos::Left)?;
        x += 190;
    }
    text(&h.caption, 12, bottom + 46, 12, HPos::Left)?;
    root.present().map_err(draw_err)
}

fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
}

fn draw_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Unsupported(format!("drawing a chart: {e}"))
}

fn no_data<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> Result<()> {
    root.draw(&Text::new(
        format!("{title}: no data"),
        (40, HEIGHT as i32 / 2),
        (FAMILY, 20).into_font(),
    ))
    .map_err(draw_err)
}

/// Axis range covering `values`, padded; a single value gets a range around it.
fn range(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (if log { 1.0 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else if hi == lo {
        (
            if from_zero { lo.min(0.0) } else { lo * 0.5 },
            hi * 1.5 + 1e-9,
        )
    } else {
        let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
        let lo = if from_zero {
            lo.min(0.0)
        } else {
            lo - 0.05 * span
        };
        (lo, hi + 0.1 * span)
    }
}

fn human(v: f64) -> String {
    if v >= 1024.0 && (v as u64).is_multiple_of(1024) {
        format!("{}K", v as u64 / 1024)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Ticks for a log axis over `lo..hi`: the data's own values where there are a few (batch sizes
/// 1, 2, 4, 8, 16), else powers of two (contexts, GiB), else 1-2-5 steps.
fn log_keys(lo: f64, hi: f64, data: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut own: Vec<f64> = data.filter(|v| *v >= lo && *v <= hi).collect();
    own.sort_by(f64::total_cmp);
    own.dedup();
    if (2..=10).contains(&own.len()) {
        return own;
    }
    let twos: Vec<f64> = (-20..=40)
        .map(|k| 2f64.powi(k))
        .filter(|v| *v >= lo && *v <= hi)
        .collect();
    if (2..=12).contains(&twos.len()) {
        return twos;
    }
    (-12..=15)
        .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
        .filter(|v| *v >= lo && *v <= hi)
        .collect()
}

fn draw_line<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &LineChart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    register_font();
    root.fill(&WHITE).map_err(draw_err)?;
    let points = || c.series.iter().flat_map(|s| s.points.iter());
    if points().next().is_none() {
        no_data(&root, &c.title)?;
        return root.present().map_err(draw_err);
    }
    // A log axis only where the values span more than a decade or so (else it has no ticks).
    let (lo, hi) = range(points().map(|p| p.0), true, false);
    let log_x = c.log_x && hi / lo > 20.0;
    let (x0, x1) = range(points().map(|p| p.0), log_x, false);
    let ys = || points().map(|p| p.1).chain(c.hlines.iter().map(|h| h.1));
    let (lo, hi) = range(ys(), true, false);
    let log_y = c.log_y && hi / lo > 20.0;
    let (y0, y1) = range(ys(), log_y, !log_y);
    // Headroom above the data for the legend (about one line of it per entry).
    let entries = c.series.iter().filter(|s| !s.name.is_empty()).count() + c.hlines.len();
    let room = 0.05 + 0.055 * entries as f64;
    let y1 = if log_y {
        y1 * (y1 / y0).powf(room)
    } else {
        y1 + (y1 - y0) * room
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&c.title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_label_formatter(&|v| human(*v))
                .y_label_formatter(&|v| human(*v))
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 14))
                .draw()
                .map_err(draw_err)?;
            for (i, s) in c.series.iter().enumerate() {
                let col = color(s.color.unwrap_or(i));
                let mut pts = s.points.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                match s.style {
                    Style::Line => {
                        let drawn = chart
                            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                            .map_err(draw_err)?;
                        if !s.name.is_empty() {
                            drawn.label(&s.name).legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                            });
                        }
                        chart
                            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())))
                            .map_err(draw_err)?;
                    }
                    Style::Dashed => {
                        let drawn = chart
                            .draw_series(DashedLineSeries::new(pts, 6, 4, col.stroke_width(1)))
                            .map_err(draw_err)?;
                        if !s.name.is_empty() {
                            drawn.label(&s.name).legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(1))
                            });
                        }
                    }
                }
            }
            for (name, y) in &c.hlines {
                let line = vec![(x0, *y), (x1, *y)];
                chart
                    .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))
                    .map_err(draw_err)?
                    .label(name)
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 12))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(draw_err)?;
        }};
    }
    let x_keys = log_keys(x0, x1, points().map(|p| p.0));
    let y_keys = log_keys(y0, y1, ys());
    match (log_x, log_y) {
        (true, true) => body!(builder
            .build_cartesian_2d(
                (x0..x1).log_scale().with_key_points(x_keys),
                (y0..y1).log_scale().with_key_points(y_keys)
            )
            .map_err(draw_err)?),
        (true, false) => body!(builder
            .build_cartesian_2d((x0..x1).log_scale().with_key_points(x_keys), y0..y1)
            .map_err(draw_err)?),
        (false, true) => body!(builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale().with_key_points(y_keys))
            .map_err(draw_err)?),
        (false, false) => body!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?),
    }
    root.present().map_err(draw_err)
}

fn draw_bars<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &BarChart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    register_font();
    root.fill(&WHITE).map_err(draw_err)?;
    let max = c
        .values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(0.0, f64::max);
    if c.groups.is_empty() || max <= 0.0 {
        no_data(&root, &c.title)?;
        return root.present().map_err(draw_err);
    }
    let n = c.groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, 0f64..max * 1.15)
        .map_err(draw_err)?;
    let groups = c.groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(c.groups.len() * 2 + 1)
        .x_label_formatter(&move |v| {
            let i = v.floor() as usize;
            if (v - v.floor() - 0.5).abs() < 0.26 && i < groups.len() {
                groups[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(&c.y_label)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 14))
        .draw()
        .map_err(draw_err)?;
    let k = c.members.len().max(1) as f64;
    for (m, name) in c.members.iter().enumerate() {
        let col = color(m);
        let bars = c.values.iter().enumerate().filter_map(move |(g, row)| {
            let v = row.get(m).copied().flatten()?;
            let x = g as f64 + 0.1 + 0.8 * m as f64 / k;
            Some(Rectangle::new([(x, 0.0), (x + 0.8 / k, v)], col.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)
}

/// A chart of either kind.
#[derive(Debug, Clone)]
pub enum Chart {
    Line(LineChart),
    Bars(BarChart),
    Heatmap(Heatmap),
    Stacked(StackedBars),
}

impl Chart {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        match self {
            Chart::Line(c) => draw_line(root, c),
            Chart::Bars(c) => draw_bars(root, c),
            Chart::Heatmap(h) => draw_heatmap(root, h),
            Chart::Stacked(c) => draw_stacked(root, c),
        }
    }

    /// Pixels: the line and bar charts' fixed size, or what a heatmap's grid needs.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Chart::Heatmap(h) => h.size(),
            Chart::Stacked(c) => c.size(),
            _ => (WIDTH, HEIGHT),
        }
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size()).into_drawing_area();
            self.draw(root)?;
        }
        Ok(out)
    }

    /// Writes `stem.svg` and `stem.png`; returns the SVG text.
    pub fn write(&self, stem: &Path) -> Result<String> {
        let svg = self.svg()?;
        let svg_path = stem.with_extension("svg");
        std::fs::write(&svg_path, &svg).map_err(|e| Error::io(&svg_path, e))?;
        let png_path = stem.with_extension("png");
        {
            let root = BitMapBackend::new(&png_path, self.size()).into_drawing_area();
            self.draw(root)?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(series: Vec<Series>) -> Chart {
        Chart::Line(LineChart {
            title: "decode".into(),
            x_label: "context".into(),
            y_label: "tok/s".into(),
            log_x: true,
            log_y: false,
            series,
            hlines: vec![],
        })
    }

    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).expect("valid SVG");
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect()
    }

    fn polylines(svg: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count()
    }

    #[test]
    fn empty_single_point_and_many_series_render() {
        let empty = line(vec![]).svg().unwrap();
        assert!(texts(&empty).iter().any(|t| t.contains("no data")));

        let one = line(vec![Series {
            name: "270m q4_k_m".into(),
            points: vec![(4096.0, 55.0)],
            style: Style::Line,
            color: None,
        }])
        .svg()
        .unwrap();
        assert!(
            texts(&one).iter().any(|t| t == "270m q4_k_m"),
            "{:?}",
            texts(&one)
        );

        let many: Vec<Series> = (0..12)
            .map(|i| Series {
                name: format!("series {i}"),
                points: (1..6)
                    .map(|j| ((512 << j) as f64, (i * j) as f64))
                    .collect(),
                style: if i % 2 == 0 {
                    Style::Line
                } else {
                    Style::Dashed
                },
                color: None,
            })
            .collect();
        let svg = line(many).svg().unwrap();
        let t = texts(&svg);
        for i in 0..12 {
            assert!(
                t.contains(&format!("series {i}")),
                "legend lacks series {i}"
            );
        }
        assert!(
            polylines(&svg) >= 6,
            "the solid series are drawn as polylines"
        );
    }

    #[test]
    fn bars_render_and_png_is_written() {
        let c = Chart::Bars(BarChart {
            title: "decode tok/s".into(),
            y_label: "tok/s".into(),
            groups: vec!["1b q4_k_m".into(), "4b q4_k_m".into()],
            members: vec!["H100".into(), "4090".into()],
            values: vec![vec![Some(300.0), Some(250.0)], vec![Some(120.0), None]],
        });
        let dir = tempfile::tempdir().unwrap();
        let svg = c.write(&dir.path().join("bars")).unwrap();
        let t = texts(&svg);
        assert!(
            t.contains(&"H100".to_string()) && t.contains(&"1b q4_k_m".to_string()),
            "{t:?}"
        );
        let png = std::fs::read(dir.path().join("bars.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let empty = Chart::Bars(BarChart {
            title: "x".into(),
            y_label: "y".into(),
            groups: vec![],
            members: vec![],
            values: vec![],
        });
        assert!(texts(&empty.svg().unwrap())
            .iter()
            .any(|t| t.contains("no data")));
    }
}
