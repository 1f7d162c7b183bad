"""Which inbox URLs the broker may call, so the registry cannot aim it at internal hosts.

Only https, to public addresses. Loopback (development) and private networks (an NRM
node on an internal network) must each be allowed explicitly by the operator.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InboxRefused(ValueError):
    """The inbox URL or an address it resolves to is not allowed; the text says why."""


@dataclass(frozen=True)
class InboxPolicy:
    allow_loopback: bool = False
    allow_private: bool = False

    def check_url(self, url: str) -> str:
        """Check the URL's form; return its host. Literal IP hosts are checked here too."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http"):
            raise InboxRefused("an inbox URL must be https")
        if parts.username or parts.password:
            raise InboxRefused("an inbox URL must not carry credentials")
        host = parts.hostname
        if not host:
            raise InboxRefused("an inbox URL needs a host")
        literal = _literal_address(host)
        loopback_name = host == "localhost" or host.endswith(".localhost")
        if parts.scheme == "http" and not (
            self.allow_loopback and (loopback_name or (literal is not None and literal.is_loopback))
        ):
            raise InboxRefused(
                "an inbox URL must be https (http only to loopback, "
                "with TRM_ALLOW_LOOPBACK_INBOXES)"
            )
        if loopback_name and not self.allow_loopback:
            raise InboxRefused("loopback inboxes need TRM_ALLOW_LOOPBACK_INBOXES=true")
        if literal is not None:
            self.check_addresses([literal])
        return host

    def check_addresses(self, addresses: Iterable[IPAddress]) -> None:
        """Every address the host resolves to must be allowed (one bad one refuses all)."""
        for address in addresses:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address.is_loopback:
                if not self.allow_loopback:
                    raise InboxRefused("loopback inboxes need TRM_ALLOW_LOOPBACK_INBOXES=true")
            elif address.is_link_local or address.is_multicast or address.is_unspecified:
                raise InboxRefused("link-local, multicast and unspecified addresses are refused")
            elif not address.is_global and not self.allow_private:
                raise InboxRefused(
                    "private or reserved addresses need TRM_ALLOW_PRIVATE_INBOXES=true"
                )


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
