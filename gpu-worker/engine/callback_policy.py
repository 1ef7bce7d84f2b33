"""Which addresses may receive callbacks (contract section 4), and the transport that enforces it.

With ``CALLBACK_ALLOWED_HOSTS``: only those hosts (``host`` or ``host:port``; http or https).
Without: only https to hosts whose every address is public. An IPv6 address that carries an
IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``
and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo) is public only when the IPv4 address it
carries is: ``[::127.0.0.1]`` or ``[64:ff9b::7f00:1]`` reach loopback through a translator.

``parse_callback_url`` is the shape check done when the job is parsed (a URL that cannot be
parsed fails the job before any work); ``check_callback_url`` is the policy check, done before
a job runs and again before sending; ``PublicOnlyTransport`` checks the address each
connection is made to (a DNS-rebinding host cannot answer public to the check and private to
the connection).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class CallbackRefused(Exception):
    """The callback URL is not allowed by the operator's policy."""


class CallbackUnresolvable(Exception):
    """The callback host does not resolve now (may be transient: not a policy refusal)."""


async def resolve_host(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries by a standard translation or tunnel."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in _NAT64):
        found.append(low32)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # "::" and "::1" are not IPv4-compatible forms
        found.append(low32)
    return found


def is_public(address: str) -> bool:
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(v4.is_global and not v4.is_multicast for v4 in _embedded_ipv4(ip))
    return True


@dataclass(frozen=True)
class CallbackUrl:
    scheme: str
    host: str
    port: int | None


def parse_callback_url(url: str) -> CallbackUrl:
    """``ValueError`` unless ``url`` is an absolute http(s) URL with a host, a valid port, no
    credentials and nothing the HTTP client would refuse later."""
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise ValueError("callback_url contains spaces or control characters")
    parts: SplitResult = urlsplit(url)  # ValueError on an unbalanced IPv6 bracket
    port = parts.port  # ValueError when not a number in 0..65535
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("callback_url must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("callback_url must not carry credentials")
    if port == 0:
        raise ValueError("callback_url has port 0")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"callback_url cannot be used ({exc})") from exc
    return CallbackUrl(parts.scheme, host, port)


async def addresses_of(host: str, port: int, resolver: Resolver) -> list[str]:
    """``host`` itself when it is an address (checked as it is, never resolved), else its addresses."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return await resolver(host, port)


def refuse_unless_allowed(host: str, addresses: list[str], allow: Callable[[str], bool] = is_public) -> None:
    if not addresses or not all(allow(a) for a in addresses):
        raise CallbackRefused(f"callback host {host} is not a public address")


async def check_callback_url(url: str, allowed_hosts: Sequence[str], resolver: Resolver = resolve_host) -> None:
    """Raise ``CallbackRefused`` unless the operator's policy lets ``url`` receive callbacks;
    ``CallbackUnresolvable`` when the host does not resolve (the sender retries that)."""
    try:
        parsed = parse_callback_url(url)
    except ValueError as exc:
        raise CallbackRefused(str(exc)) from exc
    if allowed_hosts:
        names = {parsed.host, f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host}
        if not names & set(allowed_hosts):
            raise CallbackRefused(f"callback host {parsed.host} is not in CALLBACK_ALLOWED_HOSTS")
        return
    if parsed.scheme != "https":
        raise CallbackRefused("callback_url must use https (set CALLBACK_ALLOWED_HOSTS to allow http hosts)")
    try:
        addresses = await addresses_of(parsed.host, parsed.port or 443, resolver)
    except OSError as exc:
        raise CallbackUnresolvable(f"callback host {parsed.host} does not resolve") from exc
    refuse_unless_allowed(parsed.host, addresses)


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Sends each request to an address ``allow`` admits (public ones), checked on the very address
    connected to: the host is resolved here, every address checked, and the request goes to the
    first one, with the URL's host kept in the ``Host`` header and as the TLS server name (so the
    certificate is still verified against the host name, not the address).

    Connections are not kept alive: a pooled connection is keyed by address, and one opened (and
    its certificate checked) for one host name must not carry a request for another name that
    resolves to the same address. No proxies: a proxy would make the connection, not this check.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, resolver: Resolver = resolve_host,
                 allow: Callable[[str], bool] = is_public) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport(
            trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))
        self._resolver = resolver
        self._allow = allow

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            addresses = await addresses_of(host, port, self._resolver)
        except OSError as exc:  # a connection failure like any other: retried
            raise httpx.ConnectError(f"callback host {host} does not resolve", request=request) from exc
        refuse_unless_allowed(host, addresses, self._allow)
        pinned = httpx.Request(request.method, request.url.copy_with(host=addresses[0]), headers=request.headers,
                               stream=request.stream, extensions={**request.extensions, "sni_hostname": host})
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()
