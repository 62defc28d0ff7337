"""etun: join two Ethernet LANs across any IP network (Layer-2 site-to-site VPN).

Usage:
  etun run <config>
  etun keygen [--force] <keyfile>
  etun verify-peer [--timeout=<seconds>] [--json] <config>
  etun status [--json] [--watch | --macs | --check] <config>
  etun reload <config>
  etun activate <config>
  etun standby <config>
  etun check <config>
  etun bench [--json] [--seconds=<seconds>]
  etun (-h | --help)
  etun --version

Commands:
  run          run the tunnel for this site (foreground; logs to stderr)
  keygen       write a new 32768-byte random key material file (mode 0600)
  verify-peer  check, from this site, that the peer is reachable and compatible
  status       show the running tunnel's state and counters
  reload       make the running tunnel re-read its configuration and key file (as SIGHUP)
  activate     a standby gateway becomes active (keepalived's notify scripts call this)
  standby      an active gateway becomes standby
  check        validate a configuration and its key file, change nothing
  bench        measure this machine's tunnel processing speed, no network needed

Options:
  --force              keygen: replace an existing key file.
  --timeout=<seconds>  verify-peer: give up after this many seconds [default: 5].
  --seconds=<seconds>  bench: seconds to run each case [default: 1].
  --json               print JSON for machines.
  --watch              status: redraw until interrupted.
  --macs               status: list the MAC table (MAC, segment, side, age).
  --check              status: exit 0 if the daemon answers and its datapath threads turn, else 1.
  -h, --help           show this help.
  --version            show the version.

Exit status: 0 ok; 1 runtime failure; 2 usage, configuration or key-file error;
3 verify-peer found a problem.
"""

import os
import sys
import traceback

from docopt import DocoptExit, docopt

import etun
from etun import env, keys
from etun.errors import EtunError, RuntimeFailure, UsageError

# Options that take a value as the next argv word; needed to find the command word in bad usage.
_VALUE_OPTIONS = ("--timeout", "--seconds")


def cmd_keygen(args) -> int:
    path = args["<keyfile>"]
    fp = keys.generate_key_file(path, force=args["--force"])
    print(f"wrote {path} ({keys.MATERIAL_LEN} bytes); fingerprint {fp}")
    print("compare this fingerprint with the other site's before running etun")
    return 0


def cmd_check(args) -> int:
    # Imported here so a broken config module cannot stop keygen or --help.
    from etun.config import load_config

    path = args["<config>"]
    config = load_config(path)
    level = config.security.level
    secrets = keys.load_site_secrets(config.security)
    key_part = "no key file (level none)" if secrets is None else f"key fingerprint {secrets.fingerprint}"
    layout = config.segment.layout
    segments = "" if len(layout) == 1 and not layout[0].vlan and layout[0].name == "lan" else \
        f", segments {', '.join(g.name for g in layout)}"
    role = ", standby at start" if config.ha.standby else ""
    print(f'{path}: ok: site "{config.site.name}", level {level}, peer {config.tunnel.peer}, {key_part}'
          f"{segments}{role}")
    return 0


def cmd_run(args) -> int:
    # Imported here: the daemon pulls in the compiled datapath, which keygen and check do not need.
    from etun.daemon import run_site

    return run_site(args["<config>"])


def cmd_status(args) -> int:
    from etun.status import run_status

    return run_status(args["<config>"], args["--json"], args["--watch"], args["--macs"], args["--check"])


RELOAD_TIMEOUT_S = 30.0         # a reload may resolve the peer's name


def cmd_reload(args) -> int:
    from etun.config import load_config
    from etun.control import ask

    config = load_config(args["<config>"])
    answer = ask(config.control.socket, {"request": "reload"}, RELOAD_TIMEOUT_S)
    if not answer["ok"]:
        raise RuntimeFailure(f"reload refused: {'; '.join(answer['refused'])}; etun goes on unchanged")
    print(f"reloaded: {', '.join(answer['applied']) if answer['applied'] else 'nothing changed'}")
    return 0


ROLE_TIMEOUT_S = 5.0


def cmd_role(args) -> int:
    """etun activate / etun standby: ask the running daemon; idempotent, exit 0 when done."""
    from etun.config import load_config
    from etun.control import ask

    request = "activate" if args["activate"] else "standby"
    config = load_config(args["<config>"])
    answer = ask(config.control.socket, {"request": request}, ROLE_TIMEOUT_S)
    print(f"{answer['role']}{'' if answer['changed'] else ' (already)'}")
    return 0


def cmd_verify_peer(args) -> int:
    from etun.verify import run_verify

    raw = args["--timeout"]
    try:
        timeout = float(raw)
    except ValueError:
        raise UsageError(f'--timeout: expected seconds, got "{raw}"') from None
    return run_verify(args["<config>"], timeout, args["--json"])


def cmd_bench(args) -> int:
    raw = args["--seconds"]
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f'--seconds: expected a positive number of seconds, got "{raw}"')
    # Lazy: the benchmark pulls in the compiled datapath, which other commands do not need.
    from etun.bench import run_bench

    return run_bench(seconds, args["--json"])


COMMANDS = {
    "run": cmd_run,
    "keygen": cmd_keygen,
    "verify-peer": cmd_verify_peer,
    "status": cmd_status,
    "reload": cmd_reload,
    "activate": cmd_role,
    "standby": cmd_role,
    "check": cmd_check,
    "bench": cmd_bench,
}


def _usage_lines() -> list[str]:
    lines = __doc__.split("Usage:", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in lines.strip().splitlines()]


def _command_word(argv: list[str]) -> str | None:
    """The first word that is neither an option nor an option's value."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if word in _VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-") or word == "-":
            return word
    return None


def _usage_error(argv: list[str]) -> UsageError:
    command = _command_word(argv)
    if command is None:
        return UsageError("missing command; run 'etun --help'")
    if command not in COMMANDS:
        return UsageError(f"unknown command \"{command}\"; run 'etun --help'")
    lines = [line for line in _usage_lines() if line.split()[1] == command]
    return UsageError("usage: " + " | ".join(lines))


def _dispatch(argv: list[str]) -> int:
    options = argv[: argv.index("--")] if "--" in argv else argv
    # docopt would print help only for argv it can parse; `etun keygen --help` should help too.
    if "-h" in options or "--help" in options:
        print(__doc__.strip("\n"))
        return 0
    try:
        args = docopt(__doc__, argv, default_help=False)
    except DocoptExit:
        raise _usage_error(argv) from None
    if args["--version"]:
        print(f"etun {etun.__version__}")
        return 0
    command = next(name for name in COMMANDS if args[name])
    return COMMANDS[command](args)


def main(argv: list[str] | None = None) -> int:
    """Run one etun command; the only place errors become messages and exit codes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _dispatch(argv)
    except EtunError as e:
        print(f"etun: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; stop quietly instead of a second
        # error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if env.debug():
            traceback.print_exc()
        detail = " ".join(str(e).split())
        print(
            f"etun: internal error: {type(e).__name__}: {detail} (set ETUN_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
