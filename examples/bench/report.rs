//! The results table: one row per metric, both shims, tether/Go and the target.

use super::*;

#[derive(Debug, Clone)]
pub enum Cell {
    Num(f64, usize),
    Text(String),
}

impl Cell {
    pub fn show(&self) -> String {
        match self {
            Cell::Num(x, _) if x.is_nan() => "n/a".into(),
            Cell::Num(x, d) => format!("{x:.d$}", d = *d),
            Cell::Text(s) => s.clone(),
        }
    }
    pub fn num(&self) -> Option<f64> {
        match self {
            Cell::Num(x, _) if x.is_finite() => Some(*x),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Target {
    None,
    RatioAtMost(f64, &'static str),
    RatioAtLeast(f64, &'static str),
    AtMost(f64, &'static str),
    Text(&'static str, bool),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub tether: Cell,
    pub go: Cell,
    pub target: Target,
    pub note: String,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        let (t, g) = (self.tether.num()?, self.go.num()?);
        (g != 0.0).then_some(t / g)
    }

    pub fn target_text(&self) -> String {
        match &self.target {
            Target::None => "".into(),
            Target::RatioAtMost(_, s)
            | Target::RatioAtLeast(_, s)
            | Target::AtMost(_, s)
            | Target::Text(s, _) => s.to_string(),
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target or not measurable.
    pub fn met(&self) -> Option<bool> {
        match &self.target {
            Target::None => None,
            Target::RatioAtMost(x, _) => self.ratio().map(|r| r <= *x),
            Target::RatioAtLeast(x, _) => self.ratio().map(|r| r >= *x),
            Target::AtMost(x, _) => self.tether.num().map(|t| t <= *x),
            Target::Text(_, ok) => Some(*ok),
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Further Markdown tables, printed after the main one.
    pub extra: Vec<String>,
    /// The figures the plots are drawn from (`plot.rs`), written as `results.json` too.
    pub plots: PlotData,
}

impl Report {
    pub fn add(&mut self, metric: &str, t: Cell, g: Cell, target: Target, note: String) {
        let row = Row {
            metric: metric.to_string(),
            tether: t,
            go: g,
            target,
            note,
        };
        let ratio = row.ratio().map(|r| format!("{r:.2}")).unwrap_or("-".into());
        println!(
            "  {:<44} tether {:>10}   Go {:>10}   tether/Go {:>6}{}",
            row.metric,
            row.tether.show(),
            row.go.show(),
            ratio,
            if row.note.is_empty() {
                String::new()
            } else {
                format!("   ({})", row.note)
            }
        );
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| metric | tether | Go (runc v2) | tether/Go | target | met |\n");
        s.push_str("|---|---:|---:|---:|---|:-:|\n");
        for r in &self.rows {
            let ratio = r.ratio().map(|x| format!("{x:.2}")).unwrap_or("-".into());
            let met = match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let metric = if r.note.is_empty() {
                r.metric.clone()
            } else {
                format!("{} ({})", r.metric, r.note)
            };
            let _ = writeln!(
                s,
                "| {metric} | {} | {} | {ratio} | {} | {met} |",
                r.tether.show(),
                r.go.show(),
                r.target_text()
            );
        }
        for t in &self.extra {
            s.push('\n');
            s.push_str(t);
        }
        s
    }
}
