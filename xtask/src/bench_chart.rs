//! The macro benchmark's chart, `target/bench/macro.svg`: one small bar chart per scenario
//! (columns) and metric (rows: messages per second, server CPU per message, p99 latency, and
//! CPU per message over tokio's in the same round), a bar per server, each chart on its own
//! scale (the scenarios differ by orders of magnitude). Each bar is the median over rounds
//! (the paired median for the ratio row) and carries a whisker from the lowest to the
//! highest round. Servers are told apart by colour, named once in a legend under the title
//! (the names are too long for the x axis of a small chart). Drawn with plotters' SVG
//! backend only: no font or image library comes in.

use plotters::prelude::*;

use super::paired::{series, Figure, Spread};
use super::plan::Plan;
use super::report::Median;
use super::run::RunResult;
use super::verdicts::BASELINE;
use crate::project_root;

/// A row of the chart: its title (and its title under churn), the figure it shows, and
/// whether it shows the figure paired with tokio's.
struct Row {
    title: &'static str,
    churn_title: &'static str,
    figure: Figure,
    paired: bool,
}

const ROWS: [Row; 4] = [
    Row {
        title: "msgs/s (higher is better)",
        churn_title: "connections/s (higher is better)",
        figure: Figure::Rate,
        paired: false,
    },
    Row {
        title: "server CPU µs/msg (lower is better)",
        churn_title: "server CPU µs/connection (lower is better)",
        figure: Figure::Cpu,
        paired: false,
    },
    Row {
        title: "p99 latency µs (lower is better)",
        churn_title: "p99 latency µs (lower is better)",
        figure: Figure::P99,
        paired: false,
    },
    Row {
        title: "CPU ÷ tokio, paired (lower is better)",
        churn_title: "CPU ÷ tokio, paired (lower is better)",
        figure: Figure::Cpu,
        paired: true,
    },
];

/// The whiskers' colour: one no other element of the chart uses, so a test can find them.
const WHISKER: RGBColor = RGBColor(0x40, 0x40, 0x40);
/// A failed (scenario, server): a red cross where its bar would be.
const FAILED: RGBColor = RGBColor(0xd0, 0x00, 0x00);
/// The legend's font size, and the chart's sizes in pixels.
const LEGEND_FONT: f64 = 13.0;
const CELL_WIDTH: u32 = 320;
const CELL_HEIGHT: u32 = 250;
const TITLE_HEIGHT: u32 = 40;
const LEGEND_ROW: u32 = 20;

/// One bar: a server's median and its range over rounds; none for a failed server.
#[derive(Debug, Clone, Copy)]
struct Bar {
    /// The server's index in the plan: its colour.
    server_idx: usize,
    /// (median, min, max), or none where a round failed or nothing was measured.
    values: Option<(f64, f64, f64)>,
}

/// Draws the chart; says where it is.
pub fn draw(plan: &Plan, runs: &[RunResult], medians: &[Median]) -> Result<(), String> {
    let path = project_root().join("target/bench/macro.svg");
    let svg = render(plan, runs, medians)?;
    std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// The rows drawn: the paired one only where tokio ran.
fn rows(medians: &[Median]) -> Vec<&'static Row> {
    let tokio = medians.iter().any(|m| m.server == BASELINE);
    ROWS.iter().filter(|row| tokio || !row.paired).collect()
}

/// The chart as SVG text.
fn render(plan: &Plan, runs: &[RunResult], medians: &[Median]) -> Result<String, String> {
    let columns = plan.scenarios.len().max(1);
    let rows = rows(medians);
    let width = CELL_WIDTH * columns.max(2) as u32;
    let names: Vec<&str> = plan.servers.iter().map(|s| s.name).collect();
    let legend = legend_layout(&names, width);
    let legend_height = LEGEND_ROW * (legend.iter().map(|e| e.1).max().unwrap_or(0) + 1);
    let size = (
        width,
        TITLE_HEIGHT + legend_height + CELL_HEIGHT * rows.len() as u32,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let title = if plan.quick {
            "echo servers (--quick: a smoke test, not a measurement)".to_owned()
        } else {
            format!(
                "echo servers: medians of {} rounds, whiskers min–max",
                plan.rounds
            )
        };
        let root = root
            .titled(&title, ("sans-serif", 20))
            .map_err(|e| e.to_string())?;
        let (legend_area, grid) = root.split_vertically(legend_height);
        draw_legend(&legend_area, &names, &legend)?;
        let cells = grid.split_evenly((rows.len(), columns));
        for (row_idx, row) in rows.iter().enumerate() {
            for (column, scenario) in plan.scenarios.iter().enumerate() {
                let bars = bars(plan, runs, medians, scenario.name, row);
                let title = if scenario.churn {
                    row.churn_title
                } else {
                    row.title
                };
                let caption = format!("{}: {title}", scenario.name);
                cell(&cells[row_idx * columns + column], &caption, &bars)?;
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The bars of one cell, a server each, in the plan's order.
fn bars(
    plan: &Plan,
    runs: &[RunResult],
    medians: &[Median],
    scenario: &str,
    row: &Row,
) -> Vec<Bar> {
    let mut out = Vec::new();
    for (server_idx, server) in plan.servers.iter().enumerate() {
        let Some(median) = medians
            .iter()
            .find(|m| m.scenario == scenario && m.server == server.name && m.absent.is_none())
        else {
            continue;
        };
        let baseline = if row.paired { Some(BASELINE) } else { None };
        let failed = median.failure.is_some()
            || (row.paired
                && medians.iter().any(|m| {
                    m.scenario == scenario && m.server == BASELINE && m.failure.is_some()
                }));
        let spread = Spread::of(&series(runs, scenario, server.name, baseline, row.figure));
        let values = match spread {
            Some(s) if !failed => Some((s.median, s.min, s.max)),
            _ => None,
        };
        out.push(Bar { server_idx, values });
    }
    out
}

/// The text width a label of `text` takes at font `size` (px), generously: 0.6 em a
/// character, as wide as sans-serif's widest common letters.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// Where each legend entry goes: (x in px, row), flowing left to right, wrapping at `width`.
fn legend_layout(names: &[&str], width: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let (mut x, mut row) = (12, 0);
    for name in names {
        // A swatch, a gap, the name, a wider gap before the next entry.
        let entry = 14 + 4 + text_width(name, LEGEND_FONT / 1.24).ceil() as u32 + 20;
        if x + entry > width && x > 12 {
            x = 12;
            row += 1;
        }
        out.push((x, row));
        x += entry;
    }
    out
}

/// The legend: a colour swatch and a name for each server.
fn draw_legend(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    names: &[&str],
    layout: &[(u32, u32)],
) -> Result<(), String> {
    for (idx, (name, (x, row))) in names.iter().zip(layout).enumerate() {
        let (x, y) = (*x as i32, (row * LEGEND_ROW) as i32 + 3);
        let swatch = Rectangle::new([(x, y), (x + 14, y + 14)], colour(idx).filled());
        area.draw(&swatch).map_err(|e| e.to_string())?;
        let text = Text::new(*name, (x + 18, y), ("sans-serif", LEGEND_FONT));
        area.draw(&text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The colour of the server at `idx` in the plan, the same in every cell.
fn colour(idx: usize) -> PaletteColor<Palette99> {
    Palette99::pick(idx)
}

/// One bar chart: a bar per server, with its whisker.
fn cell(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    bars: &[Bar],
) -> Result<(), String> {
    let n = bars.len().max(1) as f64;
    let top = bars
        .iter()
        .filter_map(|b| b.values.map(|v| v.2))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.12;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 12))
        .margin(6)
        .x_label_area_size(6)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_style(("sans-serif", 10))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    for (slot, bar) in bars.iter().enumerate() {
        let x = slot as f64;
        let Some((median, min, max)) = bar.values else {
            // A red cross on the baseline: no number for a failed server.
            let h = top * 0.08;
            for (a, b) in [((0.3, 0.0), (0.7, h)), ((0.3, h), (0.7, 0.0))] {
                let line = [(x + a.0, a.1), (x + b.0, b.1)];
                let cross = PathElement::new(line, FAILED.stroke_width(2));
                chart
                    .plotting_area()
                    .draw(&cross)
                    .map_err(|e| e.to_string())?;
            }
            continue;
        };
        let rect = Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, median)],
            colour(bar.server_idx).filled(),
        );
        chart
            .plotting_area()
            .draw(&rect)
            .map_err(|e| e.to_string())?;
        // One polyline a whisker: the top cap, the stem, the bottom cap.
        let (c, l, r) = (x + 0.5, x + 0.38, x + 0.62);
        let points = [(l, max), (r, max), (c, max), (c, min), (l, min), (r, min)];
        let whisker = PathElement::new(points, WHISKER.stroke_width(1));
        chart
            .plotting_area()
            .draw(&whisker)
            .map_err(|e| e.to_string())?;
    }
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

#[cfg(test)]
#[path = "bench_chart_tests.rs"]
mod tests;
