"""The one token bucket of the control plane (etun/ratelimit.py): full at the start, refilled at its rate, capped at its burst."""

import time

import pytest

from etun.ratelimit import TokenBucket


def takes(bucket: TokenBucket, now: float, tries: int = 1000) -> int:
    return sum(bucket.take(now) for _ in range(tries))


def test_a_new_bucket_holds_one_seconds_worth_and_then_refuses():
    bucket = TokenBucket(20, now=0.0)
    assert takes(bucket, 0.0) == 20


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst():
    bucket = TokenBucket(4, burst=3, now=0.0)            # times in binary fractions: exact sums
    assert takes(bucket, 0.0) == 3
    assert takes(bucket, 0.625) == 2                    # 2.5 tokens back: two whole ones
    assert takes(bucket, 0.75) == 1                     # the half left over, and 0.5 more
    assert takes(bucket, 100.0) == 3                    # a long pause refills to the burst only


@pytest.mark.parametrize("rate,burst,per_s", [(10 / 1000, 10, 10), (0.5 / 1000, 2, 0.5)])
def test_the_same_class_counts_in_milliseconds_when_the_caller_does(rate, burst, per_s):
    bucket = TokenBucket(rate, burst, now=0)
    assert takes(bucket, 0) == burst
    assert takes(bucket, 10_000) == min(burst, int(10 * per_s))


def test_without_a_clock_it_reads_time_monotonic(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    bucket = TokenBucket(4)
    assert sum(bucket.take() for _ in range(10)) == 4
    clock[0] += 0.5
    assert sum(bucket.take() for _ in range(10)) == 2
