import numpy as np

from analysis import stats


def test_trend_exact_and_power():
    perfect = stats.trend_test([([1, 2, 3], [1, 2, 3])])
    assert perfect.rho == 1 and abs(perfect.p - 1 / 6) < 1e-12 and perfect.p_min == perfect.p
    two = stats.trend_test([([1, 2, 3, 4], [2, 3, 5, 9]), ([1, 2, 3, 4], [1, 4, 6, 8])])
    assert abs(two.p - 1 / 576) < 1e-12
    down = stats.trend_test([([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])])
    assert down.rho == -1 and down.p_opposite < 0.01 and down.p > 0.99
    assert stats.trend_test([([1, 1], [1, 2])]).n_groups == 0       # constant x: no information


def test_tost():
    t = stats.tost([0.01, -0.02, 0.015, 0.0, -0.01], margin=np.log(1.2))
    assert t.p_tost < 0.05 and not t.outside
    far = stats.tost([0.7, 0.8, 0.75], margin=np.log(1.2))
    assert far.outside and far.p_tost > 0.5
    assert np.isnan(stats.tost([0.1], 0.2).p_tost)


def test_welch_friedman_bootstrap():
    w = stats.welch([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert w.p_less < 0.01 and w.diff < 0 and w.ci90[1] < 0
    f = stats.friedman([[1, 2, 3], [1, 3, 2], [1, 2, 3], [1, 2, 3]], ["a", "b", "c"])
    assert f.mean_ranks["a"] == 1 and 0.6 < f.w <= 1
    tied = stats.friedman([[5, 5, 5], [5, 5, 5]], ["a", "b", "c"])
    assert tied.w == 0 and tied.p == 1
    lo, hi = stats.bootstrap_ci([1, 2, 3, 4, 5, 6, 7, 8])
    assert lo < 4.5 < hi
    assert np.isnan(stats.bootstrap_ci([1.0])[0])
