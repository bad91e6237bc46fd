# -*- test-case-name: tests.e2e.test_linux -*-
"""
What gracesvc reads from the Linux kernel that no Python API wraps: two
fields of C{struct tcp_info} (C{<linux/tcp.h>}), read with
C{getsockopt(IPPROTO_TCP, TCP_INFO)}, and C{net.core.somaxconn}.

  - For a listening socket the kernel reports its accept queue's limit,
    the backlog it actually applies (C{listen()} clamps it to
    C{net.core.somaxconn} without a word), in C{tcpi_sacked}, as C{ss -l}
    shows it in Send-Q.
  - For a connection, C{tcpi_bytes_acked} (Linux 4.1 and later) counts the
    bytes the peer acknowledged: whether a client that has data waiting
    for it is still taking any.

Each is pinned by C{tests/e2e/test_linux.py}, on real sockets.  Elsewhere
(another kernel, a Unix socket) each function says it cannot tell.
"""

from __future__ import annotations

import socket
import struct

#: The offset of C{tcpi_sacked} in C{struct tcp_info}: 8 bytes of u8
#: fields and bit fields, then the u32s C{rto}, C{ato}, C{snd_mss},
#: C{rcv_mss}, C{unacked}.
_SACKED = 28
#: The offset of C{tcpi_bytes_acked}, a u64, after the u32s up to
#: C{total_retrans} (104 bytes) and the u64s C{pacing_rate} and
#: C{max_pacing_rate}.
_BYTES_ACKED = 120
#: As much of C{struct tcp_info} as these need.
_LENGTH = _BYTES_ACKED + 8

#: Where the kernel's largest backlog is.
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def _tcpInfo(sock: socket.socket) -> bytes | None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    tcpInfo = getattr(socket, "TCP_INFO", None)
    if tcpInfo is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, tcpInfo, _LENGTH)
    except OSError:
        return None


def listenBacklog(sock: socket.socket) -> int | None:
    """
    @return: the accept queue limit the kernel applies to the listening TCP
        socket C{sock}, or L{None} if it cannot tell (not TCP, not Linux).
    """
    info = _tcpInfo(sock)
    if info is None or len(info) < _SACKED + 4:
        return None
    value: int = struct.unpack_from("=I", info, _SACKED)[0]
    return value


def bytesAcknowledged(sock: socket.socket) -> int | None:
    """
    @return: how many bytes the peer of the TCP connection C{sock} has
        acknowledged so far, or L{None} if the kernel does not say (not
        TCP, a kernel before 4.1).
    """
    info = _tcpInfo(sock)
    if info is None or len(info) < _LENGTH:
        return None
    value: int = struct.unpack_from("=Q", info, _BYTES_ACKED)[0]
    return value


def kernelMaxBacklog(path: str = SOMAXCONN_PATH) -> int:
    """
    @return: the largest backlog the kernel grants a listening socket
        (C{net.core.somaxconn}, per network namespace: a container's own),
        or L{socket.SOMAXCONN} where it cannot be read.
    """
    try:
        with open(path) as f:
            return max(1, int(f.read().strip()))
    except (OSError, ValueError):
        return socket.SOMAXCONN
