"""The sd_notify protocol as etun speaks it (etun/notify.py), on a real datagram socket.

The sd_notify protocol as etun speaks it (etun/notify.py): message formatting, socket addresses
(paths and the abstract namespace), which watchdog is ours, and keep-alives only while every
datapath thread moves. The socket is a real Unix datagram socket the test binds."""

import os
import socket

import pytest

from etun import notify

NAMES = ("tx", "rx")
SECOND_US = 1_000_000


@pytest.mark.parametrize("fields,expected", [
    ((("READY", 1),), b"READY=1"),
    ((("READY", 1), ("STATUS", "peer paris up at 198.19.2.1:5555")), b"READY=1\nSTATUS=peer paris up at 198.19.2.1:5555"),
    ((("STATUS", "two\nlines"),), b"STATUS=two lines"),                # a newline would start a new key
    ((("RELOADING", 1), ("MONOTONIC_USEC", 12345)), b"RELOADING=1\nMONOTONIC_USEC=12345"),
])
def test_messages_are_key_value_lines_and_a_value_never_spans_two(fields, expected):
    assert notify.format_message(*fields) == expected


@pytest.mark.parametrize("key", ["ready", "", "READY=1", "STA TUS"])
def test_a_key_that_is_not_an_upper_case_word_is_refused(key):
    with pytest.raises(ValueError):
        notify.format_message((key, 1))


@pytest.mark.parametrize("value,expected", [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@etun-test", "\0etun-test"),
    ("@", None),
    ("vsock:2:1234", None),
    ("relative/path", None),
])
def test_notify_socket_addresses_paths_and_the_abstract_namespace(value, expected):
    assert notify.socket_address(value) == expected


@pytest.fixture
def listener():
    """An abstract-namespace datagram socket, as systemd's notify socket is reached."""
    name = f"@etun-notify-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(2)
    yield name, sock
    sock.close()


def received(sock) -> list[bytes]:
    out = []
    sock.settimeout(0.05)
    try:
        while True:
            out.append(sock.recv(4096))
    except TimeoutError:
        return out


def test_ready_status_reloading_and_stopping_arrive_in_order_and_an_unchanged_status_is_not_resent(listener):
    name, sock = listener
    sd = notify.Systemd({"NOTIFY_SOCKET": name})
    assert sd.active and not sd.watchdog_us
    sd.ready("waiting for peer 198.19.2.1:5555")
    sd.status("waiting for peer 198.19.2.1:5555")
    sd.status("peer paris up at 198.19.2.1:5555")
    sd.reloading()
    sd.reloaded("peer paris up at 198.19.2.1:5555")
    sd.stopping()
    got = received(sock)
    assert got[0] == b"READY=1\nSTATUS=waiting for peer 198.19.2.1:5555"
    assert got[1] == b"STATUS=peer paris up at 198.19.2.1:5555"
    assert got[2].startswith(b"RELOADING=1\nMONOTONIC_USEC=") and got[2].endswith(b"\nSTATUS=reloading")
    assert got[3:] == [b"READY=1\nSTATUS=peer paris up at 198.19.2.1:5555", b"STOPPING=1\nSTATUS=stopping"]


def queued(sock) -> list[bytes]:
    """What was sent so far: a datagram sent on a local socket is queued by the time send() returns."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out


def test_without_notify_socket_every_call_does_nothing():
    sd = notify.Systemd({})
    assert not sd.active
    sd.ready("x")
    sd.watchdog((1, 1), NAMES)


def test_a_watchdog_for_another_process_is_not_ours_but_one_for_an_ancestor_is(listener):
    name, _ = listener
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"}
    assert notify.Systemd(env).watchdog_us == 2 * SECOND_US
    assert notify.Systemd(env | {"WATCHDOG_PID": str(os.getpid())}).watchdog_us == 2 * SECOND_US
    # The one-file binary: systemd started a boot loader, which started us.
    assert notify.Systemd(env | {"WATCHDOG_PID": str(os.getppid())}).watchdog_us == 2 * SECOND_US
    assert notify.Systemd(env | {"WATCHDOG_PID": "999999999"}).watchdog_us == 0
    assert notify.Systemd(env | {"WATCHDOG_USEC": "0"}).watchdog_us == 0


def test_keep_alives_go_every_half_interval_only_while_both_pumps_move(listener, etun_log):
    name, sock = listener
    sd = notify.Systemd({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": str(SECOND_US)})
    sent = []
    # (seconds, tx loops, rx loops) at each tick: both move, then rx stops for a while, then moves again.
    for at, beats in [(0, (1, 1)), (0.2, (3, 3)), (0.5, (6, 6)), (0.7, (8, 8)), (1.0, (10, 11)),
                      (1.5, (15, 11)), (1.7, (17, 11)), (2.5, (25, 11)), (2.7, (27, 12)), (3.2, (30, 13))]:
        sd.watchdog(beats, NAMES, 10 * SECOND_US + int(at * SECOND_US))
        if received(sock) == [b"WATCHDOG=1"]:
            sent.append(at)
    assert sent == [0, 0.5, 1.0, 2.7, 3.2]
    messages = [r.getMessage() for r in etun_log.records if "watchdog" in r.getMessage()]
    assert messages == ["watchdog keep-alive withheld: the rx thread makes no progress; systemd restarts etun if it "
                        "stays so for 1 s", "watchdog keep-alive resumed: the datapath moves again after 1.2 s"]


def test_the_watchdog_thread_feeds_while_the_beats_move_and_stops_when_told(listener):
    name, sock = listener
    sd = notify.Systemd({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"})
    counter = iter(range(10**6))
    sd.start_watchdog(lambda: (next(counter), next(counter)), NAMES)
    try:
        sock.settimeout(2)
        assert [sock.recv(64) for _ in range(4)] == [b"WATCHDOG=1"] * 4      # every 0.2 s, a fifth of a second apart
    finally:
        sd.stop_watchdog()
    received(sock)
    assert received(sock) == [] and sd.feeding is None


def test_without_a_watchdog_no_thread_starts(listener):
    sd = notify.Systemd({"NOTIFY_SOCKET": listener[0]})
    sd.start_watchdog(lambda: (1, 1), NAMES)
    assert sd.feeding is None


PUMP_IDLE_TURN_S = 0.1      # an idle pump turns at least this often (docs/MANUAL.md, "systemd")


@pytest.mark.parametrize("phase", [0.0, 0.1])
@pytest.mark.parametrize("wedged_at", [0.31, 0.49, 0.51, 0.69])
@pytest.mark.parametrize("last_turn_after", [0.0, PUMP_IDLE_TURN_S])
def test_a_thread_wedged_while_it_slept_earns_no_keep_alive_later_than_an_interval_and_a_tick_after_its_last_turn(
        listener, phase, wedged_at, last_turn_after):
    """The bound the end-to-end watchdog test allows (tests/e2e/test_production.py): a stall flag
    set while the rx thread sleeps stops it at its next turn, up to PUMP_IDLE_TURN_S later; the
    watchdog may answer turns made before the flag and that last turn, each with a keep-alive, and
    nothing after."""
    name, sock = listener
    sd = notify.Systemd({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": str(SECOND_US)})
    interval = 0.5
    last_turn = wedged_at + last_turn_after
    after = []
    for k in range(20):                                 # 4 s of watchdog ticks, 0.2 s apart
        at = phase + k * notify.WATCHDOG_TICK_S
        rx = int(min(at, wedged_at) * 100) + (at >= last_turn)      # a hundred turns a second, then one
        sd.watchdog((int(at * 100), rx), NAMES, 10 * SECOND_US + int(at * SECOND_US))
        if queued(sock) == [b"WATCHDOG=1"] and at > wedged_at:
            after.append(at)
    assert len(after) <= 2 and all(at - last_turn <= interval + notify.WATCHDOG_TICK_S for at in after), after
