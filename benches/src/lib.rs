//! Shared helpers for the criterion benches: test-mode detection, fixed-count timing and
//! the ratio lines `scripts/bench` collects into `docs/benchmarks.md`.
//!
//! The line format (one per ratio, on stdout) is
//!
//! ```text
//! ratio <name> = <x> (target <op> <y>); figure: <text>; baseline: <text>
//! ```
//!
//! where `<op>` is `>=`, `<=`, `>` or `<` (`≥`/`≤` are accepted too), and
//! `(no target)` replaces `(target …)` for an informative ratio. The `figure`/`baseline`
//! parts are optional.

#![allow(clippy::disallowed_methods)] // benches measure real time

use std::hint::black_box;
use std::time::{Duration, Instant};

/// True when the bench binary runs as a benchmark (`cargo bench` passes `--bench`); false
/// under `cargo test --benches`, where criterion runs each body once and sizes shrink.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `big` when benchmarking, `small` under `cargo test --benches`.
pub fn size(big: usize, small: usize) -> usize {
    if bench_mode() { big } else { small }
}

/// Times one run of `f`.
pub fn time<T>(f: impl FnOnce() -> T) -> Duration {
    let t = Instant::now();
    black_box(f());
    t.elapsed()
}

/// The fastest of `runs` runs of `f` (the machine is shared: the minimum is the least noisy).
pub fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs.max(1))
        .map(|_| time(&mut f))
        .min()
        .unwrap_or_default()
}

/// Operations per second for `ops` operations in `d`.
pub fn rate(ops: usize, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64().max(1e-12)
}

/// A human figure for a rate: `12.3 M/s`, `45.6 k/s`, `789 /s`.
pub fn fmt_rate(r: f64, unit: &str) -> String {
    if r >= 1e6 {
        format!("{:.2} M {unit}/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k {unit}/s", r / 1e3)
    } else {
        format!("{r:.0} {unit}/s")
    }
}

/// A comparison a ratio must pass.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl Target {
    pub fn passes(self, x: f64) -> Option<bool> {
        match self {
            Target::AtLeast(y) => Some(x >= y),
            Target::AtMost(y) => Some(x <= y),
            Target::None => None,
        }
    }
}

/// Formats the ratio line (see the module docs).
pub fn ratio_line(name: &str, x: f64, target: Target, figure: &str, baseline: &str) -> String {
    let t = match target {
        Target::AtLeast(y) => format!("(target >= {y})"),
        Target::AtMost(y) => format!("(target <= {y})"),
        Target::None => "(no target)".to_string(),
    };
    let mut s = format!("ratio {name} = {x:.2} {t}");
    if !figure.is_empty() {
        s.push_str(&format!("; figure: {figure}"));
    }
    if !baseline.is_empty() {
        s.push_str(&format!("; baseline: {baseline}"));
    }
    s
}

/// Prints the ratio line. Under `cargo test --benches` the sizes are too small for the
/// figure to mean anything, so the line says so and `scripts/bench` never sees it.
pub fn report(name: &str, x: f64, target: Target, figure: &str, baseline: &str) {
    let line = ratio_line(name, x, target, figure, baseline);
    if bench_mode() {
        println!("{line}");
    } else {
        println!("(test mode, not a measurement) {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_line_format() {
        assert_eq!(
            ratio_line("a_vs_b", 2.345, Target::AtLeast(2.5), "1 M/s", "2 M/s"),
            "ratio a_vs_b = 2.35 (target >= 2.5); figure: 1 M/s; baseline: 2 M/s"
        );
        assert_eq!(
            ratio_line("x", 1.0, Target::None, "", ""),
            "ratio x = 1.00 (no target)"
        );
        assert_eq!(Target::AtMost(3.0).passes(2.0), Some(true));
    }
}
