//! The comparison as a Markdown table: one row per figure, both servers and
//! the ratio Strata / VictoriaMetrics (below 1 is better for Strata on every
//! row but the rates).

use std::fmt::Write;

use super::{Comparison, SideResult};

const MIB: f64 = 1024.0 * 1024.0;

/// A row: label, then a function of a side giving the figure.
struct Row {
    label: &'static str,
    value: fn(&SideResult, &Comparison) -> Option<f64>,
    format: Format,
}

#[derive(Clone, Copy)]
enum Format {
    /// Whole number with thousands separators.
    Count,
    /// Three significant digits.
    Real,
    Mib,
}

fn per_million(cpu: f64, samples: u64) -> Option<f64> {
    (samples > 0).then(|| cpu / (samples as f64 / 1e6))
}

fn per_sample(bytes: u64, samples: u64) -> Option<f64> {
    (samples > 0).then(|| bytes as f64 / samples as f64)
}

/// Resident memory grown since the idle start, per series.
fn per_series(rss: u64, idle: u64, series: u64) -> Option<f64> {
    (series > 0).then(|| (rss as f64 - idle as f64) / series as f64)
}

const ROWS: &[Row] = &[
    Row {
        label: "ingest: samples/s",
        value: |s, _| Some(s.ingest.samples as f64 / s.ingest.seconds),
        format: Format::Count,
    },
    Row {
        label: "ingest: wall seconds",
        value: |s, _| Some(s.ingest.seconds),
        format: Format::Real,
    },
    Row {
        label: "ingest: server CPU s per 1M samples, during the import",
        value: |s, _| per_million(s.ingest.cpu_seconds, s.ingest.samples),
        format: Format::Real,
    },
    Row {
        label: "ingest: server CPU s per 1M samples, import + 6 s after",
        value: |s, _| per_million(s.ingest_settled_cpu_seconds, s.ingest.samples),
        format: Format::Real,
    },
    Row {
        label: "ingest: load generator CPU (cores)",
        value: |s, _| Some(s.ingest.busy.client_cores),
        format: Format::Real,
    },
    Row {
        label: "ingest: other processes' CPU (cores)",
        value: |s, _| Some(s.ingest.busy.other_cores),
        format: Format::Real,
    },
    Row {
        label: "ingest: peak RSS (MiB)",
        value: |s, _| Some(s.ingest.peak_rss as f64),
        format: Format::Mib,
    },
    Row {
        label: "force merge: wall seconds",
        value: |s, _| Some(s.merge_seconds),
        format: Format::Real,
    },
    Row {
        label: "force merge: server CPU seconds",
        value: |s, _| Some(s.merge_cpu_seconds),
        format: Format::Real,
    },
    Row {
        label: "disk: data bytes",
        value: |s, _| Some(s.disk.data as f64),
        format: Format::Count,
    },
    Row {
        label: "disk: index bytes",
        value: |s, _| Some(s.disk.index as f64),
        format: Format::Count,
    },
    Row {
        label: "disk: log bytes",
        value: |s, _| Some(s.disk.log as f64),
        format: Format::Count,
    },
    Row {
        label: "disk: whole directory bytes",
        value: |s, _| Some(s.disk.total as f64),
        format: Format::Count,
    },
    Row {
        label: "disk: whole directory, allocated bytes",
        value: |s, _| Some(s.disk.allocated as f64),
        format: Format::Count,
    },
    Row {
        label: "bytes/sample: data",
        value: |s, c| per_sample(s.disk.data, c.samples),
        format: Format::Real,
    },
    Row {
        label: "bytes/sample: index",
        value: |s, c| per_sample(s.disk.index, c.samples),
        format: Format::Real,
    },
    Row {
        label: "bytes/sample: data + index",
        value: |s, c| per_sample(s.disk.data + s.disk.index, c.samples),
        format: Format::Real,
    },
    Row {
        label: "bytes/sample: whole directory",
        value: |s, c| per_sample(s.disk.total, c.samples),
        format: Format::Real,
    },
    Row {
        label: "RSS idle after start (MiB)",
        value: |s, _| Some(s.idle.rss_bytes as f64),
        format: Format::Mib,
    },
    Row {
        label: "RSS 6 s after ingest (MiB)",
        value: |s, _| Some(s.after_ingest.rss_bytes as f64),
        format: Format::Mib,
    },
    Row {
        label: "RSS after merge (MiB)",
        value: |s, _| Some(s.after_merge.rss_bytes as f64),
        format: Format::Mib,
    },
    Row {
        label: "RSS after scan (MiB)",
        value: |s, _| Some(s.after_scan.rss_bytes as f64),
        format: Format::Mib,
    },
    Row {
        label: "memory per active series 6 s after ingest (bytes)",
        value: |s, c| per_series(s.after_ingest.rss_bytes, s.idle.rss_bytes, c.series),
        format: Format::Real,
    },
    Row {
        label: "memory per active series after scan (bytes)",
        value: |s, c| per_series(s.after_scan.rss_bytes, s.idle.rss_bytes, c.series),
        format: Format::Real,
    },
    Row {
        label: "scan (export): samples/s",
        value: |s, _| Some(s.scan.samples as f64 / s.scan.seconds),
        format: Format::Count,
    },
    Row {
        label: "scan (export): server CPU s per 1M samples",
        value: |s, _| per_million(s.scan.cpu_seconds, s.scan.samples),
        format: Format::Real,
    },
    Row {
        label: "scan (export): reader CPU (cores)",
        value: |s, _| Some(s.scan.busy.client_cores),
        format: Format::Real,
    },
    Row {
        label: "scan (export): other processes' CPU (cores)",
        value: |s, _| Some(s.scan.busy.other_cores),
        format: Format::Real,
    },
    Row {
        label: "scan (export): lines",
        value: |s, _| Some(s.scan.lines as f64),
        format: Format::Count,
    },
    Row {
        label: "scan (export): bytes",
        value: |s, _| Some(s.scan.bytes as f64),
        format: Format::Count,
    },
    Row {
        label: "check: series exported",
        value: |s, _| s.check.as_ref().map(|c| c.series as f64),
        format: Format::Count,
    },
    Row {
        label: "check: samples exported",
        value: |s, _| s.check.as_ref().map(|c| c.samples as f64),
        format: Format::Count,
    },
    Row {
        label: "check: values not bit-exact",
        value: |s, _| s.check.as_ref().map(|c| c.changed_values as f64),
        format: Format::Count,
    },
    Row {
        label: "check: largest relative value error",
        value: |s, _| s.check.as_ref().map(|c| c.max_relative_error),
        format: Format::Real,
    },
    Row {
        label: "server's own count of stored samples",
        value: |s, _| Some(s.rows_stored),
        format: Format::Count,
    },
];

/// The dataset line and the table, in Markdown.
pub fn markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Dataset: {}; {} series, {} samples, {} bytes of JSON in {} requests, {} senders per server.\n",
        c.dataset_name,
        count(c.series as f64),
        count(c.samples as f64),
        count(c.json_bytes as f64),
        c.bodies,
        c.senders
    );
    let _ = writeln!(
        out,
        "Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        c.load_average.0, c.load_average.1
    );
    let _ = writeln!(
        out,
        "| Figure | Strata | VictoriaMetrics | Strata / VM |\n| --- | ---: | ---: | ---: |"
    );
    for row in ROWS {
        let s = (row.value)(&c.strata, c);
        let v = (row.value)(&c.victoria, c);
        let ratio = match (s, v) {
            (Some(s), Some(v)) if v != 0.0 && s.is_finite() && v.is_finite() => real(s / v),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.label,
            show(s, row.format),
            show(v, row.format),
            ratio
        );
    }
    for side in [&c.strata, &c.victoria] {
        if let Some((sent, got)) = side.check.as_ref().and_then(|c| c.worst_value) {
            let _ = writeln!(
                out,
                "\n{}: largest value change: sent {sent:?}, exported {got:?}.",
                side.kind.name()
            );
        }
    }
    out
}

fn show(v: Option<f64>, format: Format) -> String {
    match (v, format) {
        (None, _) => "-".to_string(),
        (Some(v), Format::Count) => count(v),
        (Some(v), Format::Real) => real(v),
        (Some(v), Format::Mib) => format!("{:.1}", v / MIB),
    }
}

/// 1234567.8 -> "1,234,568".
fn count(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// Three significant digits, plain notation between 0.001 and 10^6.
fn real(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-3..6).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - magnitude).max(0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1_234_567.8), "1,234,568");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(-1000.0), "-1,000");
        assert_eq!(count(0.0), "0");
        assert_eq!(real(1.23456), "1.23");
        assert_eq!(real(0.0123456), "0.0123");
        assert_eq!(real(123.456), "123");
        assert_eq!(real(12345.6), "12346");
        assert_eq!(real(1.5e-9), "1.50e-9");
        assert_eq!(real(0.0), "0");
    }
}
