"""Record what etun's capture socket reads on a LAN NIC (vnet header, frame, VLAN auxdata) as JSON lines."""

import json
import socket
import struct
import sys
import time

ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA, PACKET_VNET_HDR = 0x0003, 263, 8, 15
AUXDATA = struct.Struct("=IIIHHHH")          # struct tpacket_auxdata


def main() -> int:
    ifname, seconds, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    # A TSO burst is a few 64 KiB super-frames at once: room for all of them while we print.
    s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)          # SO_RCVBUFFORCE (root)
    s.bind((ifname, 0))
    s.settimeout(0.2)
    print(json.dumps({"ready": True}), flush=True)
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and n < limit:
        try:
            data, ancillary, _, _ = s.recvmsg(70000, 256)
        except TimeoutError:
            continue
        status = tpid = tci = 0
        for level, kind, blob in ancillary:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(blob) >= AUXDATA.size:
                status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(blob)
        print(json.dumps({"msg": data.hex(), "status": status, "tpid": tpid, "tci": tci}), flush=True)
        n += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
