"""Download a caller-supplied URL without letting it reach the worker's own network (SSRF).

Every address a URL leads to is checked against an `AddressPolicy`: IP literals before
connecting, host names after DNS resolution (the resolver hands aiohttp only addresses that
passed, so the connection goes to a checked address), and again on every redirect, which
are followed here one by one rather than by aiohttp. Only http and https are fetched; the
size and the total time of a download are bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from comfyui.exceptions import ForbiddenInputURLError, InputFetchError, InputTooLargeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class AddressPolicy:
    """Which addresses caller-supplied URLs may reach: public ones, plus what is allowed."""

    def __init__(self, *, allow_private: bool = False, allowed_networks: Iterable[str] = ()):
        self.allow_private = allow_private
        self.allowed_networks: list[IPNetwork] = [
            ipaddress.ip_network(network, strict=False) for network in allowed_networks
        ]

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allow_private:
            return True
        if any(address in network for network in self.allowed_networks):
            return True
        # Loopback, private, link-local (cloud metadata), CGNAT, reserved, unspecified...
        return address.is_global and not address.is_multicast

    def check_literal(self, host: str) -> None:
        """Refuse a host that is an IP literal outside the policy (DNS names: see resolver)."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        if not self.permits(address):
            raise BlockedAddressError(host, [str(address)])


class BlockedAddressError(OSError):
    """A host resolved only to addresses the policy refuses."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        super().__init__(f"{host} resolves to a non-public address ({', '.join(addresses)})")
        self.host = host


class GuardedResolver(AbstractResolver):
    """Resolves with `inner` and keeps only the addresses the policy permits."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.permits(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise BlockedAddressError(host, sorted({r["host"] for r in results}))
        return allowed

    async def close(self) -> None:
        await self.inner.close()


class UrlFetcher:
    """Downloads http(s) URLs under an address policy, a size limit and a time limit."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_bytes: int,
        timeout: float,
        max_redirects: int,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy, self._resolver),
                use_dns_cache=False,  # every connection resolves, and is checked, anew
                limit=16,
            )
            # trust_env=False: no proxy from the environment may resolve names for us.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def fetch(self, url: str) -> bytes:
        """The body of `url` after at most `max_redirects` redirects.

        Raises `ForbiddenInputURLError` (scheme or address refused), `InputTooLargeError`,
        or `InputFetchError` (unreachable, non-2xx answer, timeout, too many redirects).
        """
        target = parse_http_url(url)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._follow(target)
        except TimeoutError:
            raise InputFetchError(
                f"download from {target.host} took longer than {self.timeout:g} s"
            ) from None

    async def _follow(self, target: URL) -> bytes:
        for _ in range(self.max_redirects + 1):
            self.policy_check(target)
            try:
                async with self._client().get(target, allow_redirects=False) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        target = parse_http_url(
                            str(response.url.join(URL(response.headers["Location"])))
                        )
                        continue
                    if not 200 <= response.status < 300:
                        raise InputFetchError(
                            f"download from {target.host} answered HTTP {response.status}"
                        )
                    return await self._read(response, target)
            except aiohttp.ClientConnectorError as exc:
                blocked = _blocked_cause(exc)
                if blocked is not None:
                    raise ForbiddenInputURLError(str(blocked)) from None
                raise InputFetchError(f"cannot connect to {target.host}: {exc.strerror}") from None
            except aiohttp.ClientError as exc:
                raise InputFetchError(
                    f"download from {target.host} failed: {type(exc).__name__}"
                ) from None
        raise InputFetchError(f"more than {self.max_redirects} redirects")

    def policy_check(self, target: URL) -> None:
        try:
            self.policy.check_literal(target.host or "")
        except BlockedAddressError as exc:
            raise ForbiddenInputURLError(str(exc)) from None

    async def _read(self, response: aiohttp.ClientResponse, target: URL) -> bytes:
        too_large = InputTooLargeError(
            f"download from {target.host} is over the limit of {self.max_bytes} bytes"
        )
        if response.content_length is not None and response.content_length > self.max_bytes:
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                raise too_large
        return bytes(body)


def parse_http_url(url: str) -> URL:
    """`url` as a yarl URL if it is an absolute http(s) URL with a host, else refused."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise ForbiddenInputURLError("not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ForbiddenInputURLError(
            f"only http and https URLs are fetched, not {parsed.scheme or 'relative'} ones"
        )
    if not parsed.host:
        raise ForbiddenInputURLError("the URL has no host")
    return parsed


async def check_endpoint(host: str, port: int | None, policy: AddressPolicy) -> None:
    """Raise `BlockedAddressError` unless every address `host` resolves to is permitted.

    For URLs handed to other libraries (an S3 endpoint given in a request); the check
    happens before they connect, so it narrows rather than closes the window of a DNS
    change in between. Resolution failures raise `OSError`.
    """
    policy.check_literal(host)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]).split("%")[0] for info in infos})
    if not addresses or not all(policy.permits(ipaddress.ip_address(a)) for a in addresses):
        raise BlockedAddressError(host, addresses)


def _blocked_cause(exc: BaseException) -> BlockedAddressError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddressError):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, BlockedAddressError):
            return os_error
        seen = seen.__cause__
    return None
