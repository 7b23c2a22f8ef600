"""A packet capture on this host, as someone holding the node would take it: every TCP payload to or from
the given ports, on every interface (the real node's pods are veth pairs on this host's bridge), read with
a raw packet socket (root; no tcpdump needed). The deployed suite runs as root on the host of the real node."""

from __future__ import annotations

import socket
import struct
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


@dataclass
class Capture:
    """TCP payloads seen, by port (the one of ``ports`` the segment came from or went to)."""

    payloads: dict[int, list[bytes]] = field(default_factory=lambda: defaultdict(list))

    def joined(self, port: int) -> bytes:
        return b"".join(self.payloads.get(port, ()))


def _tcp_payload(frame: bytes) -> tuple[int, int, bytes] | None:
    if len(frame) < 14 + 20 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    if ip[9] != socket.IPPROTO_TCP or len(ip) < header + 20:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[header:total]
    source, destination = struct.unpack("!HH", tcp[:4])
    offset = (tcp[12] >> 4) * 4
    return source, destination, bytes(tcp[offset:])


@contextmanager
def capturing(*ports: int) -> Iterator[Capture]:
    """Capture while the block runs; the Capture holds what was seen once it ends."""
    capture = Capture()
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.settimeout(0.2)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                frame = raw.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            segment = _tcp_payload(frame)
            if segment is None or not segment[2]:
                continue
            source, destination, payload = segment
            for port in ports:
                if port in (source, destination):
                    capture.payloads[port].append(payload)

    thread = threading.Thread(target=run, name="sniffer", daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        stop.set()
        thread.join(timeout=5)
        raw.close()
