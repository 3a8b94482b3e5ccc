//! The macro benchmark's chart, `target/bench/macro.svg`: one small bar chart per scenario
//! (columns) and metric (rows: messages per second, server CPU per message, p99 latency),
//! a bar per server, each chart on its own scale (the scenarios differ by orders of
//! magnitude). Drawn with plotters' SVG backend only: no font or image library comes in.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::plan::Plan;
use super::report::Median;
use crate::project_root;

/// A row of the chart: its title and the value it shows.
type Metric = (&'static str, fn(&Median) -> f64);

const METRICS: [Metric; 3] = [
    ("msgs/s (higher is better)", |m| m.msgs_per_s),
    ("server CPU µs/msg (lower is better)", |m| m.cpu_us),
    ("p99 latency µs (lower is better)", |m| m.p99_us),
];

/// Draws the chart; says where it is.
pub fn draw(plan: &Plan, medians: &[Median]) -> Result<(), String> {
    let path = project_root().join("target/bench/macro.svg");
    let columns = plan.scenarios.len();
    let size = (320 * columns.max(2) as u32, 3 * 260 + 40);
    let root = SVGBackend::new(&path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = if plan.quick {
        "echo servers (--quick: a smoke test, not a measurement)".to_owned()
    } else {
        format!("echo servers, medians of {} rounds", plan.rounds)
    };
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let cells = root.split_evenly((METRICS.len(), columns));
    for (row, metric) in METRICS.iter().enumerate() {
        for (column, scenario) in plan.scenarios.iter().enumerate() {
            let bars: Vec<(String, f64)> = medians
                .iter()
                .filter(|m| m.scenario == scenario.name)
                .map(|m| match m.failure {
                    Some(_) => (format!("{} FAILED", m.server), 0.0),
                    None => (m.server.to_owned(), (metric.1)(m)),
                })
                .collect();
            let title = match (row, scenario.churn) {
                (0, true) => "connections/s (higher is better)",
                (1, true) => "server CPU µs/connection (lower is better)",
                _ => metric.0,
            };
            let caption = format!("{}: {title}", scenario.name);
            cell(&cells[row * columns + column], &caption, &bars)?;
        }
    }
    root.present().map_err(|e| e.to_string())?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// One bar chart: a bar per server.
fn cell(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    bars: &[(String, f64)],
) -> Result<(), String> {
    // `a..b` segments into one slot per value from a to b, both included.
    let n = bars.len().max(1) as i32;
    let top = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 12))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(56)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(|e| e.to_string())?;
    let label = |value: &SegmentValue<i32>| match value {
        SegmentValue::CenterOf(i) => bars.get(*i as usize).map_or("", |b| &b.0).to_owned(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&label)
        .x_label_style(("sans-serif", 10))
        .y_label_style(("sans-serif", 10))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    let rects = bars.iter().enumerate().map(|(i, (_, value))| {
        let i = i as i32;
        let style = Palette99::pick(i as usize).filled();
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *value),
            ],
            style,
        );
        // A gap between neighbours.
        bar.set_margin(0, 0, 4, 4);
        bar
    });
    chart.draw_series(rects).map_err(|e| e.to_string())?;
    Ok(())
}

/// `1.2M`, `35k`, `6.1`: an axis label that fits.
fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value == 0.0 {
        "0".into()
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}
