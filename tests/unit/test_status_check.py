"""`etun status --check` against a real control socket, one case per way it decides.

`etun status --check` (keepalived's track_script, etun/status.py): the real function against a real
control socket (etun.control.ControlServer, served in a thread as the daemon serves it), one case per
way it decides: the daemon answers and its datapath threads turn, no daemon, a socket nobody serves,
a daemon that does not answer, a thread that stopped turning."""

import select
import socket
import threading
import time

import pytest

from etun import status
from etun.control import ControlServer

QUICK_S = 0.5                   # a check that finds no daemon says so at once, well within keepalived's timeout


def write_config(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[lan]\ninterface = "eth1"\n[tunnel]\npeer = "198.19.2.1:5555"\n'
                    f'[security]\nkey_file = "{tmp_path}/site.key"\n'
                    f'[control]\nsocket = "{tmp_path}/run/etun.sock"\n')
    return path


class Daemon:
    """The daemon's control loop, as etun/daemon.py runs it, answering `status` with the loop
    counts of its two datapath threads: a turning thread counts ten a second (as an idle pump
    does), a stalled one keeps its count."""

    def __init__(self, path, turning=("tx", "rx"), role="active"):
        self.turning, self.role = turning, role
        self.server = ControlServer(path, {"status": self.handle_status})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve)

    def handle_status(self, request, client) -> dict:
        ticks = int(time.monotonic() * 10)
        return {"ha": {"role": self.role},
                "pumps": {f"{p}_loops": ticks if p in self.turning else 1234 for p in ("tx", "rx")}}

    def serve(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select(self.server.fds(), [], [], 0.05)
            self.server.handle(set(ready))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.server.close()


def run_check(config, capsys) -> tuple[int, str, float]:
    t0 = time.monotonic()
    rc = status.check(config)
    took = time.monotonic() - t0
    out = capsys.readouterr()
    assert out.out == ""
    return rc, out.err.strip(), took


@pytest.mark.parametrize("role", ["active", "standby"])
def test_the_check_passes_while_the_daemon_answers_and_both_datapath_threads_turn(tmp_path, capsys, role):
    config = write_config(tmp_path)
    with Daemon(tmp_path / "run" / "etun.sock", role=role):
        rc, err, took = run_check(config, capsys)
    assert (rc, err) == (0, "")
    assert took >= status.CHECK_INTERVAL_S          # two looks, that far apart


def test_the_check_fails_at_once_when_no_daemon_runs(tmp_path, capsys):
    config = write_config(tmp_path)
    rc, err, took = run_check(config, capsys)
    assert rc == 1 and took < QUICK_S, took
    assert err == f"etun: no etun running for this site (no control socket at {tmp_path}/run/etun.sock)"


def test_the_check_fails_at_once_when_the_socket_is_left_but_nobody_serves_it(tmp_path, capsys):
    config = write_config(tmp_path)
    (tmp_path / "run").mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "run" / "etun.sock"))       # bound, never listening: a crashed daemon's file
    try:
        rc, err, took = run_check(config, capsys)
    finally:
        dead.close()
    assert rc == 1 and took < QUICK_S, took
    assert err == f"etun: no etun running for this site ({tmp_path}/run/etun.sock is not answering)"


def test_the_check_fails_when_the_daemon_takes_the_connection_but_never_answers(tmp_path, capsys, monkeypatch):
    # A wedged control loop: the kernel accepts the connection into the backlog, nobody reads.
    monkeypatch.setattr(status, "STATUS_TIMEOUT_S", 0.5)
    config = write_config(tmp_path)
    (tmp_path / "run").mkdir()
    wedged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wedged.bind(str(tmp_path / "run" / "etun.sock"))
    wedged.listen(4)
    try:
        rc, err, took = run_check(config, capsys)
    finally:
        wedged.close()
    assert rc == 1 and took < 0.5 + QUICK_S, took
    assert err == f"etun: the daemon at {tmp_path}/run/etun.sock did not answer within 0.5 s"


@pytest.mark.parametrize("turning,stuck", [
    (("tx",), "the tunnel → LAN datapath thread stopped turning"),
    (("rx",), "the LAN → tunnel datapath thread stopped turning"),
    ((), "the LAN → tunnel and tunnel → LAN datapath threads stopped turning"),
], ids=["rx-stalled", "tx-stalled", "both-stalled"])
def test_the_check_fails_when_a_datapath_thread_stopped_turning_even_on_a_standby(tmp_path, capsys, turning, stuck):
    config = write_config(tmp_path)
    with Daemon(tmp_path / "run" / "etun.sock", turning=turning, role="standby"):
        rc, err, took = run_check(config, capsys)
    assert (rc, err) == (1, f"etun: {stuck}")
