//! Experiment statistics, pure: sufficient statistics per arm in, tests and
//! intervals out. No I/O, no server; distributions come from `statrs`.
//!
//! Conventions (docs/experiments.md explains them):
//! - binary metrics: mean = conversion rate p, variance = p(1 − p); the
//!   p-value is the pooled two-proportion z-test (identical to Pearson's
//!   chi-square on the 2×2 table without continuity correction); lift
//!   intervals use the unpooled standard error and the normal quantile.
//! - continuous metrics: sample variance (n − 1); Welch's t-test with
//!   Welch–Satterthwaite degrees of freedom, and lift intervals with the t
//!   quantile at those degrees of freedom.
//! - relative lift: (m_t − m_c)/m_c with a delta-method interval.
//! - CUPED: θ = cov(y, x)/var(x) pooled over both arms; each unit's
//!   y − θ(x − x̄) is then tested as a continuous metric.
//! - sequential: the mixture SPRT (mSPRT) with a normal mixing distribution,
//!   whose 1/Λ is an always-valid p-value: stopping at any peek keeps the
//!   false-positive rate at most α.

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// Sums over the units of one arm: count, Σy, Σy², and for CUPED Σx, Σx², Σxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Moments {
    /// Units.
    pub n: f64,
    /// Σy.
    pub sum: f64,
    /// Σy².
    pub sum_sq: f64,
    /// Σx (covariate).
    pub x_sum: f64,
    /// Σx².
    pub x_sum_sq: f64,
    /// Σxy.
    pub xy_sum: f64,
}

impl Moments {
    /// Adds one unit with value `y` and covariate `x`.
    pub fn add(&mut self, y: f64, x: f64) {
        self.n += 1.0;
        self.sum += y;
        self.sum_sq += y * y;
        self.x_sum += x;
        self.x_sum_sq += x * x;
        self.xy_sum += x * y;
    }

    /// Moments of a list of values (no covariate).
    pub fn of(values: &[f64]) -> Moments {
        let mut m = Moments::default();
        for v in values {
            m.add(*v, 0.0);
        }
        m
    }

    /// Mean of y.
    pub fn mean(&self) -> f64 {
        if self.n > 0.0 {
            self.sum / self.n
        } else {
            0.0
        }
    }

    /// Sample variance of y (n − 1).
    pub fn variance(&self) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        ((self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1.0)).max(0.0)
    }

    fn x_mean(&self) -> f64 {
        if self.n > 0.0 {
            self.x_sum / self.n
        } else {
            0.0
        }
    }

    fn merged(&self, o: &Moments) -> Moments {
        Moments {
            n: self.n + o.n,
            sum: self.sum + o.sum,
            sum_sq: self.sum_sq + o.sum_sq,
            x_sum: self.x_sum + o.x_sum,
            x_sum_sq: self.x_sum_sq + o.x_sum_sq,
            xy_sum: self.xy_sum + o.xy_sum,
        }
    }
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Converted or not (y ∈ {0, 1}).
    Binary,
    /// Any value per unit.
    Continuous,
}

fn normal() -> Normal {
    // Standard normal: parameters are constants and always valid.
    Normal::standard()
}

/// The two-sided standard normal quantile for a confidence level (0.95 → 1.96).
pub fn z_two_sided(confidence: f64) -> f64 {
    normal().inverse_cdf(1.0 - (1.0 - confidence) / 2.0)
}

/// Sample-ratio-mismatch check: chi-square goodness of fit of the observed
/// units per arm against the configured weights; the p-value.
pub fn srm_p_value(units: &[u64], weights: &[f64]) -> f64 {
    let total: f64 = units.iter().map(|u| *u as f64).sum();
    let wsum: f64 = weights.iter().sum();
    if total == 0.0 || units.len() < 2 || wsum <= 0.0 {
        return 1.0;
    }
    let stat: f64 = units
        .iter()
        .zip(weights)
        .map(|(o, w)| {
            let e = total * w / wsum;
            if e > 0.0 {
                (*o as f64 - e).powi(2) / e
            } else {
                0.0
            }
        })
        .sum();
    match ChiSquared::new((units.len() - 1) as f64) {
        Ok(chi) => chi.sf(stat),
        Err(_) => 1.0,
    }
}

/// One treatment arm compared with control on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// Treatment mean − control mean.
    pub lift: f64,
    /// 95 % interval of `lift`, low end.
    pub ci_low: f64,
    /// 95 % interval of `lift`, high end.
    pub ci_high: f64,
    /// (treatment − control) / control.
    pub relative_lift: f64,
    /// 95 % delta-method interval of `relative_lift`, low end.
    pub relative_ci_low: f64,
    /// 95 % delta-method interval of `relative_lift`, high end.
    pub relative_ci_high: f64,
    /// Two-sided p-value of no difference.
    pub p_value: f64,
    /// Test statistic (z or t).
    pub statistic: f64,
    /// Degrees of freedom (Welch–Satterthwaite; infinite for binary).
    pub df: f64,
    /// Always-valid (mSPRT) p-value: significant at any peek if ≤ α.
    pub sequential_p_value: f64,
    /// Minimum detectable absolute effect at the current sizes.
    pub mde: f64,
}

/// Settings of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Design {
    /// Significance level.
    pub alpha: f64,
    /// Target power, for the MDE.
    pub power: f64,
    /// Units per arm at which the mSPRT mixture is tuned (its variance is the
    /// estimate's variance at this size).
    pub tuning_units: f64,
}

impl Default for Design {
    fn default() -> Self {
        Design {
            alpha: 0.05,
            power: 0.8,
            tuning_units: 1000.0,
        }
    }
}

/// The mSPRT always-valid p-value for an estimate `d` with variance `v`,
/// with a normal mixture of variance `tau2` over the effect:
/// Λ = sqrt(v/(v+τ²))·exp(τ²d²/(2v(v+τ²))), p = min(1, 1/Λ).
pub fn msprt_p_value(d: f64, v: f64, tau2: f64) -> f64 {
    if v <= 0.0 || tau2 <= 0.0 || !d.is_finite() {
        return 1.0;
    }
    let log_lambda = 0.5 * (v / (v + tau2)).ln() + tau2 * d * d / (2.0 * v * (v + tau2));
    (-log_lambda).exp().min(1.0)
}

/// Compares `treatment` with `control` on a metric of `kind`.
pub fn compare(kind: Kind, control: &Moments, treatment: &Moments, design: &Design) -> Comparison {
    let (n1, n2) = (control.n, treatment.n);
    let (m1, m2) = (control.mean(), treatment.mean());
    let (v1, v2) = match kind {
        Kind::Binary => (m1 * (1.0 - m1), m2 * (1.0 - m2)),
        Kind::Continuous => (control.variance(), treatment.variance()),
    };
    let d = m2 - m1;
    let se2 = if n1 > 0.0 && n2 > 0.0 {
        v1 / n1 + v2 / n2
    } else {
        f64::NAN
    };
    let se = se2.sqrt();
    let (statistic, p_value, df, quantile) = match kind {
        Kind::Binary => {
            let pooled = (control.sum + treatment.sum) / (n1 + n2);
            let se_pooled = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
            let z = d / se_pooled;
            let p = if z.is_finite() {
                2.0 * normal().sf(z.abs())
            } else {
                1.0
            };
            (z, p, f64::INFINITY, z_two_sided(0.95))
        }
        Kind::Continuous => {
            let df = se2 * se2 / ((v1 / n1).powi(2) / (n1 - 1.0) + (v2 / n2).powi(2) / (n2 - 1.0));
            let t = d / se;
            match StudentsT::new(0.0, 1.0, df) {
                Ok(dist) if t.is_finite() => {
                    (t, 2.0 * dist.sf(t.abs()), df, dist.inverse_cdf(0.975))
                }
                _ => (f64::NAN, 1.0, df, f64::NAN),
            }
        }
    };
    // Delta method: Var(m2/m1) ≈ v2/(n2 m1²) + m2² v1/(n1 m1⁴).
    let rel = m2 / m1 - 1.0;
    let rel_se = (v2 / (n2 * m1 * m1) + m2 * m2 * v1 / (n1 * m1.powi(4))).sqrt();
    let z = z_two_sided(0.95);
    // mSPRT mixture: the effect's prior variance is the estimate's variance
    // at `tuning_units` per arm (from the pooled variance).
    let pooled_var = (v1 * n1 + v2 * n2) / (n1 + n2);
    let tau2 = 2.0 * pooled_var / design.tuning_units;
    let mde = (z_two_sided(1.0 - design.alpha) + normal().inverse_cdf(design.power))
        * (v1 / n1 + v1 / n2).sqrt();
    Comparison {
        lift: d,
        ci_low: d - quantile * se,
        ci_high: d + quantile * se,
        relative_lift: rel,
        relative_ci_low: rel - z * rel_se,
        relative_ci_high: rel + z * rel_se,
        p_value,
        statistic,
        df,
        sequential_p_value: msprt_p_value(d, se2, tau2),
        mde,
    }
}

/// CUPED: the pooled θ, the adjusted moments of both arms and the share of
/// variance removed (1 − var(adjusted)/var(raw), pooled).
pub fn cuped(control: &Moments, treatment: &Moments) -> (f64, Moments, Moments, f64) {
    let all = control.merged(treatment);
    let n = all.n;
    if n < 2.0 {
        return (0.0, *control, *treatment, 0.0);
    }
    let x_mean = all.x_mean();
    let cov = (all.xy_sum - all.sum * all.x_sum / n) / (n - 1.0);
    let var_x = (all.x_sum_sq - all.x_sum * all.x_sum / n) / (n - 1.0);
    let theta = if var_x > 0.0 { cov / var_x } else { 0.0 };
    // y' = y − θ(x − x̄): Σy' and Σy'² follow from the sums.
    let adjust = |m: &Moments| {
        let c = theta * x_mean;
        let sum = m.sum - theta * m.x_sum + c * m.n;
        // (y − θx + c)² = y² + θ²x² + c² − 2θxy + 2cy − 2θcx
        let sum_sq = m.sum_sq + theta * theta * m.x_sum_sq + c * c * m.n - 2.0 * theta * m.xy_sum
            + 2.0 * c * m.sum
            - 2.0 * theta * c * m.x_sum;
        Moments {
            n: m.n,
            sum,
            sum_sq,
            ..*m
        }
    };
    let (ac, at) = (adjust(control), adjust(treatment));
    let raw = all.variance();
    let adjusted = ac.merged(&at).variance();
    let reduction = if raw > 0.0 { 1.0 - adjusted / raw } else { 0.0 };
    (theta, ac, at, reduction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    #[test]
    fn two_proportion_z_equals_pearson_chi_square_without_correction() {
        let c = Moments::of(&[vec![1.0; 120], vec![0.0; 880]].concat());
        let t = Moments::of(&[vec![1.0; 150], vec![0.0; 850]].concat());
        let cmp = compare(Kind::Binary, &c, &t, &Design::default());
        // Pearson chi-square on the 2×2 table by hand.
        let table = [[120.0, 880.0], [150.0, 850.0]];
        let (rows, cols, total) = ([1000.0, 1000.0], [270.0, 1730.0], 2000.0);
        let mut chi2 = 0.0;
        for i in 0..2 {
            for j in 0..2 {
                let e = rows[i] * cols[j] / total;
                chi2 += (table[i][j] - e) * (table[i][j] - e) / e;
            }
        }
        let p = ChiSquared::new(1.0).unwrap().sf(chi2);
        assert!(close(cmp.p_value, p, 1e-9), "{} vs {p}", cmp.p_value);
        assert!(close(cmp.statistic * cmp.statistic, chi2, 1e-9));
    }

    #[test]
    fn srm_flags_a_skewed_split_and_passes_a_fair_one() {
        assert!(srm_p_value(&[5000, 5000], &[0.5, 0.5]) > 0.99);
        assert!(srm_p_value(&[5200, 4800], &[0.5, 0.5]) < 0.001);
        assert!(srm_p_value(&[5010, 4990], &[0.5, 0.5]) > 0.5);
    }

    #[test]
    fn cuped_with_a_correlated_covariate_shrinks_variance_but_not_the_effect() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut c, mut t) = (Moments::default(), Moments::default());
        for i in 0..4000 {
            let x: f64 = rng.gen_range(0.0..100.0);
            let noise: f64 = rng.gen_range(-10.0..10.0);
            let y = x + noise + if i % 2 == 1 { 2.0 } else { 0.0 };
            if i % 2 == 1 {
                t.add(y, x);
            } else {
                c.add(y, x);
            }
        }
        let (theta, ac, at, reduction) = cuped(&c, &t);
        assert!((theta - 1.0).abs() < 0.05, "theta {theta}");
        assert!(reduction > 0.9, "reduction {reduction}");
        let adj = compare(Kind::Continuous, &ac, &at, &Design::default());
        let raw = compare(Kind::Continuous, &c, &t, &Design::default());
        assert!((adj.lift - 2.0).abs() < 0.5, "{adj:?}");
        assert!(adj.ci_high - adj.ci_low < (raw.ci_high - raw.ci_low) / 3.0);
    }

    /// One A/A experiment of `n` units per arm at conversion rate 10 %.
    fn aa_binary(rng: &mut rand::rngs::StdRng, n: usize) -> (Vec<f64>, Vec<f64>) {
        let draw = |rng: &mut rand::rngs::StdRng| {
            (0..n)
                .map(|_| if rng.gen_bool(0.1) { 1.0 } else { 0.0 })
                .collect::<Vec<_>>()
        };
        (draw(rng), draw(rng))
    }

    #[test]
    fn a_a_false_positive_rate_is_near_alpha_over_1000_seeded_runs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20_000);
        let runs = 1000;
        let mut positives = 0;
        for _ in 0..runs {
            let (a, b) = aa_binary(&mut rng, 10_000);
            let cmp = compare(
                Kind::Binary,
                &Moments::of(&a),
                &Moments::of(&b),
                &Design::default(),
            );
            if cmp.p_value < 0.05 {
                positives += 1;
            }
        }
        let rate = positives as f64 / runs as f64;
        assert!(
            (0.035..=0.065).contains(&rate),
            "A/A false-positive rate {rate}"
        );
    }

    #[test]
    fn sequential_verdict_keeps_false_positives_under_alpha_when_peeking_every_100_units() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        let runs = 1000;
        let (mut seq_positives, mut naive_positives) = (0, 0);
        for _ in 0..runs {
            let (a, b) = aa_binary(&mut rng, 10_000);
            let (mut c, mut t) = (Moments::default(), Moments::default());
            let (mut seq_hit, mut naive_hit) = (false, false);
            for i in 0..a.len() {
                c.add(a[i], 0.0);
                t.add(b[i], 0.0);
                // A peek every 100 units (50 per arm).
                if (i + 1) % 50 == 0 {
                    let cmp = compare(Kind::Binary, &c, &t, &Design::default());
                    seq_hit |= cmp.sequential_p_value <= 0.05;
                    naive_hit |= cmp.p_value < 0.05;
                }
            }
            seq_positives += usize::from(seq_hit);
            naive_positives += usize::from(naive_hit);
        }
        let seq = seq_positives as f64 / runs as f64;
        let naive = naive_positives as f64 / runs as f64;
        assert!(seq <= 0.05, "sequential false-positive rate {seq}");
        // What the sequential test guards against: peeking at the plain p-value.
        assert!(naive > 0.2, "naive peeking rate {naive}");
    }

    #[test]
    fn a_clear_winner_is_significant_both_ways() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let draw = |rng: &mut rand::rngs::StdRng, p: f64| {
            (0..10_000)
                .map(|_| if rng.gen_bool(p) { 1.0 } else { 0.0 })
                .collect::<Vec<_>>()
        };
        let (a, b) = (draw(&mut rng, 0.10), draw(&mut rng, 0.13));
        let cmp = compare(
            Kind::Binary,
            &Moments::of(&a),
            &Moments::of(&b),
            &Design::default(),
        );
        assert!(
            cmp.p_value < 1e-3 && cmp.sequential_p_value < 0.05,
            "{cmp:?}"
        );
        assert!(cmp.ci_low > 0.0 && cmp.relative_ci_low > 0.0);
        assert!(cmp.mde < 0.03 && cmp.mde > 0.005, "{cmp:?}");
    }
}
