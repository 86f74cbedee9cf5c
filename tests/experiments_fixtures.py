#!/usr/bin/env python3
"""Generates tests/fixtures/experiments.json: data of a few known experiments
and what scipy/statsmodels compute for them, so the Rust statistics
(src/analytics/stats.rs) are checked against an independent implementation.

Run with the compatibility venv (pip install scipy statsmodels numpy):
    .venv-compat/bin/python tests/experiments_fixtures.py > tests/fixtures/experiments.json
"""
import json

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

Z = stats.norm.ppf(0.975)


def relative(c, t, binary):
    m1, m2 = c.mean(), t.mean()
    v1 = m1 * (1 - m1) if binary else c.var(ddof=1)
    v2 = m2 * (1 - m2) if binary else t.var(ddof=1)
    rel = m2 / m1 - 1
    se = np.sqrt(v2 / (len(t) * m1**2) + m2**2 * v1 / (len(c) * m1**4))
    return rel, rel - Z * se, rel + Z * se


def binary(c, t):
    count = np.array([t.sum(), c.sum()])
    nobs = np.array([len(t), len(c)])
    z, p = proportions_ztest(count, nobs)
    chi2, p_chi, _, _ = stats.chi2_contingency(
        [[t.sum(), len(t) - t.sum()], [c.sum(), len(c) - c.sum()]], correction=False)
    assert abs(p - p_chi) < 1e-12 * max(p, 1e-300) or abs(p - p_chi) < 1e-15
    low, high = confint_proportions_2indep(t.sum(), len(t), c.sum(), len(c),
                                           method="wald", compare="diff")
    rel, rl, rh = relative(c, t, True)
    return {"lift": t.mean() - c.mean(), "ci_low": low, "ci_high": high,
            "p_value": p, "statistic": z, "relative_lift": rel,
            "relative_ci_low": rl, "relative_ci_high": rh}


def continuous(c, t):
    res = stats.ttest_ind(t, c, equal_var=False)
    ci = res.confidence_interval(0.95)
    rel, rl, rh = relative(c, t, False)
    return {"lift": t.mean() - c.mean(), "ci_low": ci.low, "ci_high": ci.high,
            "p_value": res.pvalue, "statistic": res.statistic, "df": res.df,
            "relative_lift": rel, "relative_ci_low": rl, "relative_ci_high": rh}


def cuped(c, t, xc, xt):
    y, x = np.concatenate([c, t]), np.concatenate([xc, xt])
    theta = np.cov(y, x, ddof=1)[0, 1] / np.var(x, ddof=1)
    adj = lambda v, w: v - theta * (w - x.mean())
    ac, at = adj(c, xc), adj(t, xt)
    reduction = 1 - np.var(np.concatenate([ac, at]), ddof=1) / np.var(y, ddof=1)
    out = continuous(ac, at)
    out.update({"theta": theta, "variance_reduction": reduction})
    return out


def case(name, c, t, kind, weights=(0.5, 0.5), xc=None, xt=None):
    srm = stats.chisquare([len(c), len(t)],
                          f_exp=np.array(weights) / sum(weights) * (len(c) + len(t)))
    doc = {"name": name, "kind": kind, "weights": list(weights),
           "control": c.tolist(), "treatment": t.tolist(),
           "srm_p_value": srm.pvalue}
    if kind == "binary":
        doc["expected"] = binary(c, t)
    elif xc is None:
        doc["expected"] = continuous(c, t)
    else:
        doc["control_covariate"] = xc.tolist()
        doc["treatment_covariate"] = xt.tolist()
        doc["expected"] = cuped(c, t, xc, xt)
        doc["expected_raw"] = continuous(c, t)
    return doc


rng = np.random.default_rng(14)
conv = lambda n, p: (rng.random(n) < p).astype(float)
cases = [
    case("aa_binary", conv(2000, 0.1), conv(2000, 0.1), "binary"),
    case("aa_continuous", rng.gamma(2.0, 10.0, 1500), rng.gamma(2.0, 10.0, 1500), "continuous"),
    case("clear_winner_binary", conv(3000, 0.10), conv(3000, 0.14), "binary"),
    case("clear_winner_continuous", rng.normal(50, 12, 800), rng.normal(54, 15, 900), "continuous"),
    case("srm", conv(2300, 0.1), conv(1700, 0.1), "binary"),
]
xc, xt = rng.normal(100, 20, 1000), rng.normal(100, 20, 1000)
yc = 0.8 * xc + rng.normal(0, 5, 1000)
yt = 0.8 * xt + rng.normal(0, 5, 1000) + 1.5
cases.append(case("cuped_correlated", yc, yt, "continuous", xc=xc, xt=xt))

print(json.dumps({"generator": "tests/experiments_fixtures.py",
                  "scipy": __import__("scipy").__version__,
                  "statsmodels": __import__("statsmodels").__version__,
                  "cases": cases}, indent=1))
