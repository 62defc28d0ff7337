"""No ChaCha20 (key, nonce) pair repeats across directions, restarts, sessions, rotations and segments.

Every random value here is etun's own: each session comes from a real Noise handshake between two
Datapaths (_fast.Handshake draws the ephemeral keys), installed with install_session() as the
daemon installs it. A restart is a new Datapath, as a new process has. The split keys are read
with _fast.handshake_keys() before install_session() takes them, so that each datagram's key and
nonce can be named (PROTOCOL.md §3.1, §4.2) and checked against its tag.
"""


from etun import _fast, keys
from tests import reference as ref
from tests.material import random_secrets

ENCRYPT = _fast.LEVEL_ENCRYPT


class Site:
    """One etun process: a Datapath, and the session secret it seals under now."""

    def __init__(self, secrets: keys.Secrets):
        self.index_root = secrets.index_root
        self.dp = _fast.Datapath(ENCRYPT)
        secrets.install(self.dp)
        self.send_secret: bytes | None = None  # S of the session the datapath seals under
        self.pending_secret: bytes | None = None  # a responder's, until its session is confirmed
        self.ids = iter(range(1, 256))  # receive session ids this site hands out

    def key_and_nonce(self, datagram: bytes) -> tuple[bytes, bytes]:
        """The ChaCha20 key and nonce a datagram was encrypted under, its tag checked under the
        matching mac_key so that the key is named right."""
        ptype = datagram[0] & 0x0F
        key_index = int.from_bytes(datagram[4:8], "big")
        if ptype == _fast.TYPE_SESSION:
            enc_key, mac_key = ref.control_keys(self.send_secret)
        else:
            enc_key, mac_key = ref.data_keys(self.send_secret, self.index_root, key_index)
        assert ref.compute_tag(mac_key, datagram[:-16]) == datagram[-16:]
        base = int.from_bytes(datagram[10:16], "big") - datagram[2]
        return enc_key, datagram[4:10] + base.to_bytes(6, "big")

    def traffic(self, peer: "Site", used: list, frames: int = 20) -> None:
        """Seal frames of two segments and a SESSION message, each one ChaCha20 pass under one
        (key, nonce) pair; the peer opens every one."""
        for i in range(frames):
            sealed = self.dp.seal(bytes(14 + (i * 397) % 3000), segment=i % 2)
            self.deliver(peer, sealed, used)
        self.deliver(peer, self.dp.seal(bytes(40), _fast.TYPE_SESSION), used)

    def deliver(self, peer: "Site", sealed: list, used: list) -> None:
        pairs = {self.key_and_nonce(d) for d in sealed}
        assert len(pairs) == 1  # the fragments of a frame share its nonce
        used += pairs
        opened = [item for d in sealed for item in peer.dp.open(d)]
        assert len(opened) == 1 and peer.dp.last_drop is None


def handshake(initiator: Site, responder: Site, ephemerals=(None, None)) -> None:
    """A real handshake; both sites install the session. Each starts sending at the key index it
    has reached (§4.2), and the responder's session waits for confirmation (§5.2). The payloads
    are zeros, so every difference between two sessions' keys is etun's own draw; `ephemerals`
    (initiator's, responder's) pins those draws, to show what the checks see when they repeat."""
    ours, theirs = _fast.Handshake(initiator.dp), _fast.Handshake(responder.dp)
    theirs.respond(ours.initiate(bytes(_fast.INIT_PAYLOAD_LEN), ephemeral=ephemerals[0]))
    ours.finish(theirs.reply(bytes(_fast.RESP_PAYLOAD_LEN), ephemeral=ephemerals[1]))
    k1, k2 = _fast.handshake_keys(ours)
    assert _fast.handshake_keys(theirs) == (k1, k2)
    i_id, r_id = next(initiator.ids), next(responder.ids)
    i_index, r_index = initiator.dp.send_index or 0, responder.dp.send_index or 0
    initiator.dp.install_session(ours, i_id, r_id, i_index, r_index)
    responder.dp.install_session(theirs, r_id, i_id, r_index, i_index)
    initiator.send_secret = k1
    responder.pending_secret = k2


def confirm(initiator: Site, responder: Site, used: list) -> None:
    """The initiator's first SESSION message confirms the session; the responder sends under it."""
    initiator.deliver(responder, initiator.dp.seal(bytes(40), _fast.TYPE_SESSION), used)
    assert responder.dp.sessions()["next"] is None
    responder.send_secret, responder.pending_secret = responder.pending_secret, None


def rotate(*sites: Site) -> None:
    for site in sites:
        site.dp.rotate_send()


def test_no_key_nonce_pair_repeats_across_directions_restarts_sessions_and_rotations():
    secrets = random_secrets()
    used: list[tuple[bytes, bytes]] = []

    a, b = Site(secrets), Site(secrets)
    handshake(a, b)
    confirm(a, b, used)
    for _ in range(3):
        a.traffic(b, used)
        b.traffic(a, used)
        rotate(a, b)
    handshake(b, a)  # B renews the session; both carry on from the indices they reached
    confirm(b, a, used)
    a.traffic(b, used)
    b.traffic(a, used)
    assert a.dp.send_index == b.dp.send_index == 3

    a = Site(secrets)  # A restarts: a new process, its counters and indices from 0 again
    handshake(a, b)
    confirm(a, b, used)
    a.traffic(b, used)
    b = Site(secrets)  # and so does B
    handshake(b, a)
    confirm(b, a, used)
    a.traffic(b, used)
    b.traffic(a, used)

    frames = 20 + 1  # per traffic() call
    assert len(used) == 11 * frames + 4  # eleven traffic() calls and four confirmations
    assert len(set(used)) == len(used)


def test_the_check_sees_a_repeat_when_restarted_sites_draw_the_same_ephemeral_keys():
    """The uniqueness above comes from etun's ephemeral keys: pinned to the same values across a
    restart of both sites, the same (key, nonce) pairs come back, and the check counts them."""
    secrets, pinned = random_secrets(), (bytes(range(32)), bytes(range(32, 64)))
    used: list[tuple[bytes, bytes]] = []
    for _ in range(2):                      # both sites start, talk, and restart
        a, b = Site(secrets), Site(secrets)
        handshake(a, b, pinned)
        confirm(a, b, used)
        a.traffic(b, used)
    assert len(set(used)) == len(used) // 2


def test_fragments_of_one_frame_share_one_nonce_and_frames_never_do():
    secrets = random_secrets()
    a, b = Site(secrets), Site(secrets)
    handshake(a, b)
    datagrams = a.dp.seal(bytes(9000))
    assert len(datagrams) > 1 and len({a.key_and_nonce(d) for d in datagrams}) == 1
    other = a.dp.seal(bytes(9000))
    assert a.key_and_nonce(other[0]) != a.key_and_nonce(datagrams[0])


def test_every_handshake_draws_new_keys_for_both_directions():
    secrets = random_secrets()
    a, b = Site(secrets), Site(secrets)
    seen = set()
    for _ in range(5):
        handshake(a, b)
        seen |= {a.send_secret, b.pending_secret}
        confirm(a, b, [])
    assert len(seen) == 10
