"""runtimes.timing.measure: counts, statistics, progress, time bound, bad input. No speed asserts."""
from __future__ import annotations

import numpy as np
import pytest

import runtimes
from runtimes import InputMismatchError
from runtimes.timing import LatencyStats, measure


@pytest.fixture
def add_one(tiny_models):
    with runtimes.load(tiny_models.add_one()) as rt:
        yield rt


def test_counts_statistics_and_progress(add_one):
    calls = []
    seen = []
    real_infer = add_one.infer
    add_one.infer = lambda feeds: (calls.append(1), real_infer(feeds))[1]
    stats = measure(add_one, np.zeros((4, 3, 4, 4), np.float32), warmup=3, iterations=40,
                    progress=lambda done, total: seen.append((done, total)))
    assert len(calls) == 43  # warmup + timed
    assert isinstance(stats, LatencyStats) and stats.count == 40 and stats.samples_ms.shape == (40,)
    assert stats.batch == 4
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p99 <= stats.samples_ms.max()
    assert stats.mean == pytest.approx(stats.samples_ms.mean())
    assert stats.throughput == pytest.approx(4 * 1000.0 / stats.mean)
    assert seen[-1] == (40, 40) and all(t == 40 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    d = stats.to_dict()
    assert d["count"] == 40 and d["p50_ms"] == stats.p50 and "samples_ms" not in d


def test_time_bound_run_keeps_going_and_reports_no_total(add_one):
    seen = []
    stats = measure(add_one, np.zeros((1, 3, 4, 4), np.float32), warmup=0, iterations=5, seconds=0.05,
                    progress=lambda done, total: seen.append(total))
    assert stats.count >= 5
    assert stats.samples_ms.sum() <= 1000 * 5  # sanity: milliseconds, not seconds or ns
    assert seen and all(t is None for t in seen)


def test_real_model_on_every_backend(cls_model, blazeface_model):
    for path, backend, x in [(cls_model, "onnxruntime", np.zeros((2, 3, 48, 192), np.float32)),
                             (cls_model, "openvino", np.zeros((2, 3, 48, 192), np.float32)),
                             (blazeface_model, "litert", np.zeros((2, 128, 128, 3), np.float32))]:
        if backend not in runtimes.available_backends():
            continue
        with runtimes.load(path, backend=backend) as rt:
            stats = measure(rt, x, warmup=1, iterations=3)
        assert stats.batch == 2 and stats.count == 3 and stats.p50 > 0


def test_bad_feed_fails_before_any_timing(add_one):
    seen = []
    with pytest.raises(InputMismatchError):
        measure(add_one, np.zeros((1, 3, 4, 4), np.float64), progress=lambda *a: seen.append(a))
    assert seen == []


@pytest.mark.parametrize("kwargs", [{"iterations": 0}, {"warmup": -1}, {"seconds": 0}])
def test_bad_arguments(add_one, kwargs):
    with pytest.raises(ValueError):
        measure(add_one, np.zeros((1, 3, 4, 4), np.float32), **kwargs)


def test_stats_from_samples():
    s = LatencyStats.from_samples(np.array([1.0, 2.0, 3.0, 4.0]), batch=8)
    assert s.p50 == 2.5 and s.min == 1.0 and s.mean == 2.5 and s.throughput == pytest.approx(3200.0)
    with pytest.raises(ValueError):
        LatencyStats.from_samples(np.array([]), batch=1)
