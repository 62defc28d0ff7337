"""Property tests: no loss, duplication or reordering of packets yields a corrupted or duplicated frame."""

import collections

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etun import _fast

frames_strategy = st.lists(
    st.one_of(
        st.binary(min_size=14, max_size=120),
        st.binary(min_size=700, max_size=4000),
        st.sampled_from([1514, 1518, 9000]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    level=st.sampled_from([0, 1, 2]),
    frames=frames_strategy,
    copies=st.lists(st.integers(min_value=0, max_value=3), min_size=200, max_size=200),
    order=st.randoms(use_true_random=False),
    secret=st.binary(min_size=32, max_size=32),
)
def test_lost_duplicated_and_reordered_packets_never_corrupt_or_duplicate_a_frame(level, frames, copies, order,
                                                                                   secret):
    tx = _fast.Datapath(level)
    rx = _fast.Datapath(level)
    tx.set_send_session(secret)
    rx.set_recv_session(secret)

    sent = [tx.seal(f) for f in frames]
    wire = []
    complete = collections.Counter()
    k = 0
    for frame, datagrams in zip(frames, sent, strict=True):
        all_arrive = True
        for d in datagrams:
            n = copies[k % len(copies)]
            k += 1
            wire += [d] * n
            all_arrive &= n > 0
        if all_arrive:
            complete[frame] += 1
    order.shuffle(wire)

    delivered = collections.Counter()
    for d in wire:
        for ftype, frame in rx.open(d):
            assert ftype == _fast.TYPE_FRAME
            delivered[frame] += 1

    # Exactly the frames all of whose packets arrived, each once, byte for byte.
    assert delivered == complete
    c = rx.counters()["rx"]
    assert c["replay"] == len(wire) - len(set(wire))
    assert c["auth"] == c["malformed"] == c["frag_inconsistent"] == 0
