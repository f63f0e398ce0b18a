//! The statistics every part of gemma-fit uses, defined once: the median (the mean of the middle
//! two for an even count), nearest-rank percentiles, the spread of repeated figures, and the
//! bootstrap interval the regression gate judges changes by.
//!
//! No crate is used: statrs would bring nalgebra for three functions, and its quantile estimator
//! interpolates, where the per-token percentiles in records have always been nearest-rank.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The median of `samples` (any order): the middle value, or the mean of the middle two for an
/// even count; 0 for none.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    median_in_place(&mut s)
}

/// [`median`] that sorts `v` instead of copying it (the bootstrap's inner loop).
pub fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p`th percentile (0..=100) of `samples` by nearest rank: the smallest sample with at least
/// p% of the samples at or below it; 0 for none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The spread of a figure over the repeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for fewer than two samples.
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    /// Every repeat's value, in order (absent in records written before they were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn of(samples: &[f64]) -> Self {
        let n = samples.len();
        if n == 0 {
            return Stat::default();
        }
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stat {
            n,
            median: median(samples),
            mean,
            stddev: var.sqrt(),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            samples: samples.to_vec(),
        }
    }

    /// Standard deviation relative to the median (0 when undefined).
    pub fn relative_spread(&self) -> f64 {
        if self.median.abs() > 0.0 {
            self.stddev / self.median.abs()
        } else {
            0.0
        }
    }

    /// The per-repeat values; for a record written before they were kept, the median alone.
    pub fn values(&self) -> Vec<f64> {
        if self.samples.is_empty() {
            vec![self.median; self.n.min(1)]
        } else {
            self.samples.clone()
        }
    }
}

/// A 95% interval of median(new) ÷ median(base) − 1 by the bootstrap: both sides resampled with
/// replacement `resamples` times from a generator seeded with `seed` (so a verdict repeats).
pub fn bootstrap_ratio_interval(
    base: &[f64],
    new: &[f64],
    resamples: usize,
    seed: u64,
) -> (f64, f64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut ratios = Vec::with_capacity(resamples);
    let (mut b, mut n) = (vec![0.0; base.len()], vec![0.0; new.len()]);
    for _ in 0..resamples {
        for x in b.iter_mut() {
            *x = base[rng.random_range(0..base.len())];
        }
        for x in n.iter_mut() {
            *x = new[rng.random_range(0..new.len())];
        }
        let mb = median_in_place(&mut b);
        if mb > 0.0 {
            ratios.push(median_in_place(&mut n) / mb - 1.0);
        }
    }
    if ratios.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    ratios.sort_by(f64::total_cmp);
    let at = |p: f64| ratios[((p * ratios.len() as f64) as usize).min(ratios.len() - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert_eq!(median(&[]), 0.0);
        // Records, the gate and probes all see the same median.
        assert_eq!(Stat::of(&[10.0, 20.0]).median, 15.0);
        assert_eq!(Stat::of(&[10.0, 12.0, 11.0, 9.0, 13.0]).median, 11.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 90.0), 9.0);
        assert_eq!(percentile(&v, 99.0), 10.0);
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn stat_spread() {
        let s = Stat::of(&[10.0, 12.0, 11.0, 9.0, 13.0]);
        assert_eq!(
            (s.n, s.median, s.mean, s.min, s.max),
            (5, 11.0, 11.0, 9.0, 13.0)
        );
        assert!((s.stddev - 2.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(&[4.0]).stddev, 0.0);
        assert_eq!(Stat::of(&[]).n, 0);
    }

    #[test]
    fn the_bootstrap_interval_covers_the_ratio() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        let new: Vec<f64> = base.iter().map(|x| x * 0.8).collect();
        let (lo, hi) = bootstrap_ratio_interval(&base, &new, 2000, 1);
        assert!(lo <= -0.19 && (-0.21..-0.15).contains(&hi), "{lo} {hi}");
        let (lo, hi) = bootstrap_ratio_interval(&base, &base, 2000, 1);
        assert!(lo <= 0.0 && hi >= 0.0 && hi - lo < 0.05, "{lo} {hi}");
    }
}
