//! The two shims, their samples side by side, and the statistics taken over them.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shim {
    Tether,
    Go,
}

impl Shim {
    pub fn runtime(self) -> &'static str {
        match self {
            Shim::Tether => TETHER_RUNTIME,
            Shim::Go => GO_RUNTIME,
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Shim::Tether => "t",
            Shim::Go => "g",
        }
    }

    pub fn idx(self) -> usize {
        match self {
            Shim::Tether => 0,
            Shim::Go => 1,
        }
    }
}

/// ABBA interleaving: round 0 runs tether then Go, round 1 Go then tether, ...
pub fn order(round: usize) -> [Shim; 2] {
    if round % 2 == 1 {
        [Shim::Go, Shim::Tether]
    } else {
        [Shim::Tether, Shim::Go]
    }
}

/// Samples per shim, indexed by [`Shim::idx`].
#[derive(Debug, Default, Clone)]
pub struct Pair {
    pub v: [Vec<f64>; 2],
    pub failures: [usize; 2],
}

impl Pair {
    pub fn push(&mut self, s: Shim, x: f64) {
        self.v[s.idx()].push(x);
    }
    pub fn fail(&mut self, s: Shim) {
        self.failures[s.idx()] += 1;
    }
    pub fn get(&self, s: Shim) -> &[f64] {
        &self.v[s.idx()]
    }
    pub fn note(&self) -> String {
        let [t, g] = self.failures;
        if t + g == 0 {
            String::new()
        } else {
            format!("failed runs: tether {t}, Go {g}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s
}

pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Mean of the middle 80%: the slowest and fastest 10% dropped (ctr-level times have long
/// tails on a shared 2-core machine).
pub fn trimmed_mean(v: &[f64]) -> f64 {
    let s = sorted(v);
    let cut = s.len() / 10;
    mean(&s[cut..s.len() - cut])
}

/// Nearest-rank percentile, `p` in (0, 1].
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = (p * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NAN, f64::max)
}
