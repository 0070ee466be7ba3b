"""The token buckets behind the API's rate limit, on a fake clock."""

from __future__ import annotations

import pytest

from inboxlens.web.api.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_steady_rate():
    clock = Clock()
    limiter = RateLimiter(60, 3, clock=clock)  # one a second, three at once
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.take("a") == pytest.approx(0.5)  # a refused request takes nothing
    clock.now += 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0


def test_keys_have_their_own_buckets():
    limiter = RateLimiter(1, 1, clock=Clock())
    assert limiter.take("token:1") == 0.0
    assert limiter.take("token:1") == pytest.approx(60.0)
    assert limiter.take("token:2") == 0.0


def test_a_bucket_never_holds_more_than_the_burst():
    clock = Clock()
    limiter = RateLimiter(60, 2, clock=clock)
    limiter.take("a")
    clock.now += 3600
    assert [limiter.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_idle_buckets_are_dropped_and_memory_is_bounded():
    clock = Clock()
    limiter = RateLimiter(60, 2, max_keys=100, clock=clock)
    for i in range(1000):
        limiter.take(f"k{i}")
    assert len(limiter) == 100  # the least recently used went first
    clock.now += 10  # everyone refilled: a full bucket is the same as none
    limiter.take("fresh")
    assert len(limiter) == 1


def test_a_full_bucket_dropped_answers_like_before():
    clock = Clock()
    limiter = RateLimiter(60, 1, max_keys=1, clock=clock)
    assert limiter.take("a") == 0.0
    assert limiter.take("b") == 0.0  # evicts a: a's next request starts with a full bucket
    assert limiter.take("a") == 0.0
