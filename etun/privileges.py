"""Least privilege for `etun run`: become [run] user holding only the capabilities still needed, undumpable.

Linux keeps capabilities per thread, so the drop happens while the process has one thread, before
the datapath threads start. prctl(2) and capset(2) are called through ctypes on the C library the
process already runs (CDLL(None)), which works inside the one-file binary too.
"""

import ctypes
import os
import pwd
import resource
import threading
from dataclasses import dataclass

from etun.errors import ConfigError, RuntimeFailure

CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8                 # shrink the bounding set
CAP_NET_ADMIN = 12              # switch LRO back on at exit
CAP_NET_RAW = 13
CAP_NAMES = {CAP_SETGID: "CAP_SETGID", CAP_SETUID: "CAP_SETUID",
             CAP_SETPCAP: "CAP_SETPCAP", CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}
CAP_LAST_DEFAULT = 40           # CAP_CHECKPOINT_RESTORE, Linux 5.9; the kernel says its own in /proc
NOBODY_ID = 65534               # the kernel's overflow uid and gid: "nobody" where no passwd says so

PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522   # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class RunAs:
    """A user to become: name, uid and primary gid."""

    name: str
    uid: int
    gid: int


def resolve_user(name: str, origin: str) -> RunAs:
    """[run] user as ids, or a ConfigError naming it; checked before setup touches anything."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if name == "nobody":
            # An empty root (the one-file binary in a chroot) has no passwd database.
            return RunAs(name, NOBODY_ID, NOBODY_ID)
        raise ConfigError(f'{origin}: [run] user: no user "{name}" on this system; create it '
                          f'(useradd --system --no-create-home {name}) or set user = "nobody"') from None
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise RuntimeFailure(f"cannot drop privileges: prctl({what}) failed: {os.strerror(ctypes.get_errno())}")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return CAP_LAST_DEFAULT


def mask(caps) -> int:
    return sum(1 << cap for cap in caps)


def names(caps) -> str:
    """Capabilities for a log line: "CAP_SETUID and CAP_NET_ADMIN", or "no capabilities"."""
    shown = [CAP_NAMES.get(cap, f"capability {cap}") for cap in sorted(caps)]
    return " and ".join(shown) if shown else "no capabilities"


def proc_status(pid: int | str = "self") -> dict[str, str]:
    """/proc/<pid>/status as a dict of its fields (the kernel's word on ids and capabilities)."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def permitted() -> set[int]:
    bits = int(proc_status()["CapPrm"], 16)
    return {cap for cap in range(64) if bits >> cap & 1}


def _set_capabilities(caps: set[int]) -> None:
    bits = mask(caps)
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for word in (0, 1):
        data[word].effective = data[word].permitted = (bits >> (32 * word)) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise RuntimeFailure(f"cannot drop privileges: capset failed: {os.strerror(ctypes.get_errno())}")


def foreign_threads() -> int:
    """Threads of this process that Python did not start: an emulator's own (qemu-user runs one
    beside the program it emulates, and changes ids and capabilities per thread)."""
    return len(os.listdir("/proc/self/task")) - threading.active_count()


def require_droppable() -> None:
    """Before setup touches anything: a drop that cannot cover every thread of the process
    would be a pretence, so refuse to start at all. A thread we did not start would keep root."""
    foreign = foreign_threads()
    if foreign > 0:
        raise RuntimeFailure(f"cannot drop privileges: this process has {foreign} thread{'s' * (foreign > 1)} "
                             "etun did not start, which would keep root's ids and capabilities (an emulator such "
                             'as qemu-user runs one of its own); run etun natively, or, started as root, keep '
                             'root with [run] user = "root"')


def _only_thread() -> None:
    """Capabilities and ids belong to each thread: every thread must be covered, so be the only one."""
    require_droppable()
    threads = len(os.listdir("/proc/self/task"))
    if threading.active_count() != 1 or threads != 1:
        raise RuntimeFailure(f"internal error: privileges dropped with {threads} threads running")


def set_name(name: str) -> None:
    """The name ps and top show for this process (15 bytes at most); best effort."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, buf, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def undumpable() -> None:
    """No core files, and not dumpable: no ptrace by the same user, /proc/<pid>/mem root's only."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _prctl(PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")


def drop(user: RunAs | None, keep: set[int]) -> None:
    """Make this single-threaded process `user` (None: keep its ids) holding only the `keep`
    capabilities, effective and permitted, in the bounding set too where it may shrink it; no
    ambient or inheritable ones, no new privileges through exec, not dumpable, no core files.
    Checked afterwards against /proc: a drop that did not take is an error, never a warning."""
    _only_thread()
    undumpable()
    have = permitted()
    keep = set(keep) & have
    if CAP_SETPCAP in have:
        for cap in range(_last_cap() + 1):
            if cap not in keep:
                _prctl(PR_CAPBSET_DROP, cap, f"PR_CAPBSET_DROP {cap}")
    if user is not None:
        _prctl(PR_SET_KEEPCAPS, 1, "PR_SET_KEEPCAPS")       # so setresuid leaves the permitted set
        try:
            os.setgroups([])
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
        except OSError as e:
            raise RuntimeFailure(f"cannot become user {user.name} (uid {user.uid}): {e.strerror}") from None
        _prctl(PR_SET_KEEPCAPS, 0, "PR_SET_KEEPCAPS")
    _set_capabilities(keep)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    undumpable()                # again: the kernel resets dumpable to fs.suid_dumpable when ids change
    st = proc_status()
    uids = set(st["Uid"].split()) | set(st["Gid"].split())
    want = {str(user.uid), str(user.gid)} if user is not None else uids
    if uids != want or int(st["CapEff"], 16) != mask(keep) or int(st["CapPrm"], 16) != mask(keep) \
            or int(st.get("CapAmb", "0"), 16) != 0:
        raise RuntimeFailure(f"cannot drop privileges: the kernel reports Uid {st['Uid']}, "
                             f"CapEff {st['CapEff']}, CapPrm {st['CapPrm']}")
