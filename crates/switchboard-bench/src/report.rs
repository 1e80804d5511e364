//! The result of a run, three ways: a table for people (stdout), one JSON object
//! for machines (`--json`, stdout; the table then goes to stderr), and an SVG chart
//! of throughput over time and latency percentiles (`--svg FILE`, via plotters).

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::Common;
use crate::scenarios::{Outcome, PacerReport};
use crate::stats::{CheckSummary, Percentiles, Sample};

/// Everything a run found out.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// `--target-name`.
    pub target: String,
    pub url: String,
    /// `--duration`, in seconds.
    pub duration_s: f64,
    pub params: Map<String, Value>,
    pub throughput: Throughput,
    /// The scenario's latency, in microseconds.
    pub latency_us: Option<Latency>,
    /// Open loop only: latency from the actual send rather than the timetable.
    pub service_latency_us: Option<Percentiles>,
    /// Open loop only: the pacer, and its lateness (actual send minus due).
    pub pacer: Option<PacerReport>,
    /// The CPUs each process may run on (`Cpus_allowed_list` in /proc, read as
    /// the run ends): how the run was pinned.
    pub cpus: Cpus,
    /// Server `error` messages plus failed connections.
    pub errors: u64,
    pub check: CheckSummary,
    /// Whether every check passed.
    pub ok: bool,
    /// Scenario-specific results (server memory, ...).
    pub results: Map<String, Value>,
    /// Throughput over time.
    pub series: Vec<Sample>,
    pub notes: Vec<String>,
}

/// Operations per second.
#[derive(Debug, Serialize)]
pub struct Throughput {
    pub value: f64,
    pub unit: &'static str,
    pub operations: u64,
    /// The span `value` is measured over, in seconds.
    pub measured_s: f64,
}

/// The CPU affinity of the load generator and the server.
#[derive(Debug, Serialize)]
pub struct Cpus {
    pub load_generator: Option<String>,
    /// With --server-pid.
    pub server: Option<String>,
    /// CPUs online on the machine.
    pub online: Option<String>,
}

impl Cpus {
    /// Reads the affinities from /proc.
    pub fn now(server_pid: Option<u32>) -> Cpus {
        let allowed = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|status| {
                status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned())
            })
        };
        Cpus {
            load_generator: allowed("self"),
            server: server_pid.and_then(|pid| allowed(&pid.to_string())),
            online: std::fs::read_to_string("/sys/devices/system/cpu/online").ok().map(|v| v.trim().to_owned()),
        }
    }
}

/// A latency distribution and what it measures.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub measures: &'static str,
    #[serde(flatten)]
    pub percentiles: Percentiles,
}

impl Report {
    pub fn new(outcome: Outcome, check: CheckSummary, common: &Common) -> Report {
        Report {
            scenario: outcome.scenario,
            target: common.target_name.clone(),
            url: common.url.clone(),
            duration_s: common.duration.as_secs_f64(),
            params: outcome.params,
            throughput: Throughput {
                value: (outcome.throughput * 10.0).round() / 10.0,
                unit: outcome.unit,
                operations: outcome.operations,
                measured_s: (outcome.measured.as_secs_f64() * 1000.0).round() / 1000.0,
            },
            latency_us: outcome.latency.map(|percentiles| Latency { measures: outcome.latency_label, percentiles }),
            service_latency_us: outcome.service_latency,
            pacer: outcome.pacer,
            cpus: Cpus::now(common.server_pid),
            errors: check.errors + check.connection_failures,
            ok: check.ok(),
            check,
            results: outcome.extra,
            series: outcome.series,
            notes: outcome.notes,
        }
    }

    /// Prints the report: the table on stdout (stderr with `--json`), the JSON on
    /// stdout with `--json`, notes and failures on stderr; writes the SVG if asked.
    pub fn emit(&self, common: &Common) -> Result<()> {
        let table = self.table();
        if common.json {
            eprint!("{table}");
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut stdout, self)?;
            writeln!(stdout)?;
        } else {
            print!("{table}");
        }
        for note in &self.notes {
            eprintln!("{note}");
        }
        if let Some(path) = &common.svg {
            self.write_svg(path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("chart written to {}", path.display());
        }
        if !self.ok {
            eprintln!("FAILED: {}; the first violations:", self.check.line());
            for violation in &self.check.violations {
                eprintln!("  {violation}");
            }
        }
        Ok(())
    }

    /// The human-readable table, the check line and scenario results.
    pub fn table(&self) -> String {
        let (label, p50, p99, p999) = match &self.latency_us {
            Some(l) => (l.measures, micros(l.percentiles.p50), micros(l.percentiles.p99), micros(l.percentiles.p999)),
            None => ("", "-".into(), "-".into(), "-".into()),
        };
        let throughput = format!("{} {}", thousands(self.throughput.value), self.throughput.unit);
        let rows = [
            ["scenario", "target", "throughput", "latency", "p50", "p99", "p99.9", "errors"].map(String::from),
            [
                self.scenario.into(),
                self.target.clone(),
                throughput,
                label.into(),
                p50,
                p99,
                p999,
                self.errors.to_string(),
            ],
        ];
        let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, width))| {
                    // Text columns left-aligned, numbers right-aligned.
                    if c < 2 || c == 3 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if let Some(service) = &self.service_latency_us {
            out.push_str(&format!(
                "from actual send (open loop): p50 {}, p99 {}, p99.9 {}\n",
                micros(service.p50),
                micros(service.p99),
                micros(service.p999)
            ));
        }
        if let Some(pacer) = &self.pacer {
            let how = match pacer.spin_us {
                Some(spin) => format!("{} pacer, spinning the last {spin} µs", pacer.kind),
                None => format!("{} pacer", pacer.kind),
            };
            match &pacer.lateness_us {
                Some(l) => out.push_str(&format!(
                    "{how}: lateness (actual send − due) p50 {}, p99 {}, max {}\n",
                    micros(l.p50),
                    micros(l.p99),
                    micros(l.max)
                )),
                None => out.push_str(&format!("{how}: nothing sent\n")),
            }
        }
        if let (Some(before), Some(after), Some(per)) = (
            self.results.get("server_rss_before_kib"),
            self.results.get("server_rss_after_kib"),
            self.results.get("server_rss_per_connection_kib"),
        ) {
            out.push_str(&format!("server RSS: {before} KiB before, {after} KiB after: {per} KiB per connection\n"));
        }
        out.push_str(&self.check.line());
        out.push('\n');
        out
    }

    /// Writes the chart: throughput over time above, latency percentiles below.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        let failed = |e: &dyn std::fmt::Display| anyhow!("drawing the chart: {e}");
        let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let title = format!(
            "{} on {}: {} {}",
            self.scenario,
            self.target,
            thousands(self.throughput.value),
            self.throughput.unit
        );
        let root = root.titled(&title, ("sans-serif", 22)).map_err(|e| failed(&e))?;
        let (top, bottom) = root.split_vertically(330);

        let max_t = self.series.last().map_or(1.0, |s| s.t_s).max(0.001);
        let max_rate = self.series.iter().map(|s| s.per_s).fold(0.0, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(&top)
            .margin(15)
            .caption(format!("throughput ({})", self.throughput.unit), ("sans-serif", 16))
            .x_label_area_size(35)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..max_t, 0.0..max_rate)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_label_formatter(&|v| thousands(*v))
            .draw()
            .map_err(|e| failed(&e))?;
        let points: Vec<(f64, f64)> = self.series.iter().map(|s| (s.t_s, s.per_s)).collect();
        chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2))).map_err(|e| failed(&e))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, BLUE.filled()))).map_err(|e| failed(&e))?;

        const LABELS: [&str; 6] = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
        let spectrum = |p: &Percentiles| [p.p50, p.p90, p.p99, p.p999, p.p9999, p.max];
        let mut lines: Vec<(String, [u64; 6], RGBColor)> = Vec::new();
        if let Some(latency) = &self.latency_us {
            lines.push((format!("{} latency", latency.measures), spectrum(&latency.percentiles), RED));
        }
        if let Some(service) = &self.service_latency_us {
            lines.push(("latency from actual send".into(), spectrum(service), RGBColor(0, 140, 0)));
        }
        let highest = lines.iter().flat_map(|(_, v, _)| v.iter().copied()).max().unwrap_or(1).max(1) as f64;
        let lowest = lines.iter().flat_map(|(_, v, _)| v.iter().copied()).min().unwrap_or(1).max(1) as f64;
        // Starting the axis at a power of ten gives it labels in between.
        let floor_decade = 10f64.powf(lowest.log10().floor());
        let mut chart = ChartBuilder::on(&bottom)
            .margin(15)
            .caption("latency percentiles (log scale)", ("sans-serif", 16))
            .x_label_area_size(35)
            .y_label_area_size(90)
            .build_cartesian_2d(-0.5f64..5.5f64, (floor_decade..highest * 1.5).log_scale())
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && (0.0..6.0).contains(&i) {
                    LABELS[i as usize].to_owned()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| micros(*v as u64))
            .y_desc("latency")
            .draw()
            .map_err(|e| failed(&e))?;
        for (line, (name, values, color)) in lines.iter().enumerate() {
            // The first line's values above its points, the second's below.
            let label_dy = if line == 0 { -16 } else { 4 };
            let points: Vec<(f64, f64)> =
                values.iter().enumerate().map(|(i, v)| (i as f64, (*v).max(1) as f64)).collect();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| failed(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&(x, y)| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 3, color.filled())
                        + Text::new(micros(y as u64), (6, label_dy), ("sans-serif", 12).into_font().color(color))
                }))
                .map_err(|e| failed(&e))?;
        }
        if !lines.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| failed(&e))?;
        }
        root.present().map_err(|e| failed(&e))?;
        Ok(())
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, in the unit that reads best.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..10_000 => format!("{:.2} ms", us as f64 / 1e3),
        10_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(micros(85), "85 µs");
        assert_eq!(micros(1234), "1.23 ms");
        assert_eq!(micros(45_600), "45.6 ms");
        assert_eq!(micros(2_500_000), "2.50 s");
    }
}
