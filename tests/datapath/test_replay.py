"""The RFC 6479 replay window, case by numbered case, in the style of the kernel WireGuard table."""

import pytest

from etun import _fast

W = _fast.REPLAY_WINDOW_SIZE          # 4032 counters remembered behind the highest seen
BIG = 1_000_000
TOP = 2**64 - 1

# (counter, accepted?) in order, on one window. Each line states the rule it pins.
TABLE = [
    (0, True),                # 1  the first counter, even 0, is accepted
    (1, True),                # 2  next in line
    (1, False),               # 3  a duplicate is a replay
    (9, True),                # 4  a gap is fine
    (8, True),                # 5  late but inside the window
    (7, True),                # 6  ...
    (7, False),               # 7  ... but only once
    (W + 9, True),            # 8  jump: top = W + 9
    (10, True),               # 9  top - 10 = W - 1: the oldest counter still inside
    (10, False),              # 10 and only once
    (9, False),               # 11 top - 9 = W: just outside (also seen before)
    (2, False),               # 12 far outside, never seen: still too old
    (W + 8, True),            # 13 just below top
    (W + 10, True),           # 14 just above top
    (BIG, True),              # 15 a jump far beyond the window clears every block
    (BIG - W + 1, True),      # 16 oldest inside after the jump: no stale bit from before
    (BIG - W, False),         # 17 just outside
    (BIG - 1, True),          # 18
    (BIG - 1, False),         # 19
    (BIG + 64, True),         # 20 a whole-block step
    (BIG + 63, True),         # 21 the word just left behind is still valid
    (BIG, False),             # 22 seen at 15
    (TOP - 1, True),          # 23 the counter space ends at 2**64 - 1
    (TOP, True),              # 24
    (TOP, False),             # 25
    (TOP - 2, True),          # 26
    (BIG + 65, False),        # 27 far behind the top now
]


def test_replay_window_follows_the_numbered_table():
    window = _fast.ReplayWindow()
    for number, (counter, accepted) in enumerate(TABLE, start=1):
        assert window.accept(counter) is accepted, f"case {number}: counter {counter}"


def test_replay_window_holds_at_least_2048_counters():
    assert W >= 2048


def test_replay_window_clears_a_reused_word_when_it_slides_a_full_turn():
    # 100 and 100 + 4096 share bit 36 of physical word 1 of the 64-word ring: sliding onto that
    # word must clear it, or the new counter would look like a replay of the old one.
    window = _fast.ReplayWindow()
    assert window.accept(100)
    assert window.accept(100 + 64 * 64)
    assert not window.accept(100 + 64 * 64)


@pytest.mark.parametrize("step", [1, 63, 64, 65, 4031, 4032, 4095, 4096, 4097, 10**9])
def test_replay_window_accepts_each_counter_once_for_any_stride(step):
    window = _fast.ReplayWindow()
    counters = [i * step for i in range(200)]
    assert all(window.accept(c) for c in counters)
    assert not any(window.accept(c) for c in counters)


def test_replay_window_accepts_any_order_inside_the_window_exactly_once():
    import random

    rng = random.Random(6479)
    counters = list(range(W))
    rng.shuffle(counters)
    window = _fast.ReplayWindow()
    assert all(window.accept(c) for c in counters)
    assert not any(window.accept(c) for c in range(W))


def test_replay_window_reset_forgets_everything():
    window = _fast.ReplayWindow()
    assert window.accept(5)
    window.reset()
    assert window.accept(5)
