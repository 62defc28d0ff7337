"""A NOTIFY_SOCKET the tests listen on, as systemd does: a Unix datagram socket, each message with its sender's pid."""

import socket
import struct
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)     # Python names it from 3.13 on; 35 on Linux
TIMESPEC = struct.Struct("@qq")


class NotifyListener:
    """A NOTIFY_SOCKET as systemd has it: a Unix datagram socket, each message with its sender's pid.

    `messages` holds (when, pid, fields): `when` is the time.monotonic() at which the message was
    sent, from the kernel's timestamp, not when the test got round to reading it, so that a message
    that waited in the socket while the test did something else is not taken for a late one."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.messages: list[tuple[float, int, dict]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(TIMESPEC.size))
            except TimeoutError:
                return
            now, wall = time.monotonic(), time.time()
            pid, sent = 0, now
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(value[:4], "little")
                elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds_, nanos = TIMESPEC.unpack(value[:TIMESPEC.size])
                    sent = now - max(0.0, wall - (seconds_ + nanos / 1e9))
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((sent, pid, fields))

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for _, _, fields in self.messages[seen:]:
                if key in fields and (value is None or fields[key] == value):
                    return fields
            seen = len(self.messages)
            self.collect(0.1)
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.keys()}")

    def index(self, key: str, value: str, after: int = -1, timeout: float = 0) -> int:
        """The position in `messages` of the first message with key=value after position `after`,
        waiting up to `timeout` seconds for it; AssertionError if none came."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (_, _, fields) in enumerate(self.messages[after + 1:], after + 1):
                if fields.get(key) == value:
                    return i
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {key}={value} after message {after} within {timeout} s; got {self.keys()}")
            self.collect(min(0.1, deadline - time.monotonic()))

    def keys(self) -> list[str]:
        return [",".join(f"{k}={v}" if k != "MONOTONIC_USEC" else k for k, v in f.items()) for _, _, f in self.messages]

    def close(self):
        self.sock.close()
