"""Who is asking: the client's address and whether it came over HTTPS, as the
reverse proxies in front of the server say, when they are trusted.

Behind a proxy every request comes from the proxy's address and over its
plain-HTTP hop. ``X-Forwarded-For`` and ``X-Forwarded-Proto`` name the real
client and scheme, but anyone can send them: they are believed only from the
proxies in ``DESKMATE_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from bot.settings import IPNetwork

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Client:
    """The client of one request.

    ``address``: its IP address as text ("?" when the server cannot tell);
    ``secure``: whether the client's own connection is HTTPS.
    """

    address: str
    secure: bool

    @property
    def loopback(self) -> bool:
        """Whether the client is this machine."""
        found = _parse(self.address)
        return found is not None and found.is_loopback


def client_of(request: web.Request, trusted: Sequence[IPNetwork]) -> Client:
    """The client of ``request``: its peer, unless the peer is a trusted proxy.

    From a trusted proxy, ``X-Forwarded-For`` is read from the right (the hop
    the proxy itself added) leftwards past further trusted proxies: the first
    address that is not one is the client. Addresses to the left of it were
    written by the client and are not believed. ``X-Forwarded-Proto`` says
    ``https`` when the client's connection was.
    """
    peer = _parse(request.remote or "")
    if peer is None:
        return Client(request.remote or "?", request.secure)
    if not _within(peer, trusted):
        return Client(str(peer), request.secure)
    client = peer
    hops = [h for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    for hop in reversed(hops):
        found = _parse(hop.strip())
        if found is None:
            break  # a hop that is no address: keep the last one we could read
        client = found
        if not _within(found, trusted):
            break
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return Client(str(client), request.secure or proto == "https")


def _within(address: Address, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def _parse(text: str) -> Address | None:
    """An address as a header or socket writes it: bare, ``[v6]:port`` or
    ``v4:port``; IPv4 mapped into IPv6 is read as IPv4."""
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
