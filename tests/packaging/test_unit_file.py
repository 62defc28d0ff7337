"""packaging/etun@.service: accepted by systemd, notify with reload and watchdog, least privilege.

packaging/etun@.service: systemd accepts it, it is Type=notify with a reload and a watchdog, and it grants
etun what its setup and the drop to [run] user need, and no more."""

import shutil
import subprocess

import pytest

from tests import REPO

UNIT = REPO / "packaging" / "etun@.service"


def test_the_unit_verifies_with_systemd_analyze(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (make test installs systemd)")
    binary = REPO / "dist" / "etun"
    if not binary.exists():
        pytest.skip("dist/etun is not built (run make binary)")
    # The unit runs /usr/local/bin/etun; point that at the built binary for the check.
    unit = tmp_path / "etun@berlin.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/etun", str(binary)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True)
    exposure = float(r.stdout.rsplit("Overall exposure level for etun@berlin.service: ", 1)[1].split()[0])
    assert exposure <= 3.0, r.stdout


def unit_lines() -> dict[str, str]:
    return dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#"))


def test_the_unit_grants_setups_capabilities_and_those_of_the_drop_to_run_user_and_no_more():
    lines = unit_lines()
    caps = "CAP_NET_RAW CAP_NET_ADMIN CAP_SETUID CAP_SETGID CAP_SETPCAP"
    assert lines["CapabilityBoundingSet"] == caps and lines["AmbientCapabilities"] == caps
    assert lines["LimitCORE"] == "0" and "User" not in lines           # etun drops to [run] user itself
    assert lines["NoNewPrivileges"] == "yes" and lines["ProtectSystem"] == "strict"
    assert lines["PrivateTmp"] == "yes" and lines["Restart"] == "on-failure"
    assert lines["StartLimitIntervalSec"] == "0"          # a LAN link down for minutes: keep retrying
    assert lines["ExecStart"] == "/usr/local/bin/etun run /etc/etun/%i.toml"


def test_the_unit_is_type_notify_with_a_reload_that_waits_and_a_watchdog():
    lines = unit_lines()
    assert lines["Type"] == "notify"
    assert lines["NotifyAccess"] == "all"               # the one-file binary notifies from below its boot loaders
    assert lines["ExecReload"] == "/usr/local/bin/etun reload /etc/etun/%i.toml"
    assert lines["WatchdogSec"] == "10s"


def test_a_stray_sighup_that_kills_the_boot_loader_restarts_etun_instead_of_stopping_it_for_good():
    lines = unit_lines()
    # Death by SIGHUP is a clean exit to Restart=on-failure (systemd.service(5), SuccessExitStatus=):
    # only RestartForceExitStatus= brings etun back after a `kill -HUP` of the one-file binary's main PID.
    assert lines["Restart"] == "on-failure" and lines["RestartForceExitStatus"].split() == ["SIGHUP"]
    assert "kill" not in lines["ExecReload"]            # a reload never signals the main PID
