"""Batching policies against a simulated device with controllable latency (tests/batchsim.py).

Simulated time makes these deterministic: the same policy code as the pipeline runs,
only the clock and the device are fake. The real-model behaviour is in bench/stream.py.
"""
from __future__ import annotations

import pytest

from batchsim import linear_device, simulate
from edgesdk.errors import ConfigError
from edgesdk.streaming.batching import (AdaptiveBatching, FixedBatching, LatencyCurve, NoBatching, QueueView,
                                        make_policy)

# t(b) = 10 + 4b ms: batch 1 -> 14 ms (71 fps), batch 8 -> 42 ms (190 fps)
DEVICE = linear_device(10, 4)


def test_none_sends_every_frame_alone():
    r = simulate(NoBatching(), DEVICE, sources=2, fps=10, seconds=5)
    assert set(r.batches) == {1}
    assert r.throughput == pytest.approx(20, rel=0.05)


def test_fixed_waits_for_a_full_batch_and_breaks_latency_at_low_load():
    r = simulate(FixedBatching(8), DEVICE, sources=2, fps=10, seconds=10)
    sizes = dict(r.batches)
    assert max(sizes, key=sizes.get) == 8 and sizes.get(8, 0) >= sum(sizes.values()) - 1  # only the last is short
    # the first frame of each batch waits for 7 more at 20 fps = 350 ms
    assert r.p99 > 0.3


def test_fixed_with_max_wait_sends_partial_batches():
    r = simulate(FixedBatching(8, max_wait_s=0.02), DEVICE, sources=2, fps=10, seconds=10)
    assert max(r.batches) < 8
    # a frame waits at most max_wait, then the batch runs (<= 8 frames: 42 ms) plus host time
    assert r.p99 < 0.02 + 0.045


@pytest.mark.parametrize("sources,fps", [(2, 10), (4, 30), (8, 30), (8, 60)])
def test_adaptive_holds_the_slo_from_light_load_to_overload(sources, fps):
    slo = 0.1
    adaptive = simulate(AdaptiveBatching(slo), DEVICE, sources=sources, fps=fps, seconds=20)
    assert adaptive.p99 <= slo
    fixed = simulate(FixedBatching(16), DEVICE, sources=sources, fps=fps, seconds=20)
    assert fixed.p99 > slo  # where a fixed batch breaks the target
    if sources * fps <= 120:  # the device keeps up: nothing may be lost
        assert adaptive.throughput == pytest.approx(sources * fps, rel=0.03)
        assert not adaptive.drops


def test_adaptive_batches_more_under_load_and_reaches_fixed_throughput_when_overloaded():
    light = simulate(AdaptiveBatching(0.25), DEVICE, sources=2, fps=10, seconds=20)
    heavy = simulate(AdaptiveBatching(0.25), DEVICE, sources=8, fps=60, seconds=20)
    assert heavy.mean_batch > light.mean_batch + 2
    best_fixed = max(simulate(FixedBatching(n), DEVICE, sources=8, fps=60, seconds=20).throughput
                     for n in (1, 2, 4, 8, 16))
    assert heavy.throughput >= 0.9 * best_fixed
    assert heavy.p99 <= 0.25


def test_adaptive_respects_the_batch_limit():
    pol = AdaptiveBatching(0.5, max_batch=16)
    pol.limit(4)  # e.g. the profile's max_batch
    r = simulate(pol, DEVICE, sources=8, fps=60, seconds=10)
    assert max(r.batches) <= 4
    assert 4 in r.batches


def test_adaptive_backs_off_when_the_device_slows_down():
    """Halfway through, the device becomes 3x slower (thermal throttling, another process):
    latency is violated briefly, the policy learns the new curve and meets the SLO again."""
    slo = 0.15

    def device(b, t):
        base = (10 + 4 * b) / 1000.0
        return base * (3.0 if t > 10.0 else 1.0)

    pol = AdaptiveBatching(slo)
    r = simulate(pol, device, sources=4, fps=30, seconds=25, warmup=13)  # measure after the change settled
    assert r.p99 <= slo
    assert pol.violations >= 1  # it did notice
    assert pol.device.predict(4) > 3 * (10 + 16) / 1000 * 0.8  # and it learned the slower curve


def test_adaptive_drains_a_lossless_backlog_at_best_throughput():
    """A file read faster than the model runs: every frame must be processed; latency is
    lost anyway, so the policy batches for throughput instead of sending single frames."""
    r = simulate(AdaptiveBatching(0.05), DEVICE, sources=2, fps=200, seconds=5, warmup=1, capacity=None,
                 live=False)
    assert not r.drops
    assert r.mean_batch > 8


def test_latency_curve_interpolates_extrapolates_and_forgets():
    c = LatencyCurve(alpha=1.0, memory=5)
    assert c.predict(1) is None
    c.observe(2, 0.020)
    assert c.predict(4) == pytest.approx(0.040)  # one size seen: no batching gain assumed
    c.observe(6, 0.040)
    assert c.predict(4) == pytest.approx(0.030)  # between seen sizes: interpolated
    a, slope = c.fit()
    assert slope == pytest.approx(0.005) and a == pytest.approx(0.010)
    assert c.predict(10) == pytest.approx(0.060)  # beyond: the fitted line
    for _ in range(6):
        c.observe(6, 0.040)
    assert 2 not in c.points()  # not seen for `memory` observations: forgotten


def test_adaptive_measures_batch_one_first():
    pol = AdaptiveBatching(0.05)
    plan = pol.plan(QueueView(now=10.0, queued=5, oldest=9.99, arrival_rate=100, busy_until=10.0))
    assert plan.size == 1 and plan.deadline == 10.0


def test_make_policy_settings_and_errors():
    assert isinstance(make_policy("none"), NoBatching)
    fixed = make_policy("fixed", batch=4, max_wait_ms=10)
    assert isinstance(fixed, FixedBatching) and fixed.max_batch == 4 and fixed.max_wait_s == pytest.approx(0.01)
    adaptive = make_policy("adaptive", batch=8, slo_ms=50)
    assert isinstance(adaptive, AdaptiveBatching) and adaptive.max_batch == 8 and adaptive.slo_s == 0.05
    with pytest.raises(ConfigError, match="--slo-ms"):
        make_policy("adaptive")
    with pytest.raises(ConfigError, match="--batch N"):
        make_policy("fixed")
    with pytest.raises(ConfigError, match="fixed or adaptive"):
        make_policy("none", batch=4)
    with pytest.raises(ConfigError, match="one of"):
        make_policy("greedy")
    with pytest.raises(ConfigError, match=">= 1"):
        make_policy("fixed", batch=0)
    with pytest.raises(ConfigError, match="max-wait"):
        make_policy("fixed", batch=2, max_wait_ms=-1)


def test_adaptive_keeps_batches_small_where_batching_costs_throughput():
    """Some models run slower per frame in big batches on a CPU (cache): t(b) = 7 * b^1.3 ms.
    Overloaded, adaptive must not chase big batches: it stays near the best fixed size."""
    def device(b, _t):
        return 0.007 * b ** 1.3

    fixed = {n: simulate(FixedBatching(n), device, sources=4, fps=60, seconds=15).throughput for n in (1, 2, 4, 8)}
    assert max(fixed, key=fixed.get) == 1  # batching really hurts here
    pol = AdaptiveBatching(0.25)
    r = simulate(pol, device, sources=4, fps=60, seconds=15)
    assert r.throughput >= 0.9 * max(fixed.values())
    assert r.p99 <= 0.25
    assert r.mean_batch < 2.5


def test_adaptive_on_a_noisy_device_plans_with_the_jitter_it_sees():
    """Batch times vary +-25 % (lognormal; a device shared with other work): adaptive learns
    the spread, plans with it, and still meets the SLO at near the best fixed throughput."""
    import numpy as np

    def noisy(seed):
        rng = np.random.default_rng(seed)
        return lambda b, _t: (6 + 5.5 * b) / 1000 * rng.lognormal(0, 0.25)

    fixed = max(simulate(FixedBatching(n), noisy(n), sources=4, fps=90, seconds=20).throughput for n in (2, 4, 8, 16))
    pol = AdaptiveBatching(0.2)
    r = simulate(pol, noisy(0), sources=4, fps=90, seconds=20)
    assert r.p99 <= 0.2
    assert r.throughput >= 0.9 * fixed
    assert pol.jitter > 1.2  # it noticed the spread


def _warm(slo_s: float = 0.2, device_s: float = 0.03) -> AdaptiveBatching:
    """An adaptive policy that has measured batch 1 (device_s) and 2 a few times."""
    pol = AdaptiveBatching(slo_s, max_batch=2)
    for _ in range(4):
        pol.observe(1, device_s, 0.002, [0.05], 0.0)
        pol.observe(2, 2 * device_s, 0.004, [0.05], 0.0)
    return pol


def test_the_stale_margin_is_learned_from_how_late_batches_came_out():
    pol = _warm()
    assert pol.keep_within is None  # until enough batches were seen: the planning margin
    for i in range(40):  # results came out 20-59 ms later than expected
        pol.observe(1, 0.03, 0.002, [0.05], 0.0, late_s=0.020 + i * 0.001)
    assert pol.keep_within == pytest.approx(0.9 * 0.2 - 0.0586, abs=1e-3)  # SLO target less the p99 lateness
    view = QueueView(now=10.0, queued=8, oldest=9.8, arrival_rate=120.0, busy_until=10.0, lanes=8,
                     timestamps=tuple(9.8 + 0.025 * k for k in range(8)), next_fair=9.8)
    plan = pol.plan(view)
    assert plan.expect_done is not None and plan.expect_done > 10.0
    assert plan.stale_before == pytest.approx(plan.expect_done - pol.keep_within)
    for _ in range(200):  # a device that got much slower than expected: the margin grows, bounded
        pol.observe(1, 0.03, 0.002, [0.05], 0.0, late_s=0.5)
    assert pol.keep_within == pytest.approx(0.5 * 0.2)


def test_a_source_whose_frames_are_all_too_old_sits_the_batch_out_not_the_batch():
    """Overload: the source whose turn it is holds only an old frame; others have fresh ones.
    Its old frame is dropped (the batch is not made late for it). With nothing fresh it is
    dropped too, as a frame captured now would make the SLO: no frame is run knowingly late."""
    pol = _warm()
    for _ in range(40):
        pol.observe(1, 0.03, 0.002, [0.05], 0.0, late_s=0.01)
    old, fresh = 10.0 - 0.19, 10.0 - 0.005
    view = QueueView(now=10.0, queued=2, oldest=old, arrival_rate=200.0, busy_until=10.0, lanes=2,
                     timestamps=(old, fresh), next_fair=old)
    plan = pol.plan(view)
    assert old < plan.stale_before <= fresh
    only_old = QueueView(now=10.0, queued=1, oldest=old, arrival_rate=200.0, busy_until=10.0, lanes=1,
                         timestamps=(old,), next_fair=old)
    assert pol.plan(only_old).stale_before > old


def test_a_device_too_slow_for_the_slo_still_runs_the_newest_frame_late():
    """Where not even a frame captured now would make the SLO, frames still run (late, counted as
    such): dropping them all would leave no results and no measurements of the engine."""
    pol = _warm(slo_s=0.2, device_s=0.25)
    for _ in range(40):
        pol.observe(1, 0.25, 0.002, [0.3], 0.0, late_s=0.01)
    newest = 10.0 - 0.01
    view = QueueView(now=10.0, queued=2, oldest=9.9, arrival_rate=20.0, busy_until=10.0, lanes=1,
                     timestamps=(9.9, newest), next_fair=newest)
    plan = pol.plan(view)
    assert plan.stale_before <= newest and plan.size >= 1


def test_the_newest_frame_that_makes_it_alone_goes_alone_not_late_in_a_batch():
    """Every queued frame is too old for the batch size planned, the newest is in time alone:
    a batch of one runs it, rather than a batch that makes it late."""
    pol = _warm_linear(max_batch=3)
    for _ in range(40):
        pol.observe(1, 0.016, 0.0005, [0.05], 0.0, late_s=0.01)
    stamps = tuple(10.0 - 0.15 + 0.001 * k for k in range(6))  # 145-150 ms old: each in time alone
    view = QueueView(now=10.0, queued=6, oldest=stamps[0], arrival_rate=400.0, busy_until=10.0, lanes=6,
                     timestamps=stamps, next_fair=stamps[0])
    done3 = pol._done_at(10.0, 3)  # about 47 ms: 192 ms for the newest, over the 170 ms kept
    size, cutoff, done = pol._all_stale(view, stamps[-1], 10.0, 3, done3 - 0.17, done3)
    assert (size, done) == (1, pol._done_at(10.0, 1))
    assert cutoff == pytest.approx(done - 0.17) and cutoff <= stamps[0]


def test_the_margin_quantile_follows_the_share_of_frames_that_missed_the_slo():
    pol = _warm()
    start = pol.keep_q
    for _ in range(300):  # 2 of 10 frames late: far above the goal
        pol.observe(1, 0.03, 0.002, [0.05] * 8 + [0.3, 0.3], 0.0, late_s=0.01)
    assert pol.keep_q == pytest.approx(start)  # at the p99 already: never beyond
    for _ in range(3000):  # none late: it relaxes, never below the p90
        pol.observe(1, 0.03, 0.002, [0.05] * 10, 0.0, late_s=0.01)
    assert pol.keep_q == pytest.approx(0.9)
    assert pol.describe()["keep_quantile"] == pytest.approx(0.9)
    for _ in range(100):  # late again: back up
        pol.observe(1, 0.03, 0.002, [0.05] * 8 + [0.3, 0.3], 0.0, late_s=0.01)
    assert 0.9 < pol.keep_q <= 0.99


def _warm_linear(max_batch: int = 3) -> AdaptiveBatching:
    """An adaptive policy that has measured t(b) = 1 + 15b ms for b = 1..max_batch (little gain
    from batching: about 65 fps at any size, as PP-OCRv4 det at 320x320 on this box)."""
    pol = AdaptiveBatching(0.2, max_batch=max_batch)
    for _ in range(4):
        for b in range(1, max_batch + 1):
            pol.observe(b, (1 + 15 * b) / 1000, 0.0005 * b, [0.05], 0.0)
    return pol


@pytest.mark.parametrize("rate, may_wait", [(20.0, True), (64.0, False)])
def test_a_partial_batch_waits_for_frames_only_while_the_engine_can_afford_to_idle(rate, may_wait):
    """The engine is free and one fresh frame is queued; the batcher wants a bigger batch.
    At light load it may wait for more frames (the engine has time to spare); near its
    capacity, waiting while it idles would lose frames that arrive meanwhile: it goes now."""
    pol = _warm_linear()
    view = QueueView(now=10.0, queued=1, oldest=9.995, arrival_rate=rate, busy_until=10.0, lanes=1,
                     timestamps=(9.995,), next_fair=9.995)
    plan = pol.plan(view)
    assert plan.not_before is None
    if may_wait:
        assert plan.size > 1 and plan.deadline > view.now + 0.02
    else:
        assert plan.deadline <= view.now + 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_capacity_a_noisy_device_is_kept_busy_and_loses_nothing(seed):
    """58 fps into a device of t(b) = 1 + 15b ms +-20 % (about 65 fps at any size): holding
    partial batches while the device idled cost frames (11-16 of 1160 went stale here, and
    p99 was 95-120 ms); going with the frames there are keeps up, and sooner."""
    import numpy as np

    rng = np.random.default_rng(seed)
    r = simulate(AdaptiveBatching(0.2), lambda b, _t: (1 + 15 * b) / 1000 * rng.lognormal(0, 0.2), sources=1,
                 fps=58, seconds=20)
    assert not r.drops and r.throughput >= 0.99 * 58, (r.throughput, dict(r.batches), dict(r.drops))
    assert r.p99 <= 0.2
