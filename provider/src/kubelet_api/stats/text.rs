//! The kubelet's `/metrics/resource` in Prometheus text format (0.0.4), from
//! a Summary: the same metric names, help texts, label names, ordering and
//! value syntax as the kubelet's Go client, each sample with the
//! millisecond timestamp of its measurement, so a scraper (metrics-server,
//! Prometheus) cannot tell the virtual node from a kubelet.
//!
//! Hand-written rather than through `prometheus-client`: that crate writes
//! OpenMetrics, has no per-sample timestamps and formats floats its own way,
//! while the kubelet's text is Go's `expfmt` output, reproduced here.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use offload_wire::stats::{CpuStats, MemoryStats, NodeStats, Summary};

/// The kubelet's content type for this endpoint.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A virtual node without figures (no pods, or a plugin without stats)
/// uses nothing: zeros at `now`, so a scraper sees a node and not a gap.
pub fn zero_node_figures(node: &mut NodeStats, now: Time) {
    if node.cpu.is_none() {
        node.cpu = Some(CpuStats {
            time: Some(now.clone()),
            usage_nano_cores: Some(0),
            usage_core_nano_seconds: Some(0),
        });
    }
    if node.memory.is_none() {
        node.memory = Some(MemoryStats {
            time: Some(now),
            usage_bytes: Some(0),
            working_set_bytes: Some(0),
            rss_bytes: Some(0),
            ..Default::default()
        });
    }
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it (what
/// `expfmt` uses): the shortest digits that read back exactly, in exponent
/// form (`4.656779264e+09`, two exponent digits at least) when the decimal
/// exponent is below -4 or at least 6, else plain (`25130.480457465`).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the same shortest digits: "d.ddde[-]x".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

fn millis(t: Option<&Time>) -> Option<i64> {
    t.map(|t| t.0.as_millisecond())
}

/// Escapes a label value as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample: labels, value, timestamp (ms).
type Sample = (Vec<(&'static str, String)>, f64, Option<i64>);

/// One metric family: help, type and samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Go's registry drops families without samples and sorts samples by
    /// their label values (labels in name order).
    fn write(mut self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        for s in &mut self.samples {
            s.0.sort_by_key(|(k, _)| *k);
        }
        self.samples.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(out, "# HELP {} [ALPHA] {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value, ts) in self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = write!(out, " {}", go_float(value));
            if let Some(ts) = ts {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        }
    }
}

fn cpu_seconds(c: Option<&CpuStats>) -> Option<(f64, Option<i64>)> {
    let c = c?;
    Some((
        c.usage_core_nano_seconds? as f64 / 1e9,
        millis(c.time.as_ref()),
    ))
}

fn working_set(m: Option<&MemoryStats>) -> Option<(f64, Option<i64>)> {
    let m = m?;
    Some((m.working_set_bytes? as f64, millis(m.time.as_ref())))
}

/// The kubelet's families, in its output order (Go sorts them by name),
/// without samples: name, help (after `[ALPHA] `), type.
const FAMILIES: [(&str, &str, &str); 8] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    ),
    (
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    ),
    (
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    ),
    (
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    ),
    (
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    ),
    (
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    ),
];

/// The kubelet's `/metrics/resource` text for `s`; `scrape_error` 1 when
/// some figures could not be read.
pub fn resource_metrics(s: &Summary, scrape_error: bool) -> String {
    let [
        mut c_cpu,
        mut c_mem,
        mut c_start,
        mut n_cpu,
        mut n_mem,
        mut p_cpu,
        mut p_mem,
        mut err,
    ] = FAMILIES.map(|(name, help, kind)| Family::new(name, help, kind));
    if let Some((v, ts)) = cpu_seconds(s.node.cpu.as_ref()) {
        n_cpu.samples.push((vec![], v, ts));
    }
    if let Some((v, ts)) = working_set(s.node.memory.as_ref()) {
        n_mem.samples.push((vec![], v, ts));
    }
    for p in &s.pods {
        let pod = vec![
            ("namespace", p.pod_ref.namespace.clone()),
            ("pod", p.pod_ref.name.clone()),
        ];
        if let Some((v, ts)) = cpu_seconds(p.cpu.as_ref()) {
            p_cpu.samples.push((pod.clone(), v, ts));
        }
        if let Some((v, ts)) = working_set(p.memory.as_ref()) {
            p_mem.samples.push((pod.clone(), v, ts));
        }
        for c in &p.containers {
            let mut labels = pod.clone();
            labels.push(("container", c.name.clone()));
            if let Some((v, ts)) = cpu_seconds(c.cpu.as_ref()) {
                c_cpu.samples.push((labels.clone(), v, ts));
            }
            if let Some((v, ts)) = working_set(c.memory.as_ref()) {
                c_mem.samples.push((labels.clone(), v, ts));
            }
            if let Some(t) = &c.start_time {
                let secs = t.0.as_nanosecond() as f64 / 1e9;
                c_start
                    .samples
                    .push((labels, secs, Some(t.0.as_millisecond())));
            }
        }
    }
    err.samples
        .push((vec![], if scrape_error { 1.0 } else { 0.0 }, None));
    let mut out = String::new();
    for f in [c_cpu, c_mem, c_start, n_cpu, n_mem, p_cpu, p_mem, err] {
        f.write(&mut out);
    }
    out
}

/// The text of a collection that failed altogether.
pub fn scrape_failed() -> String {
    resource_metrics(&Summary::default(), true)
        .lines()
        .filter(|l| l.contains("scrape_error"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests;
