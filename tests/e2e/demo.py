"""`make demo`: two sites joined by etun over a WAN of MTU 840, shown working, then torn down."""

import sys
import time

from tests.e2e.topology import HOST_IP, Topology

DEMO_BYTES = 64 << 20


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main() -> int:
    t = Topology(name="etundemo")
    say("building two sites in network namespaces: hostA - gwA - WAN (MTU 840) - gwB - hostB")
    with t:
        say("starting etun on both gateways (level encrypt, packet mode)")
        for site in "ab":
            t.start_etun(site, t.write_config(site))
        t.wait_log("a", "peer up")
        t.wait_log("b", "peer up")
        print(t.etuns["a"].text().rstrip())

        say("hostA pings hostB with full-size 1500-byte packets, DF set, across the 840-byte WAN")
        r = t.ping("a", HOST_IP["b"], size=1472, count=5)
        print(r.stdout.rstrip())
        if " 0% packet loss" not in r.stdout:
            print("demo: the ping did not get through", file=sys.stderr)
            return 1

        say(f"hostA sends {DEMO_BYTES >> 20} MiB to hostB over TCP; both ends hash what they saw")
        started = time.monotonic()
        sent, got = t.transfer(DEMO_BYTES)
        elapsed = time.monotonic() - started
        print(f"sent     {sent}\nreceived {got}")
        print(f"{DEMO_BYTES * 8 / elapsed / 1e6:,.0f} Mbit/s including connection set-up; "
              f"sha256 {'equal' if sent == got else 'DIFFERENT'}")
        if sent != got:
            return 1

        for site in "ab":
            say(f"etun status at gw{site.upper()}")
            print(t.out(f"{sys.executable} -m etun.cli status {t.workdir / (site + '.toml')}", f"g{site}").rstrip())
        say("tearing down")
    say("done: the namespaces, links and etun processes are gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
