"""The RFC 6479 replay window, case by numbered case, in the style of the kernel WireGuard table."""

import pytest

from etun import _fast

W = _fast.REPLAY_WINDOW          # a counter may be up to 4032 behind the highest seen
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
    (10, True),               # 9  top - 10 = W - 1: inside
    (10, False),              # 10 and only once
    (9, False),               # 11 top - 9 = W: the oldest counter inside, but seen at 4
    (8, False),               # 12 top - 8 = W + 1: just outside (also seen before)
    (2, False),               # 13 far outside, never seen: still too old
    (W + 8, True),            # 14 just below top
    (W + 10, True),           # 15 just above top
    (12, True),               # 16 top - 12 = W - 2 after the step: still inside
    (BIG, True),              # 17 a jump far beyond the window clears every word
    (BIG - W, True),          # 18 exactly W behind: the oldest inside, no stale bit from before
    (BIG - W - 1, False),     # 19 one further: outside
    (BIG - 1, True),          # 20
    (BIG - 1, False),         # 21
    (BIG + 64, True),         # 22 a whole-word step
    (BIG + 63, True),         # 23 the word just left behind is still valid
    (BIG, False),             # 24 seen at 17
    (BIG + 64 - W, True),     # 25 exactly W behind the new top
    (TOP - 1, True),          # 26 the counter space ends at 2**64 - 1
    (TOP, True),              # 27
    (TOP, False),             # 28
    (TOP - 2, True),          # 29
    (TOP - W, True),          # 30 exactly W behind the very top
    (TOP - W - 1, False),     # 31
    (BIG + 65, False),        # 32 far behind the top now
]


def test_replay_window_follows_the_numbered_table():
    window = _fast.ReplayWindow()
    for number, (counter, accepted) in enumerate(TABLE, start=1):
        assert window.accept(counter) is accepted, f"case {number}: counter {counter}"


def test_replay_window_takes_a_counter_2048_behind_the_highest_as_reordering_not_replay():
    window = _fast.ReplayWindow()
    assert window.accept(BIG)
    assert all(window.accept(BIG - back) for back in (2048, 1, 1024, 2047))


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
    counters = list(range(W + 1))         # the top and the W counters behind it
    rng.shuffle(counters)
    window = _fast.ReplayWindow()
    # Whatever the order, every counter is within W of the highest one seen so far.
    assert all(window.accept(c) for c in counters)
    assert not any(window.accept(c) for c in range(W + 1))


def test_replay_window_reset_forgets_everything():
    window = _fast.ReplayWindow()
    assert window.accept(5)
    window.reset()
    assert window.accept(5)
