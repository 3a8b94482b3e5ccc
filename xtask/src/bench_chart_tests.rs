//! Tests of the chart, on the SVG text it renders from made-up rounds: the tags balance, a
//! whisker is drawn for every bar (and a cross for every failed one), every server is named
//! once in the legend, and no two text labels overlap.

use super::super::plan::{Plan, SCENARIOS, SERVERS};
use super::super::report::medians;
use super::*;

fn plan(rounds: u32) -> Plan {
    Plan {
        scenarios: SCENARIOS.to_vec(),
        servers: SERVERS.to_vec(),
        rounds,
        warmup_s: 1.0,
        duration_s: 3.0,
        syscall_window_s: 1.0,
        server_cpus: None,
        client_cpus: None,
        client_threads: 1,
        server_threads: 1,
        quick: false,
        absent: Vec::new(),
    }
}

/// Every scenario and server of `plan` over its rounds, each round a little different.
fn runs(plan: &Plan) -> Vec<RunResult> {
    let mut out = Vec::new();
    for (s, scenario) in plan.scenarios.iter().enumerate() {
        for round in 1..=plan.rounds {
            for (i, server) in plan.servers.iter().enumerate() {
                let wobble = 1.0 + 0.05 * f64::from((round + i as u32) % 4);
                out.push(RunResult {
                    scenario: scenario.name,
                    server: server.name,
                    round,
                    msgs_per_s: 200_000.0 / (s + 1) as f64 * wobble,
                    p99_us: 700.0 * wobble,
                    user_us: (4.0 + i as f64 * 0.2) * wobble,
                    ..RunResult::default()
                });
            }
        }
    }
    out
}

fn svg(plan: &Plan, runs: &[RunResult]) -> String {
    render(plan, runs, &medians(plan, runs)).expect("the chart renders")
}

/// Checks that every opened tag is closed by its own name; returns how many there were.
fn balanced(svg: &str) -> usize {
    let mut stack: Vec<&str> = Vec::new();
    let mut tags = 0;
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>').expect("an unclosed '<'");
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        tags += 1;
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop(),
                Some(closing.trim()),
                "</{closing}> closes the wrong tag"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().expect("a tag name"));
        }
    }
    assert!(stack.is_empty(), "never closed: {stack:?}");
    tags
}

/// The value of attribute `name` in a tag's text.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// Every `<text>`: its box (x0, y0, x1, y1) as a browser would lay it out, at 0.6 em a
/// character, and its text.
fn text_boxes(svg: &str) -> Vec<([f64; 4], String)> {
    let mut out = Vec::new();
    for piece in svg.split("<text").skip(1) {
        let (tag, rest) = piece.split_once('>').unwrap();
        let text = rest.split("</text>").next().unwrap().trim();
        let text = [
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&quot;", "\""),
            ("&apos;", "'"),
        ]
        .iter()
        .fold(text.to_owned(), |t, (entity, c)| t.replace(entity, c))
        .replace("&amp;", "&");
        let number = |name| attribute(tag, name).unwrap().parse::<f64>().unwrap();
        let (x, y, size) = (number("x"), number("y"), number("font-size"));
        assert!(
            attribute(tag, "transform").is_none(),
            "a rotated label: {text}"
        );
        let width = text_width(&text, size);
        let x0 = match attribute(tag, "text-anchor") {
            Some("middle") => x - width / 2.0,
            Some("end") => x - width,
            _ => x,
        };
        let y0 = match attribute(tag, "dy") {
            Some("0.76em") => y,
            Some("0.5ex") => y - size / 2.0,
            _ => y - size,
        };
        out.push(([x0, y0, x0 + width, y0 + size], text));
    }
    out
}

fn overlaps(a: [f64; 4], b: [f64; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

/// The pairs of labels whose boxes overlap.
fn overlapping(svg: &str) -> Vec<(String, String)> {
    let boxes = text_boxes(svg);
    let mut out = Vec::new();
    for (i, (a, a_text)) in boxes.iter().enumerate() {
        for (b, b_text) in &boxes[i + 1..] {
            if overlaps(*a, *b) {
                out.push((a_text.clone(), b_text.clone()));
            }
        }
    }
    out
}

fn count(svg: &str, needle: &str) -> usize {
    svg.matches(needle).count()
}

#[test]
fn the_svg_is_balanced() {
    let plan = plan(8);
    let svg = svg(&plan, &runs(&plan));
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    assert!(balanced(&svg) > 100);
}

#[test]
fn every_bar_has_a_whisker() {
    let plan = plan(8);
    let svg = svg(&plan, &runs(&plan));
    let bars = plan.scenarios.len() * plan.servers.len() * ROWS.len();
    assert_eq!(count(&svg, "stroke=\"#404040\""), bars);
    // Each spans its server's rounds: some whisker has two distinct heights.
    let spans = svg
        .split("<polyline")
        .filter(|p| p.contains("stroke=\"#404040\""))
        .filter(|p| {
            let points = attribute(p, "points").unwrap();
            let ys: Vec<&str> = points
                .split_whitespace()
                .map(|p| &p[p.find(',').unwrap()..])
                .collect();
            ys.first() != ys.last()
        })
        .count();
    assert!(0 < spans, "no whisker spans anything");
}

#[test]
fn a_failed_server_gets_a_cross_and_no_whisker() {
    let plan = plan(8);
    let mut runs = runs(&plan);
    let failed = runs
        .iter_mut()
        .find(|r| r.scenario == "c100-64B-d1" && r.server == "monoio")
        .unwrap();
    failed.failure = Some("wrong byte".into());
    let svg = svg(&plan, &runs);
    // monoio's bars in c100-64B-d1: 4 rows; a cross is two strokes.
    let bars = plan.scenarios.len() * plan.servers.len() * ROWS.len();
    assert_eq!(count(&svg, "stroke=\"#404040\""), bars - 4);
    assert_eq!(count(&svg, "stroke=\"#D00000\""), 2 * 4);
    // tokio failed: every paired bar of that scenario is a cross.
    let tokio = runs
        .iter_mut()
        .find(|r| r.scenario == "c1000-64B-d1" && r.server == "tokio")
        .unwrap();
    tokio.failure = Some("did not start".into());
    let svg = super::render(&plan, &runs, &medians(&plan, &runs)).unwrap();
    assert_eq!(count(&svg, "stroke=\"#D00000\""), 2 * 4 + 2 * (3 + 6));
}

#[test]
fn servers_are_named_once_in_a_legend_and_no_labels_overlap() {
    for n_scenarios in [1, 2, SCENARIOS.len()] {
        let mut plan = plan(8);
        plan.scenarios.truncate(n_scenarios);
        let svg = svg(&plan, &runs(&plan));
        for server in &plan.servers {
            let label = format!(">\n{}\n</text>", server.name);
            assert_eq!(count(&svg, &label), 1, "{} in the legend", server.name);
        }
        let clashes = overlapping(&svg);
        assert!(clashes.is_empty(), "{n_scenarios} scenarios: {clashes:?}");
    }
}

#[test]
fn the_overlap_check_sees_an_overlap() {
    let svg = "<svg>\
        <text x=\"10\" y=\"10\" dy=\"0.76em\" text-anchor=\"middle\" font-size=\"8\">\n\
        echo-uring-nobatch\n</text>\
        <text x=\"40\" y=\"10\" dy=\"0.76em\" text-anchor=\"middle\" font-size=\"8\">\n\
        echo-epoll\n</text></svg>";
    assert_eq!(overlapping(svg).len(), 1);
    assert_eq!(balanced(svg), 6);
}

#[test]
fn the_legend_wraps_inside_the_width() {
    let names: Vec<&str> = SERVERS.iter().map(|s| s.name).collect();
    let narrow = legend_layout(&names, 320);
    assert!(
        narrow.iter().any(|e| 0 < e.1),
        "six names fit on one 320 px row?"
    );
    let wide = legend_layout(&names, 1600);
    assert!(wide.iter().all(|e| e.1 == 0));
}
