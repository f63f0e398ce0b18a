//! Warnings about the figures themselves (as hyperfine warns about unstable measurements): a
//! type per kind, with the text a user reads.

use crate::stats::Stat;

/// Relative standard deviation between repeats above which a figure gets a warning.
pub const SPREAD_WARNING: f64 = 0.10;

#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// A figure's repeats spread more than [`SPREAD_WARNING`] around their median.
    Unstable {
        figure: &'static str,
        spread: f64,
        stddev: f64,
        median: f64,
    },
}

impl Warning {
    /// The warning for `stat`, when its repeats spread too widely.
    pub fn unstable(figure: &'static str, stat: &Stat) -> Option<Self> {
        (stat.n >= 2 && stat.relative_spread() > SPREAD_WARNING).then(|| Warning::Unstable {
            figure,
            spread: stat.relative_spread(),
            stddev: stat.stddev,
            median: stat.median,
        })
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::Unstable {
                figure,
                spread,
                stddev,
                median,
            } => write!(
                f,
                "{figure} varies by ±{:.0}% between repeats (stddev {stddev:.3} around a median of {median:.3}; more than {:.0}%): \
                 the figure is not stable; close other programs, add --warmup, raise --repeats",
                100.0 * spread,
                100.0 * SPREAD_WARNING
            ),
        }
    }
}
