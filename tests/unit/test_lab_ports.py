"""The lab's ports come from outside the kernel's ephemeral range, so no outgoing connection
can take one between choosing it and the component binding it."""

from __future__ import annotations

import socket

from wharf.lab.lab import _ephemeral_range, _free_ports


def test_ports_are_distinct_bindable_and_outside_the_ephemeral_range():
    low, high = _ephemeral_range()
    ports = _free_ports(40)
    assert len(set(ports)) == 40
    assert all(not low <= p <= high for p in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_taken_port_is_never_chosen():
    taken = []
    try:
        for port in _free_ports(20):
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            taken.append(sock)
        again = set(_free_ports(200))
        assert not again & {s.getsockname()[1] for s in taken}
    finally:
        for sock in taken:
            sock.close()
