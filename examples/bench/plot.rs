//! The benchmark's plots: SVG files written next to `results.md`, drawn from the same run's
//! figures, which are also written as `results.json` so a plot can be drawn again later
//! (`bench --plot-from results.json --plot-dir DIR`).
//!
//! - `density.svg`: total PSS of the shims, and the time to start all and to kill+delete all,
//!   against the number of pods N, both shims.
//! - `latency.svg`: the distribution of each latency measured per run (lifecycle, exec): every
//!   run as a dot, the median as a tick, median to p90 as a bar.
//! - `stdio.svg`: stdio throughput per round, the same way.
//!
//! The SVG is written by hand (lines, circles, rectangles and text; no crate, no script):
//! the benchmark needs nothing new installed and the plots render in any browser and on
//! GitHub. The unit tests below render a small sample, so CI (`cargo test --all-targets` in
//! `scripts/test.sh`) keeps the plotting from rotting.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Names and colours of the two shims, indexed by `Shim::idx`.
pub const SHIM_NAMES: [&str; 2] = ["tether", "Go (runc v2)"];
const COLOURS: [&str; 2] = ["#1b7837", "#762a83"];

/// Everything the plots are drawn from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PlotData {
    /// A line saying where the figures come from (date, host, git), printed under each title.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub density: Vec<DensityPoint>,
    #[serde(default)]
    pub latency: Vec<Distribution>,
    #[serde(default)]
    pub stdio: Vec<Distribution>,
}

/// One pod count of the density section; each pair is [tether, Go].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DensityPoint {
    pub n: usize,
    pub pss_mb: [f64; 2],
    pub start_s: [f64; 2],
    pub delete_s: [f64; 2],
}

/// One measurement taken per run, both shims: the runs themselves when recorded (a fresh
/// benchmark run records them), and the median and p90 (all a recorded table may have).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Distribution {
    pub name: String,
    pub unit: String,
    #[serde(default)]
    pub samples: [Vec<f64>; 2],
    pub median: [f64; 2],
    pub p90: [f64; 2],
}

impl PlotData {
    /// Writes `results.json` and every plot that has data into `dir`; returns the SVGs' paths.
    pub fn write_all(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        let mut written = Vec::new();
        let plots = [
            (
                "density.svg",
                (!self.density.is_empty()).then(|| self.density_svg()),
            ),
            (
                "latency.svg",
                (!self.latency.is_empty())
                    .then(|| self.distributions_svg("Latency", &self.latency)),
            ),
            (
                "stdio.svg",
                (!self.stdio.is_empty())
                    .then(|| self.distributions_svg("Stdio throughput", &self.stdio)),
            ),
        ];
        for (name, svg) in plots {
            if let Some(svg) = svg {
                let path = dir.join(name);
                std::fs::write(&path, svg)?;
                written.push(path);
            }
        }
        Ok(written)
    }

    /// PSS against N, and start-all and kill+delete-all time against N, side by side.
    pub fn density_svg(&self) -> String {
        let (w, h) = (900.0, 420.0);
        let mut s = header(w, h, "Density: N pods, one shim each", &self.source);
        let pts = &self.density;
        let pss: Vec<Series> = (0..2)
            .map(|i| Series {
                name: SHIM_NAMES[i].to_string(),
                colour: COLOURS[i],
                dashed: false,
                points: pts.iter().map(|p| (p.n as f64, p.pss_mb[i])).collect(),
            })
            .collect();
        line_panel(
            &mut s,
            (60.0, 80.0, 360.0, 270.0),
            "total PSS of the shims (MB)",
            &pss,
        );
        let mut times = Vec::new();
        for i in 0..2 {
            times.push(Series {
                name: format!("{} start all", SHIM_NAMES[i]),
                colour: COLOURS[i],
                dashed: false,
                points: pts.iter().map(|p| (p.n as f64, p.start_s[i])).collect(),
            });
            times.push(Series {
                name: format!("{} kill+delete all", SHIM_NAMES[i]),
                colour: COLOURS[i],
                dashed: true,
                points: pts.iter().map(|p| (p.n as f64, p.delete_s[i])).collect(),
            });
        }
        line_panel(
            &mut s,
            (510.0, 80.0, 360.0, 270.0),
            "start all / kill+delete all, 20 at a time (s)",
            &times,
        );
        s.push_str("</svg>\n");
        s
    }

    /// One horizontal strip per distribution and shim: runs as dots, median tick, p90 bar.
    pub fn distributions_svg(&self, title: &str, dists: &[Distribution]) -> String {
        let row_h = 34.0;
        let panel_h = 2.0 * row_h + 56.0;
        let (w, h) = (900.0, 70.0 + panel_h * dists.len() as f64 + 20.0);
        let mut s = header(w, h, title, &self.source);
        for (k, d) in dists.iter().enumerate() {
            let top = 70.0 + panel_h * k as f64;
            let (x0, pw) = (150.0, 700.0);
            let max = d
                .samples
                .iter()
                .flatten()
                .chain(d.p90.iter())
                .chain(d.median.iter())
                .copied()
                .filter(|x| x.is_finite())
                .fold(0.0_f64, f64::max);
            let xmax = nice_ceiling(max * 1.05);
            let x = |v: f64| x0 + pw * v / xmax;
            let _ = writeln!(
                s,
                r#"<text x="{x0}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
                top + 14.0,
                esc(&format!("{} ({})", d.name, d.unit))
            );
            let axis_y = top + 24.0 + 2.0 * row_h;
            for t in ticks(xmax) {
                let _ = writeln!(
                    s,
                    r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#ddd"/><text x="{0:.1}" y="{3:.1}" font-size="11" text-anchor="middle">{4}</text>"##,
                    x(t),
                    top + 22.0,
                    axis_y,
                    axis_y + 14.0,
                    fmt_num(t)
                );
            }
            for i in 0..2 {
                let cy = top + 24.0 + row_h * i as f64 + row_h / 2.0;
                let c = COLOURS[i];
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" fill="{c}">{}</text>"#,
                    x0 - 8.0,
                    cy + 4.0,
                    esc(SHIM_NAMES[i])
                );
                for &v in d.samples[i].iter().filter(|v| v.is_finite()) {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{cy:.1}" r="2.5" fill="{c}" fill-opacity="0.45"/>"#,
                        x(v)
                    );
                }
                let (m, p) = (d.median[i], d.p90[i]);
                if m.is_finite() && p.is_finite() {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="8" fill="{c}" fill-opacity="0.3"/>"#,
                        x(m.min(p)),
                        cy - 4.0,
                        (x(p) - x(m)).abs()
                    );
                }
                if m.is_finite() {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{c}" stroke-width="3"/><text x="{0:.1}" y="{3:.1}" font-size="11" fill="{c}" text-anchor="middle">{4}</text>"#,
                        x(m),
                        cy - 10.0,
                        cy + 10.0,
                        cy - 12.0,
                        fmt_num(m)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r##"<text x="150" y="{:.1}" font-size="11" fill="#555">dots: each run; thick tick: median; bar: median to p90</text>"##,
            h - 8.0
        );
        s.push_str("</svg>\n");
        s
    }
}

struct Series {
    name: String,
    colour: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn header(w: f64, h: f64, title: &str, source: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="20" y="26" font-size="17" font-weight="bold">{}</text>"#,
        esc(title)
    );
    if !source.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="20" y="46" font-size="11" fill="#555">{}</text>"##,
            esc(source)
        );
    }
    s
}

/// A line chart of `series` in the box (x, y, width, height); x and y axes from 0.
fn line_panel(
    s: &mut String,
    (px, py, pw, ph): (f64, f64, f64, f64),
    title: &str,
    series: &[Series],
) {
    let all = series.iter().flat_map(|r| r.points.iter());
    let (mut xmax, mut ymax) = (0.0_f64, 0.0_f64);
    for &(x, y) in all {
        if x.is_finite() && y.is_finite() {
            xmax = xmax.max(x);
            ymax = ymax.max(y);
        }
    }
    let (xmax, ymax) = (nice_ceiling(xmax), nice_ceiling(ymax * 1.08));
    let sx = |v: f64| px + pw * v / xmax;
    let sy = |v: f64| py + ph - ph * v / ymax;
    let _ = writeln!(
        s,
        r#"<text x="{px}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        py - 12.0,
        esc(title)
    );
    for t in ticks(ymax) {
        let _ = writeln!(
            s,
            r##"<line x1="{px}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" font-size="11" text-anchor="end">{4}</text>"##,
            sy(t),
            px + pw,
            px - 6.0,
            sy(t) + 4.0,
            fmt_num(t)
        );
    }
    for t in ticks(xmax) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            sx(t),
            py + ph + 16.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="M{px},{py} V{0:.1} H{1:.1}" fill="none" stroke="#333"/><text x="{2:.1}" y="{3:.1}" font-size="11" text-anchor="middle">pods (N)</text>"##,
        py + ph,
        px + pw,
        px + pw / 2.0,
        py + ph + 32.0
    );
    for (k, r) in series.iter().enumerate() {
        let pts: Vec<String> = r
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = if r.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            r.colour
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{}"/>"#,
                r.colour
            );
        }
        // Legend, top left inside the panel.
        let ly = py + 14.0 + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="{3}" stroke-width="2"{dash}/><text x="{4:.1}" y="{5:.1}" font-size="11">{6}</text>"#,
            px + 10.0,
            ly,
            px + 34.0,
            r.colour,
            px + 40.0,
            ly + 4.0,
            esc(&r.name)
        );
    }
}

/// A round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let v = if v.is_finite() && v > 0.0 { v } else { 1.0 };
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// Five ticks from 0 to `max`.
fn ticks(max: f64) -> Vec<f64> {
    (0..=5).map(|i| max * i as f64 / 5.0).collect()
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PlotData {
        PlotData {
            source: "a tiny sample <for the test> & nothing more".into(),
            density: vec![
                DensityPoint {
                    n: 10,
                    pss_mb: [2.6, 25.0],
                    start_s: [0.3, 0.4],
                    delete_s: [0.2, 0.3],
                },
                DensityPoint {
                    n: 30,
                    pss_mb: [7.6, 73.0],
                    start_s: [0.8, 1.1],
                    delete_s: [0.7, 0.9],
                },
            ],
            latency: vec![Distribution {
                name: "lifecycle `ctr run --rm true`".into(),
                unit: "ms".into(),
                samples: [vec![80.0, 82.5, 95.6], vec![110.0, 115.0, 132.8]],
                median: [82.5, 115.0],
                p90: [95.6, 132.8],
            }],
            stdio: vec![Distribution {
                name: "512 MiB to ctr".into(),
                unit: "MiB/s".into(),
                samples: [vec![], vec![]],
                median: [1362.0, 390.0],
                p90: [1362.0, 390.0],
            }],
        }
    }

    /// Well-formed enough to render: one root element, every element closed, text escaped.
    fn check_svg(svg: &str, names: &[&str]) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        // Every other element is self-closing.
        for line in svg
            .lines()
            .filter(|l| l.starts_with('<') && !l.starts_with("</"))
        {
            for el in line.split('<').skip(1) {
                let name = el.split([' ', '>']).next().unwrap_or("");
                let closed = el.trim_end().ends_with("/>") || name == "svg" || name == "text";
                assert!(
                    closed || name.starts_with('/'),
                    "unclosed <{name}> in {line}"
                );
            }
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(!svg.contains("<for"), "text not escaped");
        for n in names {
            assert!(svg.contains(&esc(n)), "no series {n:?}");
        }
    }

    #[test]
    fn renders_every_plot_of_a_small_sample() {
        let d = sample();
        check_svg(
            &d.density_svg(),
            &[
                "tether",
                "Go (runc v2)",
                "tether start all",
                "Go (runc v2) kill+delete all",
                "total PSS",
            ],
        );
        check_svg(
            &d.distributions_svg("Latency", &d.latency),
            &[
                "tether",
                "Go (runc v2)",
                "lifecycle `ctr run --rm true` (ms)",
            ],
        );
        check_svg(
            &d.distributions_svg("Stdio throughput", &d.stdio),
            &["512 MiB to ctr (MiB/s)", "1362"],
        );
    }

    #[test]
    fn writes_json_and_svgs_and_reads_the_json_back() {
        let dir = std::env::temp_dir().join(format!("tether-plot-test-{}", std::process::id()));
        let d = sample();
        let written = d.write_all(&dir).unwrap();
        assert_eq!(written.len(), 3);
        let back: PlotData =
            serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(back, d);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nice_ceilings_and_numbers() {
        assert_eq!(nice_ceiling(248.6), 250.0);
        assert_eq!(nice_ceiling(2454.1), 2500.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(fmt_num(0.8), "0.8");
        assert_eq!(fmt_num(12.5), "12.5");
        assert_eq!(fmt_num(1050.0), "1050");
    }
}
