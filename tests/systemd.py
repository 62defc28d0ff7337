"""A NOTIFY_SOCKET the tests listen on, as systemd does: a Unix datagram socket, each message with its sender's pid."""

import socket
import time


class NotifyListener:
    """A NOTIFY_SOCKET as systemd has it: a Unix datagram socket, each message with its sender's pid."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[float, int, dict]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                return
            pid = next((int.from_bytes(d[:4], "little") for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), 0)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((time.monotonic(), pid, fields))

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

    def keys(self) -> list[str]:
        return [",".join(f"{k}={v}" if k != "MONOTONIC_USEC" else k for k, v in f.items()) for _, _, f in self.messages]

    def close(self):
        self.sock.close()
