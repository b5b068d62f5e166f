"""One SO_REUSEPORT listening socket per worker, so the kernel spreads connections evenly.

`bentoml serve` hands every worker the same listening socket. Whichever worker's event loop
is awake accepts a new connection, and that is the busy one: measured here, 28 keep-alive
Locust users went 28:0 or 27:1 to one of 2 workers, and goodput fell from ~320 to ~190 RPS.
With SO_REUSEPORT each worker listens on its own socket bound to the same address and Linux
hashes each new connection to one of them.

BentoML has no option for it, so this module patches the two places involved, both at import
of the service module (which `bentoml serve` imports first in the server process, then in
every worker before uvicorn takes the socket):
* server process: the API server's circus socket is created with SO_REUSEPORT, so circus
  leaves it unbound, and its address is put in the environment the workers inherit;
* worker: a new socket with SO_REUSEPORT is bound to that address and put in place of the
  unbound one (same file descriptor number, given with `--fd`).
Anywhere else (not Linux, `bentoml serve` internals changed, SERVETUNE_REUSEPORT=0) nothing
is patched and BentoML's shared socket is used as before.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import sys
from typing import Any

from services.config import env_flag

ADDRESS_ENV = "SERVETUNE_REUSEPORT_ADDRESS"
SWITCH_ENV = "SERVETUNE_REUSEPORT"
API_SOCKET_NAME = "_bento_api_server"  # _bentoml_impl.server.serving.API_SERVER_NAME
WORKER_MODULE = "_bentoml_impl.worker.service"

logger = logging.getLogger(__name__)


def enabled() -> bool:
    """Per-worker listeners are on by default on Linux; SERVETUNE_REUSEPORT=0 turns them off."""
    on = env_flag(SWITCH_ENV, default=True)
    return on and sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def worker_fd(argv: list[str]) -> int | None:
    """The listening socket's descriptor a BentoML worker was given (`--fd N`), if any."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--fd" and value.isdigit():
            return int(value)
    return None


def is_worker_process() -> bool:
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None) == WORKER_MODULE


def open_listener(host: str, port: int, family: int, backlog: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT set before bind."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def replace_worker_socket(fd: int, address: dict[str, Any]) -> bool:
    """Put a new SO_REUSEPORT listener bound to `address` in place of `fd` (the unbound socket
    circus passed). Returns False, changing nothing, when `fd` is already bound."""
    family = int(address["family"])
    given = socket.socket(fileno=os.dup(fd))
    try:
        if given.getsockname()[1] != 0:
            return False
    finally:
        given.close()
    listener = open_listener(address["host"], int(address["port"]), family, int(address["backlog"]))
    try:
        os.dup2(listener.fileno(), fd)
    finally:
        listener.close()
    return True


def _patch_server_socket() -> None:
    """Make circus create the API server's socket with SO_REUSEPORT (left unbound)."""
    from circus.sockets import CircusSocket

    original_init = CircusSocket.__init__
    if getattr(original_init, "_servetune_reuseport", False):
        return

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        api_tcp = kwargs.get("name") == API_SOCKET_NAME and kwargs.get("path") is None
        if api_tcp:
            kwargs["so_reuseport"] = True
        original_init(self, *args, **kwargs)
        if api_tcp and self.so_reuseport:
            try:  # circus no longer binds it: fail here, as its bind would, if the port is taken
                open_listener(self.host, self.port, self.family, 1).close()
            except OSError:
                self.close()
                raise
            os.environ[ADDRESS_ENV] = json.dumps(
                {"host": self.host, "port": self.port, "family": int(self.family), "backlog": self.backlog}
            )

    init._servetune_reuseport = True  # type: ignore[attr-defined]
    CircusSocket.__init__ = init


def spread_connections_over_workers() -> None:
    """Call at import of a service module; see the module docstring."""
    if not enabled():
        return
    if is_worker_process():
        fd, raw = worker_fd(sys.argv), os.environ.get(ADDRESS_ENV)
        if fd is not None and raw:
            replace_worker_socket(fd, json.loads(raw))
        return
    try:
        _patch_server_socket()
    except (ImportError, AttributeError) as exc:  # a BentoML/circus without these internals
        logger.warning("per-worker listening sockets not enabled: %s", exc)
