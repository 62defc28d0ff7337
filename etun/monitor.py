"""The privileged half of an etun that dropped root: re-reads root-only files, undoes root-only changes.

etun forks it after setup, before it becomes [run] user. The monitor keeps uid 0, so it may read
root's 0600 files and remove the control socket from root's directory as their owner, but holds
no capability (CAP_NET_ADMIN only while LRO must be switched back on at exit), so it may read
nobody else's. It never touches the network. Its one input is a socketpair to the daemon, on which it understands one
request, b"R": read the configuration file (the path fixed at start) and the key file that file
names, and answer with the bytes and the derived secrets. When the daemon goes, for whatever
reason, the socketpair reads end-of-file: the monitor undoes its list and exits.
"""

import base64
import json
import logging
import os
import pwd
import signal
import socket
import struct
import time

from etun import keys, privileges
from etun.config import load_config
from etun.errors import ConfigError, EtunError, KeyFileError, RuntimeFailure
from etun.privileges import CAP_NET_ADMIN

log = logging.getLogger("etun")

READ_TIMEOUT_S = 10.0           # a monitor that does not answer a reload in this time is broken
EXIT_WAIT_S = 5.0               # at exit, how long the daemon waits for the monitor's undo
FRAME = struct.Struct("!I")     # each answer: its length, then that many bytes of JSON
ANSWER_MAX = 64 << 20           # the largest answer read: a config of 65,534 rules per table fits
ERRORS = {"ConfigError": ConfigError, "KeyFileError": KeyFileError}


def read_site(path, data: bytes | None = None):
    """The configuration at `path` (its bytes `data` if read already) and the secrets of the key
    file it names (None at level none): what a reload needs."""
    config = load_config(path, data)
    return config, keys.load_site_secrets(config.security)


class LocalFiles:
    """Reads in this very process: etun kept root ([run] user = "root"), or never had it."""

    def __init__(self, path):
        self.path = path

    def read(self):
        return read_site(self.path)

    def close(self) -> None:
        pass


def _answer(path) -> dict:
    try:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        _, secrets = read_site(path, data)
    except EtunError as e:
        return {"error": e.message, "kind": type(e).__name__}
    answer = {"config": base64.b64encode(data).decode()}
    if secrets is not None:
        answer["secrets"] = {name: getattr(secrets, name).hex() for name in keys.SECRET_NAMES}
        answer["secrets"]["fingerprint"] = secrets.fingerprint
    return answer


def _serve(sock: socket.socket, path, undo: list, control_path, control_inode: int) -> None:
    """The monitor's life: answer reads until the daemon is gone, then undo."""
    try:
        while True:
            try:
                request = sock.recv(1)
            except OSError:
                break
            if request != b"R":
                break
            body = json.dumps(_answer(path)).encode()
            sock.sendall(FRAME.pack(len(body)) + body)
    finally:
        for action in reversed(undo):
            try:
                action()
            except OSError:
                pass
        try:
            if control_path is not None and os.stat(control_path).st_ino == control_inode:
                os.unlink(control_path)
        except OSError:
            pass


class Monitor:
    """The daemon's handle on its monitor: read() for a reload, close() at exit."""

    def __init__(self, path, undo: list, control_path, keep: set[int]):
        self.path = path
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control_inode = os.stat(control_path).st_ino if control_path is not None else 0
        pid = os.fork()
        if pid == 0:                                        # the monitor
            code = 0
            try:
                ours.close()
                # Only its socketpair: a copy of the TAP fd or the UDP socket would outlive the
                # daemon and keep the device and the port.
                keep_fd = theirs.fileno()
                os.closerange(3, keep_fd)
                os.closerange(keep_fd + 1, os.sysconf("SC_OPEN_MAX"))
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(sig, signal.SIG_IGN)      # it ends when the daemon ends, after its undo
                privileges.set_name("etun-monitor")
                privileges.drop(None, keep)
                _serve(theirs, path, undo, control_path, control_inode)
            except BaseException as e:                      # noqa: B036 (nothing may run the daemon's code on)
                os.write(2, f"etun: monitor: {e}\n".encode(errors="replace"))
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.sock = ours
        self.pid = pid

    def read(self):
        """(config, secrets) as the monitor read them; ConfigError or KeyFileError as it found them."""
        try:
            self.sock.settimeout(READ_TIMEOUT_S)
            self.sock.sendall(b"R")
            length = FRAME.unpack(self._exactly(FRAME.size))[0]
            if length > ANSWER_MAX:
                raise OSError("answer too large")
            answer = json.loads(self._exactly(length))
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"cannot re-read the configuration: the privileged monitor (pid {self.pid}) "
                                 f"does not answer ({e}); restart etun to apply changes") from None
        if "error" in answer:
            raise ERRORS.get(answer.get("kind"), RuntimeFailure)(answer["error"])
        config = load_config(self.path, base64.b64decode(answer["config"]))
        secrets = None
        if "secrets" in answer:
            s = answer["secrets"]
            secrets = keys.Secrets(*(bytes.fromhex(s[name]) for name in keys.SECRET_NAMES),
                                   fingerprint=s["fingerprint"])
        return config, secrets

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise OSError("end of file")
            data += chunk
        return data

    def close(self) -> None:
        """Let the monitor undo its list and wait for it (it is our child: no zombie left)."""
        self.sock.close()
        deadline = time.monotonic() + EXIT_WAIT_S
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return
            time.sleep(0.01)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def settle(config, ports, control_path):
    """After setup and before any thread starts: become [run] user with no capability, leaving
    what only root may do to a monitor; returns what a reload reads the files through.

    Started as root with [run] user "root": keep root (no core dumps all the same). Started
    without root (setpriv, ambient capabilities): keep the uid, and of the capabilities only
    CAP_NET_ADMIN, and that only while LRO must be switched back on at exit.
    """
    undo = [action for port in ports for action in port.undo]
    lro = ", ".join(port.name for port in ports if port.undo)
    undo_caps = {CAP_NET_ADMIN} if undo else set()
    why = f" (to switch LRO on {lro} back on at exit)" if undo else ""
    if os.geteuid() != 0:
        privileges.drop(None, undo_caps)
        caps = privileges.permitted()
        log.info("running as %s (uid %d, not started as root: [run] user does not apply) with %s%s",
                 _user_name(os.geteuid()), os.geteuid(), privileges.names(caps), why if caps else "")
        return LocalFiles(config.path)
    if config.run.user == "root":
        privileges.undumpable()
        log.info('running as root ([run] user = "root"): etun keeps its privileges')
        return LocalFiles(config.path)
    user = privileges.resolve_user(config.run.user, str(config.path))
    monitor = Monitor(config.path, undo, control_path, undo_caps)
    for port in ports:
        port.undo.clear()                   # the monitor's now: they need what the daemon gives up
    privileges.drop(user, set())
    log.info("running as %s (uid %d) with no capabilities; monitor pid %d keeps root's uid with %s to "
             "re-read the configuration and key file on reload and to clean up at exit%s",
             user.name, user.uid, monitor.pid, privileges.names(undo_caps), why)
    return monitor
