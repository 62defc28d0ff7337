"""`etun bench`'s loops at every level and frame size run and count frames.

`etun bench`'s loops at every level and frame size, including the 9000-byte frames whose
reassembly slots are few: each case runs and counts frames (the rates themselves are for
`make bench`, never asserted)."""

import pytest

from etun import _fast, bench


@pytest.mark.parametrize("level", bench.LEVEL_ORDER)
@pytest.mark.parametrize("size", bench.FRAME_SIZES)
def test_every_case_of_etun_bench_runs(level, size):
    r = bench.measure(_fast.LEVELS[level], size, 0.01)
    assert r["seal"]["frames_per_s"] > 0 and r["open"]["frames_per_s"] > 0


def test_the_bridge_and_trunk_cases_run():
    assert bench.measure_bridge(0.005)["open"]["with_frames_per_s"] > 0
    assert bench.measure_trunk(0.005)["seal"]["with_frames_per_s"] > 0
