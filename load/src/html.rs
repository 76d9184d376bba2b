//! The report people look at (`--report FILE`): one self-contained HTML file with the text
//! summary and, for each step, its rate and its latency percentiles second by second, drawn
//! as inline SVG charts with `plotters`: lines with a marker on every point.

use plotters::prelude::*;

use crate::report::{Report, render};
use crate::steps::Step;

/// One chart of the report, as a standalone SVG document.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `{step}-rate` or `{step}-latency`: the file name `--charts-dir` gives it.
    pub name: String,
    /// What it shows, for the page.
    pub title: String,
    pub svg: String,
}

/// One line of a chart: its legend, its colour and its points (seconds, value).
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

const WIDTH: u32 = 640;
const HEIGHT: u32 = 300;

/// Every step's two charts: requests per second, and p50/p90/p99/max latency, per second.
pub fn charts(report: &Report) -> Vec<Chart> {
    report
        .steps
        .iter()
        .flat_map(|step| step_charts(step, report.elapsed_seconds))
        .collect()
}

/// Where bucket `second` is drawn and how long it is: its middle, and a second, but the one
/// cut short by the end of a run of `elapsed` seconds only as long as it lasted (a tenth of a
/// second at least, so a few requests at the very end do not make a spike). A bucket after
/// the end (requests that ended after it) counts a whole second.
fn span(second: u64, elapsed: f64) -> (f64, f64) {
    let left = elapsed - second as f64;
    let length = if left > 0.0 {
        left.clamp(0.1, 1.0)
    } else {
        1.0
    };
    (second as f64 + length / 2.0, length)
}

/// The rate chart's points: each second's requests counted by `count` (all that ended, those
/// answered below 500, or those that failed) over its length ([`span`]).
fn rate_points(step: &Step, elapsed: f64, count: fn(&crate::Bucket) -> u64) -> Vec<(f64, f64)> {
    step.timeline
        .iter()
        .map(|b| {
            let (at, length) = span(b.second, elapsed);
            (at, count(b) as f64 / length)
        })
        .collect()
}

/// A latency chart's points: the percentile `pick` of each second with requests answered
/// below 500; a second whose requests all failed has no latency to draw, not one of 0 ms.
fn latency_points(step: &Step, elapsed: f64, pick: fn(&crate::Bucket) -> f64) -> Vec<(f64, f64)> {
    step.timeline
        .iter()
        .filter(|b| b.answered > 0)
        .map(|b| (span(b.second, elapsed).0, pick(b)))
        .collect()
}

/// Where both charts of a step end: the end of its timeline, the run's last second, so that
/// they line up (the latency chart's own points may end sooner).
fn x_max(step: &Step) -> f64 {
    (step.timeline.len() as f64).max(1.0)
}

fn step_charts(step: &Step, elapsed: f64) -> [Chart; 2] {
    let x_max = x_max(step);
    let rate = |count| rate_points(step, elapsed, count);
    let percentile = |pick| latency_points(step, elapsed, pick);
    let rate_title = format!("{}: requests per second", step.name);
    let latency_title = format!("{}: latency (ms) per second", step.name);
    [
        Chart {
            name: format!("{}-rate", step.name),
            // Answered and failed apart: requests refused at once by a server that is down
            // end by the thousand a second, and drawn alone they read as a peak of sales.
            svg: line_chart(
                &rate_title,
                "requests/s",
                x_max,
                &[
                    ("ended", BLUE, rate(|b| b.requests)),
                    ("answered below 500", GREEN, rate(|b| b.answered)),
                    ("5xx or no answer", RED, rate(|b| b.requests - b.answered)),
                ],
            ),
            title: rate_title,
        },
        Chart {
            name: format!("{}-latency", step.name),
            svg: line_chart(
                &latency_title,
                "ms",
                x_max,
                &[
                    ("p50", GREEN, percentile(|b| b.p50)),
                    ("p90", BLUE, percentile(|b| b.p90)),
                    ("p99", RED, percentile(|b| b.p99)),
                    ("max", BLACK, percentile(|b| b.max)),
                ],
            ),
            title: latency_title,
        },
    ]
}

/// A line chart of `series` over seconds since the run started, as an SVG document. A chart
/// that cannot be drawn says so in its place: the report is still written.
fn line_chart(title: &str, y_label: &str, x_max: f64, series: &[Series]) -> String {
    let mut svg = String::new();
    let drawn = draw(&mut svg, title, y_label, x_max, series);
    match drawn {
        Ok(()) => svg,
        Err(e) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"40\"><text x=\"4\" y=\"20\">{}: {}</text></svg>",
            escape(title),
            escape(&e)
        ),
    }
}

fn draw(
    svg: &mut String,
    title: &str,
    y_label: &str,
    x_max: f64,
    series: &[Series],
) -> Result<(), String> {
    let points = series.iter().flat_map(|(_, _, p)| p);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        // A line needs two points: a series of one (a step within one second), or a point
        // whose neighbours have no data, would show nothing without its marker.
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&point| Circle::new(point, 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Text made safe for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole report as one HTML page: no script, no stylesheet or image fetched from
/// anywhere; the charts are inline SVG.
pub fn html(report: &Report) -> String {
    let verdict = if report.sound {
        "sound"
    } else if report.incomplete_only() {
        "VERIFICATION INCOMPLETE"
    } else {
        "NOT SOUND"
    };
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>boxoffice-load: event {event}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}\n\
         pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}\n\
         table {{ border-collapse: collapse; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}\n\
         .charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}\n\
         figure {{ margin: 0; }}\n\
         .bad {{ color: #b00; }}\n</style>\n</head>\n<body>\n\
         <h1>boxoffice-load: {verdict}</h1>\n",
        event = escape(&report.event_id),
    );
    page.push_str("<h2>Steps</h2>\n<table>\n<tr><th>step</th><th>requests</th><th>per second</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>failed</th><th>answers</th></tr>\n");
    for step in &report.steps {
        let l = &step.latency_ms;
        let answers: Vec<String> = step
            .answers
            .iter()
            .map(|(answer, count)| format!("{} ×{count}", escape(answer)))
            .collect();
        page.push_str(&format!(
            "<tr><th>{}</th><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>\n",
            step.name,
            step.requests,
            step.per_second,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            step.failed,
            answers.join(", ")
        ));
    }
    page.push_str("</table>\n");
    for step in &report.steps {
        page.push_str(&format!(
            "<h2>{}</h2>\n<div class=\"charts\">\n",
            escape(step.name)
        ));
        for chart in step_charts(step, report.elapsed_seconds) {
            page.push_str(&format!(
                "<figure aria-label=\"{}\">\n{}\n</figure>\n",
                escape(&chart.title),
                chart.svg
            ));
        }
        page.push_str("</div>\n");
    }
    page.push_str(&format!(
        "<h2>Summary</h2>\n<pre{}>{}</pre>\n</body>\n</html>\n",
        if report.sound { "" } else { " class=\"bad\"" },
        escape(&render(report))
    ));
    page
}

#[cfg(test)]
mod tests;
