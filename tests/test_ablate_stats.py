"""Student-t CDF and quantile, Welch's and the paired t-test and intervals, the paired minimum
detectable effect, Holm's adjustment: against closed forms,
printed tables and values worked by hand."""

from __future__ import annotations

import math

import pytest

from jepa_core.stats import betainc, holm, min_detectable_effect, paired_t_test, summarize, t_cdf, t_ppf, t_two_sided_p, welch_t_test

TS = [-30.0, -4.0, -1.5, -0.3, 0.0, 0.2, 0.9, 2.0, 5.0, 50.0]


@pytest.mark.parametrize("t", TS)
def test_t_cdf_df1_is_cauchy(t):
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)


@pytest.mark.parametrize("t", TS)
def test_t_cdf_df2_closed_form(t):
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


@pytest.mark.parametrize("t", TS)
def test_t_cdf_df3_closed_form(t):
    x = t / math.sqrt(3)
    ref = 0.5 + (math.atan(x) + x / (1 + x * x)) / math.pi
    assert t_cdf(t, 3) == pytest.approx(ref, abs=1e-13)


@pytest.mark.parametrize("t", TS)
def test_t_cdf_df4_closed_form(t):
    u = 1 + t * t / 4
    ref = 0.5 + 0.375 * (t / math.sqrt(u)) * (1 - t * t / (12 * u))
    assert t_cdf(t, 4) == pytest.approx(ref, abs=1e-13)


def _t_pdf(x: float, df: float) -> float:
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return c * (1 + x * x / df) ** (-(df + 1) / 2)


@pytest.mark.parametrize("df", [1.7, 2.5, 5.3, 11.0])
@pytest.mark.parametrize("t", [0.5, 1.3, 2.8])
def test_t_cdf_fractional_df_matches_simpson_integral(df, t):
    # P(0 < T < t) by composite Simpson's rule on the density, in float64
    n = 2000
    h = t / n
    s = _t_pdf(0, df) + _t_pdf(t, df) + sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, n))
    assert t_cdf(t, df) == pytest.approx(0.5 + s * h / 3, abs=1e-10)


def test_large_df_approaches_normal():
    for t in (0.5, 1.96, 3.0):
        assert t_two_sided_p(t, 1e7) == pytest.approx(math.erfc(t / math.sqrt(2)), rel=1e-5)
        assert t_two_sided_p(t, math.inf) == math.erfc(t / math.sqrt(2))


def test_tiny_p_values_keep_precision():
    # df = 1: P(|T| > t) = 1 - 2 atan(t)/pi = 2 atan(1/t)/pi, exact for large t without cancellation
    t = 1e6
    assert t_two_sided_p(t, 1) == pytest.approx(2 * math.atan(1 / t) / math.pi, rel=1e-9)


def test_betainc_identities():
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
        assert betainc(3.5, 1, x) == pytest.approx(x**3.5, abs=1e-14)
        assert betainc(2.2, 1.3, x) == pytest.approx(1 - betainc(1.3, 2.2, 1 - x), abs=1e-13)
    assert betainc(7.0, 7.0, 0.5) == pytest.approx(0.5, abs=1e-14)
    with pytest.raises(ValueError):
        betainc(0, 1, 0.5)


def test_welch_by_hand_integer_df():
    # means 2 and 5, variances 1 and 1, n = 3: t = -3 / sqrt(2/3), df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    r = welch_t_test([1, 2, 3], [4, 5, 6])
    assert r is not None
    assert r.diff == -3.0 and r.n_a == 3 and r.n_b == 3
    assert r.t == pytest.approx(-3 / math.sqrt(2 / 3), rel=1e-14)
    assert r.df == pytest.approx(4.0, rel=1e-14)
    t = abs(r.t)
    u = 1 + t * t / 4
    cdf4 = 0.5 + 0.375 * (t / math.sqrt(u)) * (1 - t * t / (12 * u))
    assert r.p == pytest.approx(2 * (1 - cdf4), rel=1e-10)


def test_welch_unequal_variances():
    a, b = [10.0, 12.0], [1.0, 2.0, 6.0]
    # var a = 2, var b = 7; se^2 = 1 + 7/3 = 10/3; df = (10/3)^2 / (1/1 + (7/3)^2/2) = (100/9) / (1 + 49/18)
    r = welch_t_test(a, b)
    assert r is not None
    assert r.t == pytest.approx((11 - 3) / math.sqrt(10 / 3), rel=1e-14)
    assert r.df == pytest.approx((100 / 9) / (1 + 49 / 18), rel=1e-14)
    assert 0 < r.p < 0.1
    swapped = welch_t_test(b, a)
    assert swapped.t == pytest.approx(-r.t) and swapped.p == pytest.approx(r.p)


def test_welch_edge_cases():
    assert welch_t_test([1.0], [2.0, 3.0]) is None  # one seed: no variance, no test
    assert welch_t_test([1.0, float("nan")], [2.0, 3.0]) is None  # non-finite values are dropped
    same = welch_t_test([2.0, 2.0], [2.0, 2.0])
    assert same.p == 1.0 and same.t == 0.0
    apart = welch_t_test([3.0, 3.0], [2.0, 2.0])
    assert apart.p == 0.0 and apart.t == math.inf


def test_summarize():
    s = summarize([1.0, 2.0, 4.0, None, float("inf")])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert summarize([5.0]).std is None and summarize([]).mean is None


# --------------------------------------------------------------------------- quantile


@pytest.mark.parametrize(
    ("q", "df", "table"),
    [
        # two-sided 95% critical values as printed in t tables (6 decimals)
        (0.975, 1, 12.706205),
        (0.975, 2, 4.302653),
        (0.975, 3, 3.182446),
        (0.975, 4, 2.776445),
        (0.975, 5, 2.570582),
        (0.975, 10, 2.228139),
        (0.975, 30, 2.042272),
        (0.995, 5, 4.032143),
        (0.95, 8, 1.859548),
    ],
)
def test_t_ppf_matches_tables(q, df, table):
    assert t_ppf(q, df) == pytest.approx(table, abs=5e-7)
    assert t_ppf(1 - q, df) == pytest.approx(-table, abs=5e-7)


@pytest.mark.parametrize("q", [0.001, 0.2, 0.5, 0.6, 0.975, 0.999999])
def test_t_ppf_closed_forms_df1_df2(q):
    # df = 1 (Cauchy): tan(pi (q - 1/2)); df = 2: (2q - 1) / sqrt(2 q (1 - q)). Near q = 1 both sides
    # lose digits to 1 - q (0.999999 is not exact in binary), hence rel 1e-9 rather than 1e-12.
    assert t_ppf(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-9, abs=1e-12)
    assert t_ppf(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("df", [1.0, 2.7, 9.0, 57.3])
@pytest.mark.parametrize("q", [0.01, 0.3, 0.9, 0.975])
def test_t_ppf_inverts_the_cdf(q, df):
    assert t_cdf(t_ppf(q, df), df) == pytest.approx(q, abs=1e-13)


def test_t_ppf_normal_limit_and_errors():
    assert t_ppf(0.975, math.inf) == pytest.approx(1.959963984540054, abs=1e-12)
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError):
            t_ppf(bad, 3)
    with pytest.raises(ValueError):
        t_ppf(0.9, 0)


def test_welch_interval_by_hand():
    # the integer-df case above: diff -3, se sqrt(2/3), df 4; t_{0.975, 4} = 2.776445 (table)
    r = welch_t_test([1, 2, 3], [4, 5, 6])
    assert r.se == pytest.approx(math.sqrt(2 / 3), rel=1e-14)
    lo, hi = r.ci(0.95)
    assert lo == pytest.approx(-3 - 2.776445 * math.sqrt(2 / 3), abs=1e-6)
    assert hi == pytest.approx(-3 + 2.776445 * math.sqrt(2 / 3), abs=1e-6)
    # the 95% interval excludes 0 exactly when p < 0.05 (here p is 0.0132...)
    assert r.p < 0.05 and hi < 0
    lo99, hi99 = r.ci(0.99)  # t_{0.995, 4} = 4.604095
    assert hi99 == pytest.approx(-3 + 4.604095 * math.sqrt(2 / 3), abs=1e-6) and lo99 < lo
    assert welch_t_test([2.0, 2.0], [1.0, 1.0]).ci() == (1.0, 1.0)  # no spread: a point


def test_welch_interval_fractional_df():
    a, b = [10.0, 12.0], [1.0, 2.0, 6.0]
    r = welch_t_test(a, b)
    lo, hi = r.ci(0.95)
    half = (hi - lo) / 2
    assert (lo + hi) / 2 == pytest.approx(8.0, rel=1e-12)
    # the half-width is the t quantile at the Welch df times the standard error
    assert half / math.sqrt(10 / 3) == pytest.approx(t_ppf(0.975, r.df), rel=1e-12)
    assert t_two_sided_p(half / math.sqrt(10 / 3), r.df) == pytest.approx(0.05, abs=1e-12)


# --------------------------------------------------------------------------- Holm


def test_holm_by_hand():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> kept at 0.06: monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # capped at 1; one test is its own family
    assert holm([0.4, 0.5, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm([0.3]) == [0.3] and holm([]) == []
    # an untestable comparison is skipped and does not enlarge the family
    assert holm([0.02, None, 0.01]) == pytest.approx([0.02, None, 0.02])
    # ties: 0.01 and 0.01 -> 3 * 0.01 and 2 * 0.01, raised to the running maximum 0.03
    assert holm([0.01, 0.01, 0.2]) == pytest.approx([0.03, 0.03, 0.2])


def test_holm_never_below_the_raw_p_and_keeps_the_order():
    ps = [0.0001, 0.2, 0.03, 0.049, 0.5, 0.011]
    adj = holm(ps)
    assert all(a >= p for a, p in zip(adj, ps))
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    assert [adj[i] for i in order] == sorted(adj)


def _t2_quantile(q: float) -> float:
    """Student-t quantile for df = 2 in closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    u = 2 * q - 1
    return math.copysign(math.sqrt(2 * u * u / (1 - u * u)), u)


def test_paired_t_by_hand():
    """Differences 0.01, 0.03, 0.02: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 3.4641 on 2 df,
    two-sided p = 1 - t / sqrt(2 + t^2) = 0.0742 (the df = 2 CDF)."""
    base = [2.50, 2.40, 2.60]
    arm = [2.51, 2.43, 2.62]
    r = paired_t_test(arm, base)
    t = 0.02 / (0.01 / math.sqrt(3))
    assert (r.n, r.df) == (3, 2.0)
    assert r.diff == pytest.approx(0.02, abs=1e-12) and r.sd == pytest.approx(0.01, rel=1e-9)
    assert r.t == pytest.approx(t, rel=1e-9) and r.t == pytest.approx(3.4641, abs=1e-4)
    assert r.p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9) and r.p == pytest.approx(0.0742, abs=1e-4)
    half = _t2_quantile(0.975) * 0.01 / math.sqrt(3)  # t_{0.975, 2} = 4.302653
    assert _t2_quantile(0.975) == pytest.approx(4.302653, abs=1e-6)
    lo, hi = r.ci(0.95)
    assert lo == pytest.approx(0.02 - half, abs=1e-9) and hi == pytest.approx(0.02 + half, abs=1e-9)
    # the same numbers unpaired: the seed-to-seed spread (0.1) swamps the 0.02 shift
    assert welch_t_test(arm, base).p > 0.7


def test_paired_t_pairs_only_complete_pairs_and_edge_cases():
    # a missing or non-finite value drops its pair (not its neighbour's)
    r = paired_t_test([1.0, None, 3.0, float("nan"), 5.5], [0.0, 1.0, 2.0, 2.0, 4.0])
    assert r.n == 3 and r.diff == pytest.approx((1 + 1 + 1.5) / 3)
    assert paired_t_test([1.0, 2.0], [0.0, None]) is None  # one pair: no spread to test against
    same = paired_t_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])  # every difference 0.5, sd 0
    assert (same.p, same.ci()) == (0.0, (0.5, 0.5)) and same.t == math.inf
    zero = paired_t_test([1.0, 2.0], [1.0, 2.0])
    assert (zero.t, zero.p) == (0.0, 1.0)


def test_min_detectable_effect_by_hand():
    """(t_{0.975, n-1} + t_{0.8, n-1}) * sd / sqrt(n); for n = 3 both quantiles have df = 2 closed forms."""
    t975, t80 = _t2_quantile(0.975), _t2_quantile(0.8)
    assert t80 == pytest.approx(math.sqrt(1.125), abs=1e-12)  # u = 0.6: t^2 = 2 * 0.36 / 0.64
    assert min_detectable_effect(0.01, 3) == pytest.approx((t975 + t80) * 0.01 / math.sqrt(3), rel=1e-9)
    assert min_detectable_effect(0.01, 3) == pytest.approx(0.030965, abs=1e-6)
    # many pairs: the normal approximation (z_{0.975} + z_{0.8}) * sd / sqrt(n)
    assert min_detectable_effect(1.0, 100_000) == pytest.approx((1.959964 + 0.841621) / math.sqrt(100_000), rel=1e-4)
    assert min_detectable_effect(0.02, 5) == pytest.approx(2 * min_detectable_effect(0.01, 5), rel=1e-12)
    with pytest.raises(ValueError):
        min_detectable_effect(0.01, 1)
