"""[run] user and the pieces of the privilege drop that need no root (etun/privileges.py).

[run] user and the privilege drop's pieces that need no root (etun/privileges.py); the drop
itself is checked end to end against /proc (tests/e2e/test_production.py)."""

import pwd

import pytest

from etun import privileges
from etun.errors import ConfigError, RuntimeFailure


def test_an_unknown_run_user_stops_etun_with_one_line_naming_the_key_and_the_fix():
    with pytest.raises(ConfigError) as e:
        privileges.resolve_user("no-such-etun-user", "/etc/etun/berlin.toml")
    assert e.value.message == ('/etc/etun/berlin.toml: [run] user: no user "no-such-etun-user" on this system; create '
                               'it (useradd --system --no-create-home no-such-etun-user) or set user = "nobody"')


def test_nobody_is_the_kernels_overflow_id_where_no_passwd_database_says_otherwise(monkeypatch):
    def missing(name):
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", missing)
    assert privileges.resolve_user("nobody", "x.toml") == privileges.RunAs("nobody", 65534, 65534)


def test_a_known_user_resolves_to_its_uid_and_primary_gid():
    root = privileges.resolve_user("root", "x.toml")
    assert (root.uid, root.gid) == (0, 0)


def test_capabilities_are_named_as_the_kernel_names_them():
    assert privileges.names(set()) == "no capabilities"
    assert privileges.names({privileges.CAP_NET_ADMIN, privileges.CAP_SETUID}) == "CAP_SETUID and CAP_NET_ADMIN"
    assert privileges.mask({privileges.CAP_NET_ADMIN}) == 0x1000


def test_proc_status_reads_this_process_ids_and_capabilities():
    st = privileges.proc_status()
    assert st["Uid"].split()[0] == str(__import__("os").getuid())
    assert {"CapEff", "CapPrm", "CapBnd", "NoNewPrivs"} <= set(st)


def test_a_native_process_has_no_thread_python_did_not_start():
    assert privileges.foreign_threads() == 0
    privileges.require_droppable()


def test_a_thread_etun_did_not_start_stops_the_drop_with_one_line_and_the_fix(monkeypatch):
    # qemu-user runs a thread of its own beside the emulated program and changes ids per thread:
    # a drop would leave that thread root (tests/packaging/test_aarch64.py runs the real case).
    monkeypatch.setattr(privileges, "foreign_threads", lambda: 1)
    with pytest.raises(RuntimeFailure) as e:
        privileges.drop(None, set())
    assert e.value.message == (
        "cannot drop privileges: this process has 1 thread etun did not start, which would keep root's ids and "
        "capabilities (an emulator such as qemu-user runs one of its own); run etun natively, or, started as "
        'root, keep root with [run] user = "root"')
