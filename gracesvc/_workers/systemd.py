# -*- test-case-name: tests.unit.workers.test_systemd -*-
"""
systemd's C{Type=notify}: the master tells systemd when the tree is ready,
reloading and stopping.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, MutableMapping


def systemdNotifier(environ: MutableMapping[str, str]) -> Callable[[str], None]:
    """
    @return: what tells systemd the service's state (C{READY=1},
        C{RELOADING=1}, C{STOPPING=1}) on C{NOTIFY_SOCKET} under
        C{Type=notify}; without it, what does nothing.  C{NOTIFY_SOCKET} is
        taken out of C{environ}, so that the workers do not inherit it.
    """
    path = environ.pop("NOTIFY_SOCKET", "")
    if not path:
        return lambda state: None
    if path.startswith("@"):
        path = "\0" + path[1:]

    def notify(state: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode("utf-8"), path)
        except OSError:
            pass

    return notify
