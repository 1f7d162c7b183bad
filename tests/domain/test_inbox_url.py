"""The registry cannot aim the broker at internal hosts."""

from __future__ import annotations

import ipaddress

import pytest

from trm_broker.domain.inbox_url import InboxPolicy, InboxRefused

STRICT = InboxPolicy()
DEV = InboxPolicy(allow_loopback=True)
INTERNAL = InboxPolicy(allow_private=True)


@pytest.mark.parametrize(
    ("policy", "url"),
    [
        (STRICT, "https://node.naptip.example/inbox"),
        (STRICT, "https://8.8.8.8/inbox"),
        (DEV, "http://127.0.0.1:8500/inbox"),
        (DEV, "http://localhost:8500/inbox"),
        (DEV, "https://[::1]/inbox"),
        (INTERNAL, "https://10.1.2.3/inbox"),
    ],
)
def test_allowed_urls(policy: InboxPolicy, url: str) -> None:
    policy.check_url(url)


@pytest.mark.parametrize(
    ("policy", "url"),
    [
        (STRICT, "http://node.naptip.example/inbox"),  # plain http to a public host
        (DEV, "http://node.naptip.example/inbox"),  # http only to loopback
        (STRICT, "ftp://node.example/inbox"),
        (STRICT, "https://user:pw@node.example/inbox"),
        (STRICT, "http://127.0.0.1:8500/inbox"),
        (STRICT, "https://localhost/inbox"),
        (STRICT, "https://10.1.2.3/inbox"),
        (STRICT, "https://192.168.0.1/inbox"),
        (STRICT, "https://[fd00::1]/inbox"),
        (INTERNAL, "https://169.254.169.254/latest/meta-data"),  # cloud metadata
        (INTERNAL, "https://[fe80::1]/inbox"),
        (INTERNAL, "https://0.0.0.0/inbox"),
        (INTERNAL, "https://[::ffff:127.0.0.1]/inbox"),  # loopback dressed as IPv6
        (STRICT, "https:///inbox"),
    ],
)
def test_refused_urls(policy: InboxPolicy, url: str) -> None:
    with pytest.raises(InboxRefused):
        policy.check_url(url)


def test_one_internal_address_among_public_ones_refuses_the_host() -> None:
    addresses = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.5")]
    with pytest.raises(InboxRefused):
        STRICT.check_addresses(addresses)
    INTERNAL.check_addresses(addresses)
