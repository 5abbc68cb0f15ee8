//! The side-by-side table: min/median/max over the runs, and whether each
//! target is met.

/// Min, median and max of a figure over the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// The spread of `values` (NaN for none: shown as "–").
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let pick = |i: usize| sorted.get(i).copied().unwrap_or(f64::NAN);
        Self {
            min: pick(0),
            median: pick(sorted.len() / 2),
            max: pick(sorted.len().saturating_sub(1)),
            runs: sorted.len(),
        }
    }

    /// The same spread of `f(value)`, for increasing `f`.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            min: f(self.min),
            median: f(self.median),
            max: f(self.max),
            runs: self.runs,
        }
    }
}

/// A target in words ("< 32") and whether a value meets it.
type Target = (&'static str, fn(f64) -> bool);

/// One line of the table.
pub struct Row {
    what: String,
    spread: Spread,
    target: Option<Target>,
    /// Judge the target on the max rather than the median: for limits
    /// every run (every function) has to stay under.
    worst: bool,
}

impl Row {
    pub fn new(what: impl Into<String>, spread: Spread) -> Self {
        Self {
            what: what.into(),
            spread,
            target: None,
            worst: false,
        }
    }

    pub fn target(mut self, text: &'static str, met: fn(f64) -> bool) -> Self {
        self.target = Some((text, met));
        self
    }

    pub fn worst(mut self) -> Self {
        self.worst = true;
        self
    }

    fn verdict(&self) -> String {
        match self.target {
            None => String::new(),
            Some((text, met)) => {
                let (on, value) = if self.worst {
                    ("max", self.spread.max)
                } else {
                    ("median", self.spread.median)
                };
                let verdict = if met(value) { "met" } else { "MISSED" };
                format!("{text}: {verdict} ({on})")
            }
        }
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "–".into()
    } else if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.4}")
    }
}

/// The table, one row per figure.
pub fn table(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "{:<width$}  {:>10}  {:>10}  {:>10}  {:>4}  target\n",
        "figure", "min", "median", "max", "runs"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:>10}  {:>10}  {:>4}  {}\n",
            row.what,
            number(row.spread.min),
            number(row.spread.median),
            number(row.spread.max),
            row.spread.runs,
            row.verdict()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_verdicts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max, s.runs), (1.0, 2.0, 3.0, 3));
        let under = Row::new("rss", Spread::of(&[10.0, 40.0, 20.0])).target("< 32", |v| v < 32.0);
        assert!(under.verdict().contains("met (median)"));
        let worst = Row::new("rss", Spread::of(&[10.0, 40.0, 20.0]))
            .target("< 32", |v| v < 32.0)
            .worst();
        assert!(worst.verdict().contains("MISSED (max)"));
    }
}
