"""The control socket's own guards: where it may live, whose socket a client trusts, answers pending at exit."""

import os
import pwd
import socket

import pytest

from etun.control import ControlServer, NoDaemon, Pending, ask
from etun.errors import RuntimeFailure


def test_the_daemon_refuses_a_socket_directory_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(RuntimeFailure) as caught:
        ControlServer(shared / "a.sock", {})
    assert str(caught.value) == (f"control socket directory {shared} is writable by other users; put [control] "
                                 "socket in a directory only root can write, such as /run/etun")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the socket to another user")
def test_a_client_does_not_trust_a_socket_someone_else_owns(tmp_path):
    path = tmp_path / "a.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(path, nobody, -1)
    with pytest.raises(RuntimeFailure) as caught:
        ask(path, {"request": "status"}, 1)
    assert str(caught.value) == f"control socket {path} belongs to uid {nobody}, not root: not trusting it"
    s.close()


def test_no_socket_means_no_daemon(tmp_path):
    with pytest.raises(NoDaemon):
        ask(tmp_path / "none.sock", {"request": "status"}, 1)


def test_a_request_still_pending_at_exit_gets_an_answer(tmp_path):
    server = ControlServer(tmp_path / "a.sock", {"verify": lambda request, client: Pending()})
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "a.sock"))
    client.sendall(b'{"request": "verify"}\n')
    for _ in range(20):
        server.handle(set(server.fds()))
        if server.waiting:
            break
    assert server.waiting
    server.close()
    client.settimeout(2)
    assert client.recv(4096) == b'{"error": "etun is stopping"}\n'
    assert not (tmp_path / "a.sock").exists()
