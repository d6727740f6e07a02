"""Fetching an image a client named by URL, without letting the URL reach inside the platform (SSRF).

The rules, all enforced here and none of them configurable from the environment:
- https only; no credentials in the URL.
- The host is resolved once per hop, and the fetch is refused if ANY address it resolves to is not
  a public unicast address (AddressPolicy): private, loopback, link-local, multicast, reserved,
  unspecified, shared (100.64.0.0/10), benchmarking and documentation ranges, cloud metadata
  addresses, and the IPv4-mapped, 6to4 and NAT64 forms of any of these.
- The connection goes to the vetted address itself (the URL's host is replaced by the IP), with the
  original name sent as Host and as TLS SNI, and the certificate checked against that name: a DNS
  answer that changes between the check and the connection (rebinding) cannot redirect it.
- Redirects are followed at most `max_redirects` times, each hop vetted again like the first.
- A connect limit and a total limit (resolution, redirects and body included).
- The body is read as a stream and abandoned as soon as it passes `max_bytes` (Content-Length is
  not trusted; one that already says too much ends the fetch before the body is read). No
  content-encoding is accepted (no decompression bombs), and the body must start like a PNG, JPEG,
  GIF or WebP file (magic bytes), whatever Content-Type says.

Tests inject a policy that also allows 127.0.0.1, a resolver and a TLS context (constructor
parameters); production code never passes them.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from lexora_gateway.chat.image_inputs import SNIFF_BYTES, size_text, sniff

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> every address the name resolves to.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "Lexora-ImageFetcher/1"

_net = ipaddress.ip_network
# Cloud instance-metadata endpoints, refused by name even where they would pass as public.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "168.63.129.16",  # Azure wireserver
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::123",
    )
)
# IANA special-purpose ranges that Python's ipaddress does not already call private or reserved.
_SPECIAL = (
    (_net("100.64.0.0/10"), "shared address space (carrier-grade NAT)"),
    (_net("192.0.0.0/24"), "an IETF protocol assignment"),
    (_net("192.88.99.0/24"), "the deprecated 6to4 relay anycast range"),
    (_net("198.18.0.0/15"), "a benchmarking range"),
    (_net("fec0::/10"), "a site-local IPv6 address"),
    (_net("2001::/32"), "a Teredo tunnel address"),
    (_net("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_net("100::/64"), "the IPv6 discard prefix"),
)
_NAT64 = _net("64:ff9b::/96")
_REFUSED_NAMES = ("localhost", "localhost.localdomain", "metadata", "metadata.google.internal")
_REFUSED_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


class FetchRefused(Exception):
    """The URL was refused or its image could not be fetched; the message says why, for the client."""


class FetchTimeout(FetchRefused):
    """The fetch ran past its connect or total time limit."""


class AddressPolicy(Protocol):
    def host_refusal(self, host: str) -> str | None:
        """Why a host name may not be fetched from at all (before resolving it), or None."""
        ...

    def address_refusal(self, address: IPAddress) -> str | None:
        """Why an address may not be connected to, or None."""
        ...


class PublicAddressesOnly:
    """The production policy: public unicast addresses only."""

    def host_refusal(self, host: str) -> str | None:
        name = host.rstrip(".").lower()
        if name in _REFUSED_NAMES or name.endswith(_REFUSED_SUFFIXES):
            return f"{host} is a local or internal name"
        return None

    def address_refusal(self, address: IPAddress) -> str | None:
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                form, v4 = embedded
                why = self.address_refusal(v4)
                return f"the {form} form of {v4}, {why}" if why else None
        for network, why in _SPECIAL:
            if address.version == network.version and address in network:
                return why
        for flag, why in (
            ("is_unspecified", "the unspecified address"),
            ("is_loopback", "a loopback address"),
            ("is_link_local", "a link-local address"),
            ("is_multicast", "a multicast address"),
            ("is_reserved", "a reserved address"),
            ("is_private", "a private address"),
        ):
            if getattr(address, flag):
                return why
        if not address.is_global:
            return "not a public address"
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or well-known-prefix NAT64 IPv6 address."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


PUBLIC_ONLY = PublicAddressesOnly()


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for host (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@functools.cache
def _default_tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # certifi's roots, hostname checking on


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    media_type: str  # by the magic bytes
    url: str  # the last hop's URL


class SafeFetcher:
    def __init__(
        self,
        *,
        max_bytes: int,
        connect_timeout_s: float = 5.0,
        total_timeout_s: float = 20.0,
        max_redirects: int = MAX_REDIRECTS,
        policy: AddressPolicy = PUBLIC_ONLY,
        resolver: Resolver = system_resolver,
        tls: ssl.SSLContext | None = None,
    ):
        self.max_bytes = max_bytes
        self.connect_timeout_s = connect_timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_redirects = max_redirects
        self.policy = policy
        self.resolver = resolver
        self._tls = tls

    async def fetch_image(self, url: str) -> FetchedImage:
        """The image at url, or FetchRefused (FetchTimeout) saying why not."""
        try:
            async with asyncio.timeout(self.total_timeout_s):
                return await self._fetch(url)
        except TimeoutError:
            raise FetchTimeout(f"the image URL did not deliver within {self.total_timeout_s:g} s") from None
        except httpx.TimeoutException:
            raise FetchTimeout(
                f"the image URL's server did not answer in time (connect limit {self.connect_timeout_s:g} s)"
            ) from None
        except (httpx.HTTPError, OSError) as exc:  # the connection broke mid-way, a malformed response, ...
            raise FetchRefused(f"the download failed: {_reason(exc)}") from None

    async def _fetch(self, url: str) -> FetchedImage:
        timeout = httpx.Timeout(self.total_timeout_s, connect=self.connect_timeout_s)
        async with httpx.AsyncClient(
            verify=self._tls or _default_tls(),
            trust_env=False,  # no proxy from the environment: it would resolve the name itself
            follow_redirects=False,
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),  # a connection per hop, with its own SNI
        ) as client:
            current = _parse(url)
            for _hop in range(self.max_redirects + 1):
                request = await self._request_to_vetted_address(client, current)
                try:
                    response = await client.send(request, stream=True)
                except httpx.TimeoutException:
                    raise
                except httpx.HTTPError as exc:
                    raise FetchRefused(f"could not connect to {current.host}: {_reason(exc)}") from None
                try:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchRefused(f"{current.host} answered a redirect without a Location")
                        try:
                            current = _parse(str(current.join(location)))
                        except httpx.InvalidURL:
                            raise FetchRefused("the redirect's Location is not a valid URL") from None
                        continue
                    if response.status_code != 200:
                        raise FetchRefused(f"{current.host} answered HTTP {response.status_code}")
                    data, media_type = await self._read(response)
                    return FetchedImage(data, media_type, str(current))
                finally:
                    await response.aclose()
            raise FetchRefused(f"more than {self.max_redirects} redirects")

    async def _request_to_vetted_address(self, client: httpx.AsyncClient, url: httpx.URL) -> httpx.Request:
        if url.scheme != "https":
            raise FetchRefused("only https URLs are fetched (a redirect led to http)")
        if url.userinfo:
            raise FetchRefused("URLs with credentials are not fetched")
        host = url.host
        if not host:
            raise FetchRefused("the URL has no host")
        why = self.policy.host_refusal(host)
        if why:
            raise FetchRefused(f"{why}; only public hosts are fetched")
        port = url.port or 443
        address = await self._vetted_address(host, port)
        host_header = host if ":" not in host else f"[{host}]"
        if url.port is not None:
            host_header += f":{url.port}"
        extensions = {} if _is_ip(host) else {"sni_hostname": host}
        return client.build_request(
            "GET",
            url.copy_with(host=str(address)),
            headers={
                "Host": host_header,
                "Accept": "image/png, image/jpeg, image/gif, image/webp",
                "Accept-Encoding": "identity",
                "User-Agent": _USER_AGENT,
            },
            extensions=extensions,
        )

    async def _vetted_address(self, host: str, port: int) -> IPAddress:
        """Resolve once; every address must pass the policy; the first is the one connected to."""
        if _is_ip(host):
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        else:
            try:
                addresses = await self.resolver(host, port)
            except (OSError, UnicodeError, ValueError):
                raise FetchRefused(f"the host name {host} could not be resolved") from None
        if not addresses:
            raise FetchRefused(f"the host name {host} could not be resolved")
        for address in addresses:
            why = self.policy.address_refusal(address)
            if why:
                shown = host if _is_ip(host) else f"{host} resolves to {address}"
                raise FetchRefused(f"{shown}, {why}; only public addresses are fetched")
        return addresses[0]

    async def _read(self, response: httpx.Response) -> tuple[bytes, str]:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchRefused(f"the server sent the image with Content-Encoding {encoding}; send it uncompressed")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchRefused(f"the image is {size_text(int(declared))}; the limit is {size_text(self.max_bytes)}")
        body = bytearray()
        sniffed = False
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise FetchRefused(f"the image is larger than the limit of {size_text(self.max_bytes)}")
            if not sniffed and len(body) >= SNIFF_BYTES:
                sniffed = True
                if sniff(bytes(body[:SNIFF_BYTES])) is None:
                    raise FetchRefused(_NOT_AN_IMAGE)
        media_type = sniff(bytes(body[:SNIFF_BYTES]))
        if media_type is None:
            raise FetchRefused(_NOT_AN_IMAGE)
        return bytes(body), media_type


_NOT_AN_IMAGE = "the URL did not return a PNG, JPEG, GIF or WebP image (judged by its first bytes)"


def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchRefused("not a valid URL") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate could not be verified"
    return text[:200]
