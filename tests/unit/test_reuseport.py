"""Per-worker SO_REUSEPORT listeners: argument parsing, the worker's socket swap, the server patch."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest
from circus.sockets import CircusSocket

from core.server import free_port
from services import reuseport

LINUX_ONLY = pytest.mark.skipif(not reuseport.enabled(), reason="SO_REUSEPORT listeners are Linux-only")


def test_worker_fd_reads_the_fd_flag() -> None:
    assert reuseport.worker_fd(["svc:S", "--fd", "3", "--worker-id", "1"]) == 3
    assert reuseport.worker_fd(["svc:S", "--worker-id", "1"]) is None
    assert reuseport.worker_fd(["svc:S", "--fd"]) is None
    assert reuseport.worker_fd(["--fd", "x"]) is None


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(reuseport.SWITCH_ENV, value)
    assert not reuseport.enabled()


def test_not_a_worker_in_tests() -> None:
    assert not reuseport.is_worker_process()


@pytest.fixture
def unbound_fd() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    fd = sock.detach()
    yield fd
    os.close(fd)


@LINUX_ONLY
def test_worker_swaps_the_unbound_socket_for_a_listener_on_the_address(unbound_fd: int) -> None:
    port = free_port()
    address = {"host": "127.0.0.1", "port": port, "family": int(socket.AF_INET), "backlog": 16}
    assert reuseport.replace_worker_socket(unbound_fd, address)
    sibling = reuseport.open_listener("127.0.0.1", port, socket.AF_INET, 16)  # a second worker
    listener = socket.socket(fileno=os.dup(unbound_fd))
    try:
        assert listener.getsockname() == ("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        listener.close()
        sibling.close()


@LINUX_ONLY
def test_worker_leaves_an_already_bound_socket_alone() -> None:
    bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bound.bind(("127.0.0.1", 0))
    try:
        address = {"host": "127.0.0.1", "port": free_port(), "family": int(socket.AF_INET), "backlog": 16}
        assert not reuseport.replace_worker_socket(bound.fileno(), address)
        assert bound.getsockname()[1] != address["port"]
    finally:
        bound.close()


@pytest.fixture
def patched_circus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CircusSocket, "__init__", CircusSocket.__init__)  # restored after the test
    monkeypatch.delenv(reuseport.ADDRESS_ENV, raising=False)
    reuseport._patch_server_socket()


@LINUX_ONLY
@pytest.mark.usefixtures("patched_circus")
def test_server_socket_is_created_reuseport_and_its_address_published() -> None:
    port = free_port()
    api = CircusSocket(name=reuseport.API_SOCKET_NAME, host="127.0.0.1", port=port, backlog=64)
    other = CircusSocket(name="something-else", host="127.0.0.1", port=free_port())
    try:
        assert api.so_reuseport and not other.so_reuseport
        published = json.loads(os.environ[reuseport.ADDRESS_ENV])
        assert published == {"host": "127.0.0.1", "port": port, "family": int(socket.AF_INET), "backlog": 64}
    finally:
        api.close()
        other.close()


@LINUX_ONLY
@pytest.mark.usefixtures("patched_circus")
def test_server_socket_on_a_taken_port_fails_at_once() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(OSError):
            CircusSocket(name=reuseport.API_SOCKET_NAME, host="127.0.0.1", port=taken.getsockname()[1])
        assert reuseport.ADDRESS_ENV not in os.environ
    finally:
        taken.close()
