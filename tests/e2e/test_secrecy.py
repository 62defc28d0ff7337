"""Forward secrecy, played as the attacker who took the key file after recording a tunnel.

Forward secrecy, played as the attacker (docs/SECURITY.md): record a tunnel's traffic on the
WAN, stop both sites, then take the key file and try to read what was recorded, with the
independent reference implementation (tests/reference.py). Nothing opens. The attack's tools
are tests/thief.py; their control, tests/datapath/test_secrecy.py, shows the very same attack
succeed when the attacker also holds one handshake's ephemeral private key, so the attack code
is right and only the missing Diffie-Hellman secret stops it.

    hostA - gwA - [wan: tcpdump] - gwB - hostB
"""

import pytest

from etun import _fast
from tests import reference as ref
from tests.e2e.topology import HOST_IP
from tests.thief import MARKER, candidate_secrets, opens

pytestmark = pytest.mark.usefixtures("e2e_ready")


def recorded(t) -> list[bytes]:
    from scapy.all import UDP
    with t.capture("wan", "a0", "udp") as packets:
        t.start_pair()
        r = t.run(f"ping -n -q -c 5 -i 0.2 -s 1400 -p {MARKER} {HOST_IP['b']}", "ha", check=False, capture=True)
        assert " 0% packet loss" in r.stdout, r.stdout
    for site in "ab":
        assert t.stop_etun(site) == 0                    # the sessions, and their keys, are gone
    return [bytes(p[UDP].payload) for p in packets if UDP in p]


def test_a_thief_of_the_key_file_cannot_read_traffic_recorded_before(topo):
    t = topo()
    wire = recorded(t)
    material = (t.workdir / "site.key").read_bytes()             # now the attacker has it
    prk = ref.derive_prk(material)
    static = ref.static_keys(prk)
    inits = [d for d in wire if _fast.packet_type(d)[2] == _fast.TYPE_INIT]
    data = [d for d in wire if _fast.packet_type(d)[2] in (_fast.TYPE_FRAME, _fast.TYPE_SESSION)]
    assert inits and len(data) >= 10
    assert not any(bytes.fromhex(MARKER) in d for d in data)       # encrypted on the wire
    candidates = candidate_secrets(static, prk, inits)
    for datagram in data:
        assert not any(opens(s, static.index_root, datagram) for s in candidates)
