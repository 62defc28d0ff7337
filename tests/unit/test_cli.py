"""Tests for the etun command line: runs the real CLI and pins exit codes and the exact stderr line."""

import os
import re
import stat
import subprocess
import sys

import pytest

import etun as etun_package
from etun import cli, keys
from tests import REPO

VALID_TOML = """\
[site]
name = "berlin"

[lan]
interface = "eth1"

[tunnel]
peer = "203.0.113.7:5555"

[security]
level = "encrypt"
key_file = "site.key"
"""


def etun(*args, cwd=REPO, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The tests also run the CLI from tmp dirs, where `etun` is importable only via the repo.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("ETUN_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "etun.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line, after checking it is exactly one line and no traceback."""
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.rstrip("\n")


@pytest.fixture
def site(tmp_path):
    """A directory with a valid site.toml and a freshly keygen'd site.key."""
    fp = keys.generate_key_file(tmp_path / "site.key")
    (tmp_path / "site.toml").write_text(VALID_TOML)
    return tmp_path, fp


def test_version_prints_the_package_version():
    result = etun("--version")
    assert result.returncode == 0
    assert result.stdout == f"etun {etun_package.__version__}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["keygen", "--help"]])
def test_help_prints_the_usage_and_succeeds(args):
    result = etun(*args)
    assert result.returncode == 0
    assert result.stdout.startswith("etun: ")
    assert "  etun keygen [--force] <keyfile>\n" in result.stdout
    assert result.stderr == ""


def test_unknown_command_is_a_usage_error_naming_it():
    result = etun("frob")
    assert result.returncode == 2
    assert error_line(result) == "etun: unknown command \"frob\"; run 'etun --help'"
    assert result.stdout == ""


def test_no_command_is_a_usage_error():
    result = etun()
    assert result.returncode == 2
    assert error_line(result) == "etun: missing command; run 'etun --help'"


@pytest.mark.parametrize("args", [["keygen"], ["keygen", "a", "b"], ["keygen", "--frob", "a"]])
def test_bad_keygen_usage_shows_the_keygen_usage_line(args):
    result = etun(*args)
    assert result.returncode == 2
    assert error_line(result) == "etun: usage: etun keygen [--force] <keyfile>"


def test_bad_verify_peer_usage_shows_its_usage_line():
    result = etun("verify-peer", "--timeout", "3")
    assert result.returncode == 2
    assert error_line(result) == "etun: usage: etun verify-peer [--timeout=<seconds>] [--json] <config>"


def test_keygen_writes_a_private_key_file_and_prints_its_fingerprint(tmp_path):
    result = etun("keygen", "site.key", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    first = result.stdout.splitlines()[0]
    match = re.fullmatch(r"wrote site\.key \(32768 bytes\); fingerprint ([0-9a-f]{4}(?:-[0-9a-f]{4}){3})", first)
    assert match
    path = tmp_path / "site.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert match.group(1) == keys.fingerprint(path.read_bytes())


def test_keygen_refuses_to_overwrite_with_exit_2(site):
    tmp_path, _ = site
    before = (tmp_path / "site.key").read_bytes()
    result = etun("keygen", "site.key", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == "etun: site.key: already exists; use --force to replace it"
    assert result.stdout == ""
    assert (tmp_path / "site.key").read_bytes() == before


def test_keygen_with_force_replaces_the_key_file(site):
    tmp_path, old_fp = site
    result = etun("keygen", "--force", "site.key", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    new_fp = keys.fingerprint((tmp_path / "site.key").read_bytes())
    assert new_fp != old_fp
    assert f"fingerprint {new_fp}" in result.stdout


def test_keygen_into_a_missing_directory_is_a_key_file_error(tmp_path):
    result = etun("keygen", "nodir/site.key", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == "etun: nodir/site.key: cannot create: No such file or directory"


def test_check_accepts_a_valid_config_and_prints_one_summary_line(site):
    tmp_path, fp = site
    result = etun("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (
        f'site.toml: ok: site "berlin", level encrypt, peer 203.0.113.7:5555, key fingerprint {fp}\n'
    )


def test_check_at_level_none_needs_no_key_file(tmp_path):
    (tmp_path / "site.toml").write_text(
        '[site]\nname = "lab"\n[lan]\ninterface = "eth1"\n'
        '[tunnel]\npeer = "203.0.113.7:5555"\n[security]\nlevel = "none"\n'
    )
    result = etun("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'site.toml: ok: site "lab", level none, peer 203.0.113.7:5555, no key file (level none)\n'


def test_check_names_the_segments_and_a_standby_start(tmp_path):
    (tmp_path / "site.toml").write_text(
        '[[segment]]\nname = "office"\ninterface = "eth1"\nvlan = 10\n[[segment]]\nname = "voice"\n'
        'interface = "eth1"\nvlan = 20\n[tunnel]\npeer = "203.0.113.7:5555"\n[security]\nlevel = "none"\n'
        '[ha]\nstandby = true\n')
    result = etun("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.endswith("no key file (level none), segments office, voice, standby at start\n")


def test_check_reports_a_config_error_in_one_line_with_exit_2(site):
    tmp_path, _ = site
    (tmp_path / "site.toml").write_text(VALID_TOML.replace('"203.0.113.7:5555"', '"10.0.0.1"'))
    result = etun("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == 'etun: site.toml: [tunnel] peer: expected "host:port", got "10.0.0.1"'
    assert result.stdout == ""


def test_check_reports_a_missing_config_file_with_exit_2(tmp_path):
    result = etun("check", "missing.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result).startswith("etun: missing.toml: ")


def test_check_rejects_a_key_file_other_users_can_read(site):
    tmp_path, _ = site
    key = tmp_path / "site.key"
    os.chmod(key, 0o644)
    result = etun("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == f"etun: {key}: readable by other users; run: chmod 600 {key}"


def test_check_rejects_a_key_file_of_the_wrong_size(site):
    tmp_path, _ = site
    key = tmp_path / "site.key"
    key.write_bytes(bytes(100))
    result = etun("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == (
        f"etun: {key}: must be exactly 32768 bytes, got 100; create one with: etun keygen {key}"
    )


@pytest.mark.parametrize("value", ["abc", "0.1", "1000"])
def test_verify_peer_rejects_a_bad_timeout_with_exit_2(site, value):
    tmp_path, _ = site
    result = etun("verify-peer", f"--timeout={value}", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result).startswith("etun: --timeout: expected")


def test_verify_peer_with_a_config_mistake_fails_in_one_line_with_exit_2(site):
    tmp_path, _ = site
    (tmp_path / "site.toml").write_text(VALID_TOML.replace('level = "encrypt"', 'level = "high"'))
    result = etun("verify-peer", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == 'etun: site.toml: [security] level: expected one of "none", "auth", "encrypt", got "high"'


def test_run_with_a_missing_lan_interface_fails_in_one_line_with_exit_1(site):
    tmp_path, _ = site
    text = VALID_TOML.replace('interface = "eth1"', 'interface = "etun-nope0"')
    (tmp_path / "site.toml").write_text(text + f'\n[control]\nsocket = "{tmp_path}/c.sock"\n')
    result = etun("run", "site.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert error_line(result) == "etun: LAN interface etun-nope0 not found"


def test_run_with_a_config_mistake_fails_in_one_line_with_exit_2(site):
    tmp_path, _ = site
    (tmp_path / "site.toml").write_text(VALID_TOML.replace('peer = "203.0.113.7:5555"', 'peer = "203.0.113.7"'))
    result = etun("run", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == 'etun: site.toml: [tunnel] peer: expected "host:port", got "203.0.113.7"'


def test_run_refuses_a_key_file_others_can_read_with_exit_2(site):
    tmp_path, _ = site
    (tmp_path / "site.key").chmod(0o644)
    result = etun("run", "site.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == f"etun: {tmp_path}/site.key: readable by other users; run: chmod 600 {tmp_path}/site.key"


def test_status_without_a_running_daemon_fails_in_one_line_with_exit_1(site):
    tmp_path, _ = site
    (tmp_path / "site.toml").write_text(VALID_TOML + f'\n[control]\nsocket = "{tmp_path}/c.sock"\n')
    result = etun("status", "site.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert error_line(result) == f"etun: no etun running for this site (no control socket at {tmp_path}/c.sock)"


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_bench_rejects_a_bad_seconds_value_with_exit_2(value):
    result = etun("bench", f"--seconds={value}")
    assert result.returncode == 2
    assert error_line(result) == f'etun: --seconds: expected a positive number of seconds, got "{value}"'


def test_an_internal_error_is_one_line_with_exit_1(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    monkeypatch.delenv("ETUN_DEBUG", raising=False)
    assert cli.main(["check", "site.toml"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "etun: internal error: ZeroDivisionError: division by zero (set ETUN_DEBUG=1 for a traceback)\n"
    )


def test_etun_debug_adds_the_traceback_to_an_internal_error(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    monkeypatch.setenv("ETUN_DEBUG", "1")
    assert cli.main(["check", "site.toml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback")
    assert err.endswith("etun: internal error: ZeroDivisionError: division by zero (set ETUN_DEBUG=1 for a traceback)\n")


def test_keyboard_interrupt_exits_130_silently(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "check", interrupted)
    assert cli.main(["check", "site.toml"]) == 130
    assert capsys.readouterr() == ("", "")
