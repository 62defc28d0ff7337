"""The control socket: a root-only Unix socket where the daemon answers status and verify requests.

Protocol: the client sends one JSON object on one line, e.g. {"request": "status"}; the daemon
answers with one JSON object on one line and closes. The daemon side never blocks: connections
live in its poll() loop, and a request may be answered later (verify-peer waits for probes).
"""

import errno
import json
import os
import socket
import stat
import time
from pathlib import Path

from etun.errors import RuntimeFailure

REQUEST_MAX_BYTES = 4096
CLIENTS_MAX = 16
CLIENT_TIMEOUT_S = 2.0          # to send a request; answering may take longer


class Pending:
    """Returned by a handler that will answer later through `respond`."""


class Client:
    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.buf = b""
        self.deadline = now + CLIENT_TIMEOUT_S

    def respond(self, answer: dict) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self.sock.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.sock.close()


class ControlServer:
    """Listens at `path`; `handlers` maps a request name to fn(request, client) -> dict | Pending."""

    def __init__(self, path: Path, handlers: dict):
        self.path = Path(path)
        self.handlers = handlers
        self.clients: dict[int, Client] = {}
        self.waiting: set[Client] = set()      # answered later (verify-peer), see finish()
        self.accept_after = 0.0
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if os.stat(self.path.parent).st_mode & 0o022:
            # Anyone who can write there could take the path first and answer `etun status`.
            raise RuntimeFailure(f"control socket directory {self.path.parent} is writable by other users; "
                                 "put [control] socket in a directory only root can write, such as /run/etun")
        self._clear_stale()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)        # the socket is born 0600: root only, no window
        try:
            self.sock.bind(str(self.path))
        except OSError as e:
            self.sock.close()
            raise RuntimeFailure(f"cannot create control socket {self.path}: {os.strerror(e.errno or 0)}") from None
        finally:
            os.umask(old)
        self.inode = os.stat(self.path).st_ino
        self.sock.listen(CLIENTS_MAX)
        self.sock.setblocking(False)

    def _clear_stale(self) -> None:
        """A socket file left by a crashed daemon must not stop a new start; a live one must."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RuntimeFailure(f"control socket path {self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise RuntimeFailure(f"control socket {self.path}: {os.strerror(e.errno or 0)}") from None
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise RuntimeFailure(f"another etun is running for this site (it answers on {self.path})")

    def fds(self) -> list[int]:
        listening = [self.sock.fileno()] if time.monotonic() >= self.accept_after else []
        return listening + list(self.clients)

    def handle(self, ready: set[int]) -> None:
        now = time.monotonic()
        if self.sock.fileno() in ready:
            self._accept(now)
        for fd, client in list(self.clients.items()):
            if fd in ready:
                self._read(fd, client)
            elif now > client.deadline:
                self._drop(fd)

    def finish(self, client: Client, answer: dict) -> None:
        """Answer a request a handler took as Pending."""
        self.waiting.discard(client)
        client.respond(answer)

    def _accept(self, now: float) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Out of descriptors (EMFILE): stop listening for a second instead of spinning.
                self.accept_after = now + 1.0
                return
            if len(self.clients) >= CLIENTS_MAX:
                conn.close()
                continue
            conn.setblocking(False)
            self.clients[conn.fileno()] = Client(conn, now)

    def _read(self, fd: int, client: Client) -> None:
        try:
            chunk = client.sock.recv(REQUEST_MAX_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        client.buf += chunk
        if b"\n" not in client.buf:
            if not chunk or len(client.buf) > REQUEST_MAX_BYTES:
                self._drop(fd)
            return
        line = client.buf.split(b"\n", 1)[0]
        del self.clients[fd]
        try:
            request = json.loads(line)
            handler = self.handlers[request["request"]]
        except (ValueError, KeyError, TypeError):
            client.respond({"error": "unknown request"})
            return
        try:
            answer = handler(request, client)
        except Exception as e:        # a bug in one handler must not take the tunnel down
            answer = {"error": f"{type(e).__name__}: {e}"}
        if isinstance(answer, Pending):
            self.waiting.add(client)
        else:
            client.respond(answer)

    def _drop(self, fd: int) -> None:
        self.clients.pop(fd).sock.close()

    def close(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        for client in list(self.waiting):
            self.finish(client, {"error": "etun is stopping"})
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass


class NoDaemon(RuntimeFailure):
    """Nothing listens on the control socket: no daemon runs for this site."""


def ask(path: Path, request: dict, timeout: float) -> dict:
    """Client side: one request to the daemon at `path`, its answer; RuntimeFailure if none."""
    try:
        owner = os.lstat(path).st_uid
    except FileNotFoundError:
        raise NoDaemon(f"no etun running for this site (no control socket at {path})") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot reach the daemon at {path}: {os.strerror(e.errno or 0)}") from None
    if owner not in (0, os.geteuid()):
        # Someone else's socket at our path could answer anything: trust only root's or ours.
        raise RuntimeFailure(f"control socket {path} belongs to uid {owner}, not root: not trusting it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise NoDaemon(f"no etun running for this site (no control socket at {path})") from None
    except ConnectionRefusedError:
        raise NoDaemon(f"no etun running for this site ({path} is not answering)") from None
    except PermissionError:
        raise RuntimeFailure(f"cannot reach the daemon at {path}: Permission denied (run as root)") from None
    except socket.timeout:
        raise RuntimeFailure(f"the daemon at {path} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot reach the daemon at {path}: {os.strerror(e.errno or 0)}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise RuntimeFailure(f"the daemon at {path} gave an unreadable answer") from None
    if "error" in answer:
        raise RuntimeFailure(f"the daemon at {path} refused the request: {answer['error']}")
    return answer
