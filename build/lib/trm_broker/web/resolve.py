"""Resolving an inbox host to its addresses, without blocking the event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from trm_broker.domain.inbox_url import IPAddress


async def resolve(host: str) -> list[IPAddress]:
    """All addresses ``host`` resolves to; an empty list when it does not resolve."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
