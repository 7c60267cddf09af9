"""The SSRF-safe downloader against a real local HTTP server (loopback only)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from comfyui.exceptions import ForbiddenInputURLError, InputFetchError, InputTooLargeError
from comfyui.url_fetch import AddressPolicy, BlockedAddressError, UrlFetcher, check_endpoint
from tests.origin import Origin, serve_origin

LOOPBACK_ONLY = AddressPolicy(allowed_networks=["127.0.0.1/32"])


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serve_origin() as server:
        yield server


class StubResolver(AbstractResolver):
    """Resolves every name to one fixed address (as a hostile DNS answer would)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


def fetcher(
    policy: AddressPolicy,
    *,
    max_bytes: int = 1024,
    timeout: float = 5.0,
    resolver: AbstractResolver | None = None,
) -> UrlFetcher:
    return UrlFetcher(
        policy, max_bytes=max_bytes, timeout=timeout, max_redirects=3, resolver=resolver
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not AddressPolicy().permits(ipaddress.ip_address(address))
    assert AddressPolicy(allow_private=True).permits(ipaddress.ip_address(address))


def test_public_addresses_and_allowed_networks_pass() -> None:
    policy = AddressPolicy(allowed_networks=["10.0.0.0/8"])
    assert policy.permits(ipaddress.ip_address("93.184.216.34"))
    assert policy.permits(ipaddress.ip_address("2606:4700::1111"))
    assert policy.permits(ipaddress.ip_address("10.9.9.9"))
    assert not policy.permits(ipaddress.ip_address("192.168.0.1"))


async def test_a_loopback_literal_is_refused_before_connecting(origin: Origin) -> None:
    downloader = fetcher(AddressPolicy())
    try:
        with pytest.raises(ForbiddenInputURLError, match="non-public"):
            await downloader.fetch(origin.url("/image.png"))
    finally:
        await downloader.close()
    assert origin.paths == []


async def test_a_name_resolving_to_loopback_is_refused_after_resolution(origin: Origin) -> None:
    downloader = fetcher(AddressPolicy())
    try:
        with pytest.raises(ForbiddenInputURLError, match="localhost"):
            await downloader.fetch(origin.url("/image.png", host="localhost"))
    finally:
        await downloader.close()
    assert origin.paths == []


async def test_a_name_resolving_to_the_metadata_address_is_refused() -> None:
    downloader = fetcher(AddressPolicy(), resolver=StubResolver("169.254.169.254"))
    try:
        with pytest.raises(ForbiddenInputURLError, match=r"169\.254\.169\.254"):
            await downloader.fetch("http://innocent.example/latest/meta-data/")
    finally:
        await downloader.close()


async def test_allowed_address_is_fetched(origin: Origin) -> None:
    downloader = fetcher(LOOPBACK_ONLY)
    try:
        assert await downloader.fetch(origin.url("/image.png")) == b"\x89PNG fake"
    finally:
        await downloader.close()


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:{port}/image.png"],
)
async def test_redirects_are_checked_at_every_hop(origin: Origin, target: str) -> None:
    downloader = fetcher(LOOPBACK_ONLY)
    url = origin.url("/redirect") + "?to=" + target.format(port=origin.port)
    try:
        with pytest.raises(ForbiddenInputURLError):
            await downloader.fetch(url)
    finally:
        await downloader.close()
    assert origin.paths == ["/redirect"]


async def test_redirect_to_another_scheme_is_refused(origin: Origin) -> None:
    downloader = fetcher(LOOPBACK_ONLY)
    try:
        with pytest.raises(ForbiddenInputURLError, match="only http and https"):
            await downloader.fetch(origin.url("/redirect") + "?to=file:///etc/passwd")
    finally:
        await downloader.close()


async def test_redirects_within_policy_are_followed_up_to_the_limit(origin: Origin) -> None:
    downloader = fetcher(LOOPBACK_ONLY)
    try:
        ok = await downloader.fetch(origin.url("/redirect") + "?to=/image.png")
        assert ok == b"\x89PNG fake"
        with pytest.raises(InputFetchError, match="more than 3 redirects"):
            await downloader.fetch(origin.url("/loop"))
    finally:
        await downloader.close()


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_size_limit_applies_announced_or_streamed(origin: Origin, path: str) -> None:
    downloader = fetcher(LOOPBACK_ONLY, max_bytes=1024)
    try:
        with pytest.raises(InputTooLargeError, match="1024 bytes"):
            await downloader.fetch(origin.url(path))
    finally:
        await downloader.close()


async def test_error_answers_and_timeouts_are_fetch_errors(origin: Origin) -> None:
    downloader = fetcher(LOOPBACK_ONLY, timeout=0.2)
    try:
        with pytest.raises(InputFetchError, match="HTTP 404"):
            await downloader.fetch(origin.url("/missing.png"))
        with pytest.raises(InputFetchError, match=r"longer than 0\.2 s"):
            await downloader.fetch(origin.url("/slow"))
    finally:
        await downloader.close()


async def test_unreachable_port_is_a_fetch_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    downloader = fetcher(LOOPBACK_ONLY)
    try:
        with pytest.raises(InputFetchError, match="cannot connect"):
            await downloader.fetch(f"http://127.0.0.1:{port}/x.png")
    finally:
        await downloader.close()


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x.png", "file:///etc/passwd", "/relative.png", "http:///nohost"]
)
async def test_only_absolute_http_urls_are_accepted(url: str) -> None:
    downloader = fetcher(AddressPolicy(allow_private=True))
    try:
        with pytest.raises(ForbiddenInputURLError):
            await downloader.fetch(url)
    finally:
        await downloader.close()


async def test_endpoint_check_resolves_names() -> None:
    with pytest.raises(BlockedAddressError):
        await check_endpoint("localhost", 9000, AddressPolicy())
    with pytest.raises(BlockedAddressError):
        await check_endpoint("169.254.169.254", 80, AddressPolicy())
    await check_endpoint("127.0.0.1", 9000, AddressPolicy(allow_private=True))
