//! Hand-written SVG line charts: median over seeds with a 25–75 % band, as in the paper.
//!
//! Each chart says what it draws (a caption under the legend), each policy keeps its colour
//! in every chart and run ([`color_of`]), and a line drawn over another one is named in the
//! legend.

use std::fmt::Write;

use ferry_sched_core::policies::PolicyKind;

use crate::curves::{Aggregate, RunCurves};
use crate::experiment::{Info, PolicySetting};

/// The colour of a policy setting: fixed, whatever else is in the chart.
pub fn color_of(setting: PolicySetting) -> &'static str {
    let online = setting.policy.uses_workload() && setting.info == Info::Online;
    match (setting.policy, online) {
        (PolicyKind::Random, _) => "#7f7f7f",
        (PolicyKind::DotProduct, _) => "#1f77b4",
        (PolicyKind::GpuClustering, _) => "#2ca02c",
        (PolicyKind::GpuPacking, _) => "#9467bd",
        (PolicyKind::BestFit, _) => "#ff7f0e",
        (PolicyKind::Fgd, false) => "#d62728",
        (PolicyKind::Fgd, true) => "#e377c2",
        (PolicyKind::Ferry, false) => "#000000",
        (PolicyKind::Ferry, true) => "#17becf",
    }
}

/// Two medians closer than this (in pixels) at every point draw as one line.
const HIDDEN_PX: f64 = 1.5;

/// One line of a chart: points (x, median, p25, p75).
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Stroke colour.
    pub color: String,
    /// Points.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Chart axes and titles.
pub struct Chart<'a> {
    /// Title.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// X range.
    pub x_range: (f64, f64),
    /// Optional dashed reference line `y = a − x` (the ideal below 100 %).
    pub ideal: Option<f64>,
    /// Seeds behind each line (for the caption).
    pub seeds: usize,
}

fn nice_step(span: f64) -> f64 {
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Renders a chart as an SVG document.
pub fn line_chart(chart: &Chart, series: &[Series]) -> String {
    let (w, h) = (900.0, 500.0);
    let (left, right, top, bottom) = (70.0, 270.0, 40.0, 55.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let (x0, x1) = chart.x_range;
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0 >= x0 && p.0 <= x1)
        .flat_map(|p| [p.2, p.3, p.1]);
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    y0 = (y0 - 0.5).max(0.0).floor();
    y1 = (y1 + 0.5).ceil();
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>
"#,
        left + pw / 2.0,
        chart.title
    );
    let ystep = nice_step(y1 - y0);
    let mut y = (y0 / ystep).ceil() * ystep;
    while y <= y1 + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            sy(y),
            sy(y),
            left - 6.0,
            sy(y) + 4.0,
            trim_num(y)
        );
        y += ystep;
    }
    let xstep = nice_step(x1 - x0);
    let mut x = (x0 / xstep).ceil() * xstep;
    while x <= x1 + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{}" stroke="#e5e5e5"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            sx(x),
            sx(x),
            top + ph,
            sx(x),
            top + ph + 18.0,
            trim_num(x)
        );
        x += xstep;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"##,
        left + pw / 2.0,
        h - 12.0,
        chart.x_label,
        top + ph / 2.0,
        chart.y_label
    );
    let _ = writeln!(
        svg,
        r#"<clipPath id="plot"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath><g clip-path="url(#plot)">"#
    );
    if let Some(a) = chart.ideal {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="5 4"/>"##,
            sx(x0),
            sy(a - x0),
            sx(a),
            sy(0.0)
        );
    }
    for s in series {
        let pts: Vec<_> = s.points.iter().filter(|p| p.0 >= x0 && p.0 <= x1).collect();
        if pts.is_empty() {
            continue;
        }
        let mut band = String::new();
        for p in &pts {
            let _ = write!(band, "{:.1},{:.1} ", sx(p.0), sy(p.3));
        }
        for p in pts.iter().rev() {
            let _ = write!(band, "{:.1},{:.1} ", sx(p.0), sy(p.2));
        }
        let line: String = pts
            .iter()
            .map(|p| format!("{:.1},{:.1} ", sx(p.0), sy(p.1)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polygon points="{band}" fill="{}" fill-opacity="0.15" stroke="none"/><polyline points="{line}" fill="none" stroke="{}" stroke-width="2"/>"#,
            s.color, s.color
        );
    }
    svg.push_str("</g>\n");
    let lx = left + pw + 16.0;
    let hidden = hidden_under(series, x0, x1, sy);
    let mut ly = top + 12.0;
    for (s, under) in series.iter().zip(&hidden) {
        let label = match under {
            Some(j) => format!("{} (hidden under {})", s.label, series[*j].label),
            None => s.label.clone(),
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 26.0,
            s.color,
            lx + 32.0,
            ly + 4.0,
            label
        );
        ly += 22.0;
    }
    // The caption: what lines, bands and the dashed line are.
    ly += 10.0;
    let mut caption = vec![
        format!("Lines: median over {} seed(s).", chart.seeds),
        "Bands: 25–75 % of the seeds.".to_string(),
    ];
    if chart.ideal.is_some() {
        caption.push("Dashed grey: the ideal,".to_string());
        caption.push("capacity − arrived (no GPU".to_string());
        caption.push("left idle while pods wait).".to_string());
    }
    if hidden.iter().any(Option::is_some) {
        caption.push("A hidden line has the same".to_string());
        caption.push("median as the one over it.".to_string());
    }
    for line in caption {
        let _ = writeln!(
            svg,
            r##"<text class="caption" x="{lx}" y="{ly}" font-size="11" fill="#444">{line}</text>"##
        );
        ly += 15.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// For each series, the later series drawn over it (medians within [`HIDDEN_PX`] pixels at
/// every point of the range), if any.
fn hidden_under(
    series: &[Series],
    x0: f64,
    x1: f64,
    sy: impl Fn(f64) -> f64,
) -> Vec<Option<usize>> {
    let in_range = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .filter(|p| p.0 >= x0 && p.0 <= x1)
            .map(|p| (p.0, p.1))
            .collect()
    };
    let pts: Vec<_> = series.iter().map(in_range).collect();
    (0..series.len())
        .map(|i| {
            (i + 1..series.len()).rev().find(|&j| {
                !pts[i].is_empty()
                    && pts[i].len() == pts[j].len()
                    && pts[i]
                        .iter()
                        .zip(&pts[j])
                        .all(|(a, b)| a.0 == b.0 && (sy(a.1) - sy(b.1)).abs() < HIDDEN_PX)
            })
        })
        .collect()
}

fn trim_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// The series of a metric for every aggregate: median and quartiles over seeds.
pub fn series_of(aggregates: &[Aggregate], metric: fn(&RunCurves) -> &Vec<f64>) -> Vec<Series> {
    aggregates
        .iter()
        .map(|a| Series {
            label: a.setting.label(),
            color: color_of(a.setting).to_string(),
            points: (0..=crate::curves::MAX_X)
                .filter_map(|x| {
                    a.stat(x, metric)
                        .map(|s| (x as f64, s.median, s.p25, s.p75))
                })
                .collect(),
        })
        .collect()
}

/// Unallocated GPU % vs arrived workload % (the paper's Fig. 9a), x from 75 to 130.
pub fn unallocated_svg(trace: &str, aggregates: &[Aggregate]) -> String {
    line_chart(
        &Chart {
            title: &format!("Unallocated GPU vs arrived workload — trace {trace}"),
            x_label: "Arrived workload (% of cluster GPU capacity)",
            y_label: "Unallocated GPU (%)",
            x_range: (75.0, 130.0),
            ideal: Some(100.0),
            seeds: seeds_of(aggregates),
        },
        &series_of(aggregates, |r| &r.unallocated_pct),
    )
}

/// Fragmentation amount (% of capacity) vs arrived workload % (the paper's Fig. 7).
pub fn fragmentation_svg(trace: &str, aggregates: &[Aggregate]) -> String {
    line_chart(
        &Chart {
            title: &format!("GPU fragmentation vs arrived workload — trace {trace}"),
            x_label: "Arrived workload (% of cluster GPU capacity)",
            y_label: "Fragmentation (% of GPU capacity)",
            x_range: (0.0, 120.0),
            ideal: None,
            seeds: seeds_of(aggregates),
        },
        &series_of(aggregates, |r| &r.frag_amount_pct),
    )
}

fn seeds_of(aggregates: &[Aggregate]) -> usize {
    aggregates.iter().map(|a| a.seeds.len()).max().unwrap_or(0)
}
