"""core.server.free_port: a server's port is drawn below the OS's ephemeral range, where
`bentoml serve`'s own reserved ports (circus endpoints) cannot land on it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core import server
from core.server import PORTS_BELOW_EPHEMERAL, ephemeral_low, free_port


def test_the_port_lies_below_the_ephemeral_range_and_is_free() -> None:
    low = ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert low - PORTS_BELOW_EPHEMERAL <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # raises if it was not free


def test_a_taken_port_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "PORTS_BELOW_EPHEMERAL", 1)  # the taken port is the only candidate
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert free_port(low=port + 1) != port


def test_the_ephemeral_range_is_read_from_the_os_file(tmp_path: Path) -> None:
    ranges = tmp_path / "range"
    ranges.write_text("40000\t60999\n")
    assert ephemeral_low(ranges) == 40000
    ranges.write_text("nonsense")
    assert ephemeral_low(ranges) == 32768
    assert ephemeral_low(tmp_path / "missing") == 32768


def test_with_no_room_below_it_falls_back_to_an_os_pick() -> None:
    port = free_port(low=1024)
    assert 0 < port < 65536
