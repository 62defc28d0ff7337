"""TCP transfer with end-to-end integrity: `recv PORT` or `send HOST PORT BYTES`; each prints its sha256."""

import hashlib
import os
import socket
import sys

CHUNK = 1 << 16


def receive(port: int) -> None:
    listener = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    listener.settimeout(60)
    conn, _ = listener.accept()
    conn.settimeout(60)
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(CHUNK):
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)


def send(host: str, port: int, nbytes: int) -> None:
    conn = socket.create_connection((host, port), timeout=60)
    digest, left = hashlib.sha256(), nbytes
    while left:
        chunk = os.urandom(min(CHUNK, left))
        conn.sendall(chunk)
        digest.update(chunk)
        left -= len(chunk)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    print(nbytes, digest.hexdigest(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        receive(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
