"""The SSRF-safe image fetcher: its address policy, and the fetcher against a real local HTTPS server.

The production policy refuses 127.0.0.1, so that refusal is tested as is. Everything else (size cap,
time limits, redirects, content sniffing, Host/SNI) is tested with a test-only policy object that
also allows 127.0.0.1, a resolver that maps made-up names to it, and the test CA's TLS context: all
three are constructor parameters, nothing an environment variable or setting could switch on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator

import pytest

from lexora_gateway.chat.safe_fetch import (
    PUBLIC_ONLY,
    FetchRefused,
    FetchTimeout,
    IPAddress,
    PublicAddressesOnly,
    SafeFetcher,
)
from support.https_server import PNG, HttpsServer, https_server

LOOPBACK = ipaddress.ip_address("127.0.0.1")
PUBLIC = ipaddress.ip_address("93.184.215.14")
MiB = 1024 * 1024


# ---- the address policy --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared address space"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),
        ("192.0.0.192", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "private"),  # documentation (TEST-NET-1)
        ("192.0.0.8", "IETF protocol assignment"),
        ("192.88.99.1", "6to4 relay"),
        ("fec0::1", "site-local"),
        ("2001:db8::1", "private"),  # documentation
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("64:ff9b:1::a00:1", "local-use NAT64"),
        ("100::1", "discard"),
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
        ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1"),
        ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254, a cloud metadata"),
        ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
        ("2002:a9fe:a9fe::1", "6to4 form of 169.254.169.254"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
        ("64:ff9b::a00:1", "NAT64 form of 10.0.0.1"),
        ("::127.0.0.1", "reserved"),  # IPv4-compatible (deprecated)
    ],
)
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    refusal = PUBLIC_ONLY.address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8",
     "2002:808:808::1", "64:ff9b::808:808"],
)  # fmt: skip
def test_public_unicast_addresses_pass(address: str) -> None:
    assert PUBLIC_ONLY.address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "app.localhost", "printer.local", "metadata.google.internal", "db.internal"]
)
def test_local_and_internal_names_are_refused_before_resolving(host: str) -> None:
    assert PUBLIC_ONLY.host_refusal(host) is not None


def test_ordinary_names_pass_the_name_check() -> None:
    assert PUBLIC_ONLY.host_refusal("images.example.com") is None


# ---- the fetcher, production policy ---------------------------------------------------------------
class LoopbackAlsoAllowed(PublicAddressesOnly):
    """Test-only: the production policy plus 127.0.0.1, where the test server listens."""

    def address_refusal(self, address: IPAddress) -> str | None:
        return None if address == LOOPBACK else super().address_refusal(address)


class Resolver:
    """Maps made-up names to fixed answers and counts the lookups."""

    def __init__(self, answers: dict[str, list[str]] | None = None):
        self.answers = answers or {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        if host not in self.answers:
            raise OSError(f"unknown test name {host}")
        return [ipaddress.ip_address(a) for a in self.answers[host]]


class Rebinding(Resolver):
    def __init__(self, answers: dict[str, list[str]], then: list[str]):
        super().__init__(answers)
        self.then = then

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        first = await super().__call__(host, port)
        self.answers[host] = self.then
        return first


@pytest.fixture(scope="module")
def server() -> Iterator[HttpsServer]:
    with https_server() as running:
        yield running


def fetcher(server: HttpsServer, resolver: Resolver | None = None, **kwargs: object) -> SafeFetcher:
    options: dict = {"max_bytes": MiB, "total_timeout_s": 5.0, "policy": LoopbackAlsoAllowed()}
    options.update(kwargs)
    resolver = resolver or Resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    return SafeFetcher(resolver=resolver, tls=server.client_tls, **options)


async def refused(fetch: SafeFetcher, url: str) -> str:
    with pytest.raises(FetchRefused) as caught:
        await fetch.fetch_image(url)
    return str(caught.value)


async def test_production_policy_refuses_loopback_without_connecting(server: HttpsServer) -> None:
    production = SafeFetcher(max_bytes=MiB, tls=server.client_tls)  # PUBLIC_ONLY, the system resolver
    before = server.seen.connections
    assert "a loopback address" in await refused(production, server.url("/png", "127.0.0.1"))
    assert "local or internal name" in await refused(production, server.url("/png", "localhost"))
    assert "loopback" in await refused(production, f"https://[::ffff:127.0.0.1]:{server.port}/png")
    assert "loopback" in await refused(production, f"https://2130706433:{server.port}/png")  # 127.0.0.1 as a number
    assert server.seen.connections == before, "nothing reached the server"


async def test_a_name_with_any_private_address_is_refused(server: HttpsServer) -> None:
    resolver = Resolver({"mixed.test": [str(PUBLIC), "10.0.0.7"]})
    production = SafeFetcher(max_bytes=MiB, resolver=resolver, tls=server.client_tls)
    message = await refused(production, "https://mixed.test/cat.png")
    assert "mixed.test resolves to 10.0.0.7, a private address" in message


async def test_plain_http_and_credentials_are_refused(server: HttpsServer) -> None:
    fetch = fetcher(server)
    assert "only https" in await refused(fetch, f"http://images.test:{server.port}/png")
    assert "credentials" in await refused(fetch, f"https://user:pw@images.test:{server.port}/png")


# ---- the fetcher, with loopback allowed for the test server -------------------------------------
async def test_fetches_from_the_vetted_address_with_the_right_host_and_sni(server: HttpsServer) -> None:
    # DNS rebinding: the name answers 127.0.0.1 (vetted) once, then an address the policy refuses.
    # The fetcher asks once and connects to the address it vetted.
    resolver = Rebinding({"images.test": ["127.0.0.1"]}, then=["10.0.0.9"])
    got = await fetcher(server, resolver).fetch_image(server.url("/png"))
    assert (got.data, got.media_type) == (PNG, "image/png")
    assert resolver.calls == ["images.test"]
    assert server.seen.hosts[-1] == f"images.test:{server.port}"
    assert server.seen.sni[-1] == "images.test"


async def test_the_certificate_is_checked_against_the_name_not_the_address(server: HttpsServer) -> None:
    resolver = Resolver({"elsewhere.test": ["127.0.0.1"]})  # the test certificate does not name it
    message = await refused(fetcher(server, resolver), server.url("/png", "elsewhere.test"))
    assert "certificate could not be verified" in message


async def test_the_content_type_header_is_not_trusted_the_bytes_are(server: HttpsServer) -> None:
    got = await fetcher(server).fetch_image(server.url("/png-as-text"))
    assert got.media_type == "image/png"
    assert "did not return a PNG, JPEG, GIF or WebP" in await refused(fetcher(server), server.url("/html-as-png"))


async def test_compressed_bodies_are_refused(server: HttpsServer) -> None:
    assert "Content-Encoding gzip" in await refused(fetcher(server), server.url("/gzip"))


async def test_an_error_status_is_refused(server: HttpsServer) -> None:
    assert "answered HTTP 404" in await refused(fetcher(server), server.url("/status/404"))


async def test_a_connection_that_breaks_mid_body_is_refused(server: HttpsServer) -> None:
    assert "the download failed" in await refused(fetcher(server), server.url("/truncated"))


async def test_a_stream_past_the_cap_is_abandoned_at_once(server: HttpsServer) -> None:
    server.seen.endless_sent = None
    started = time.monotonic()
    message = await refused(fetcher(server), server.url("/endless"))
    assert "larger than the limit of 1.00 MiB (1048576 bytes)" in message
    assert time.monotonic() - started < 3
    deadline = time.monotonic() + 5
    while server.seen.endless_sent is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sent = server.seen.endless_sent
    assert sent is not None and sent < 32 * MiB, "the server stopped long before its 64 MiB (socket buffers aside)"


async def test_a_declared_length_over_the_cap_ends_the_fetch_before_the_body(server: HttpsServer) -> None:
    assert "100.00 MiB (104857600 bytes); the limit is 1.00 MiB (1048576 bytes)" in await refused(
        fetcher(server), server.url("/honest-big")
    )


async def test_slow_headers_hit_the_total_time_limit(server: HttpsServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        await fetcher(server, total_timeout_s=0.5).fetch_image(server.url("/slow-headers?s=3"))
    assert time.monotonic() - started < 2


async def test_a_body_that_drips_hits_the_total_time_limit(server: HttpsServer) -> None:
    # Each byte arrives well within any read timeout; only the total limit ends it.
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        await fetcher(server, total_timeout_s=0.8).fetch_image(server.url("/drip"))
    assert time.monotonic() - started < 2.5


async def test_up_to_three_redirects_are_followed(server: HttpsServer) -> None:
    got = await fetcher(server).fetch_image(server.url("/redirect/3"))
    assert got.data == PNG and got.url.endswith("/png")


async def test_a_fourth_redirect_is_refused(server: HttpsServer) -> None:
    assert "more than 3 redirects" in await refused(fetcher(server), server.url("/redirect/4"))


async def test_redirects_can_be_refused_outright(server: HttpsServer) -> None:
    assert "more than 0 redirects" in await refused(fetcher(server, max_redirects=0), server.url("/redirect/1"))


async def test_every_redirect_hop_is_vetted_again(server: HttpsServer) -> None:
    resolver = Resolver({"images.test": ["127.0.0.1"], "inside.test": ["10.0.0.5"], "other.test": ["127.0.0.1"]})
    fetch = fetcher(server, resolver)
    to_private = server.url(f"/to?u=https://inside.test:{server.port}/png")
    assert "inside.test resolves to 10.0.0.5, a private address" in await refused(fetch, to_private)
    to_metadata = server.url("/to?u=https://169.254.169.254/latest/meta-data/")
    assert "cloud metadata" in await refused(fetch, to_metadata)
    to_http = server.url(f"/to?u=http://images.test:{server.port}/png")
    assert "only https" in await refused(fetch, to_http)
    # A hop to another public (here: allowed) name is resolved and vetted on its own.
    got = await fetch.fetch_image(server.url(f"/to?u=https://other.test:{server.port}/png"))
    assert got.data == PNG and resolver.calls[-2:] == ["images.test", "other.test"]
    assert server.seen.sni[-1] == "other.test" and server.seen.hosts[-1] == f"other.test:{server.port}"


async def test_an_unresolvable_name_is_refused(server: HttpsServer) -> None:
    assert "could not be resolved" in await refused(fetcher(server), "https://nowhere.test/cat.png")
