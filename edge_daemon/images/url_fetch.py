"""Fetch an image named by URL without turning the daemon into an SSRF proxy.

The host is resolved once, every resolved address is checked against the policy, and the connection goes to
the checked address (so DNS rebinding cannot swap it afterwards). Redirects are followed by hand and each hop
is checked again. Only http and https are accepted; size and time are bounded.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from edge_daemon.errors import BadRequest, PayloadTooLarge

_REDIRECTS = {301, 302, 303, 307, 308}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlPolicy:
    allow_private: bool = True
    allow_loopback: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0
    max_redirects: int = 5
    allow: tuple[str, ...] = ()  # host names or CIDRs; when given, only these are fetched from
    deny: tuple[str, ...] = ()   # host names or CIDRs never fetched from

    def _matches(self, entries: tuple[str, ...], host: str, address: IPAddress) -> bool:
        for entry in entries:
            if "/" in entry or _is_ip(entry):
                try:
                    if address in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
            elif host.lower().rstrip(".") == entry.lower().rstrip("."):
                return True
        return False

    def listed(self, host: str, address: IPAddress) -> str | None:
        """'deny' or 'not-allowed' when the lists refuse this host/address, 'allow' when explicitly allowed."""
        if self._matches(self.deny, host, address):
            return "deny"
        if self.allow:
            return "allow" if self._matches(self.allow, host, address) else "not-allowed"
        return None



def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d is judged as a.b.c.d (no bypass through IPv4-mapped IPv6)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address_refusal(address: IPAddress, policy: UrlPolicy) -> str | None:
    if address.is_loopback:
        return None if policy.allow_loopback else "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified or address.is_reserved:
        return "reserved"
    if address.is_private and not address.is_global:
        return None if policy.allow_private else "private"
    return None


def _resolve_checked(host: str, port: int, policy: UrlPolicy) -> str:
    """Resolve `host` and return one address that passes the policy; refuse if any address does not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise BadRequest(f"image URL host {host!r} could not be resolved: {error}") from None
    addresses = [info[4][0] for info in infos]
    for text in addresses:
        address = _unmapped(ipaddress.ip_address(text.split("%")[0]))
        verdict = policy.listed(host, address)
        if verdict == "deny":
            raise BadRequest(f"image URL host {host!r} is on this server's deny list")
        if verdict == "not-allowed":
            raise BadRequest(f"image URL host {host!r} is not on this server's allow list")
        if verdict == "allow":
            continue
        refusal = _address_refusal(address, policy)
        if refusal:
            raise BadRequest(f"image URL host {host!r} resolves to a {refusal} address, which is not allowed")
    if not addresses:
        raise BadRequest(f"image URL host {host!r} has no address")
    return addresses[0]


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a pre-resolved address while verifying the certificate for the original host name."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def basic_auth(parts: SplitResult) -> dict[str, str]:
    """An Authorization header from the URL's user:password (snapshot cameras, webhooks), or none.

    Python's http.client ignores credentials in a URL; cameras that need them answer 401 otherwise. A redirect
    to another host drops them, as urljoin keeps the user info only for a path on the same host.
    """
    if parts.username is None:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def _open(url: str, policy: UrlPolicy, deadline: float) -> http.client.HTTPResponse:
    try:  # urlsplit and .port raise ValueError on a malformed host ('[' without ']') or port
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as error:
        raise BadRequest(f"image URL is malformed: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"image URL scheme {parts.scheme!r} is not allowed; use http or https")
    if not parts.hostname:
        raise BadRequest("image URL has no host")
    port = explicit_port or (443 if parts.scheme == "https" else 80)
    address = _resolve_checked(parts.hostname, port, policy)
    remaining = max(0.1, deadline - time.monotonic())
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = PinnedHTTPSConnection(address, parts.hostname, port, remaining)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=remaining)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    connection.request("GET", path, headers={"Host": host_header, "User-Agent": "edge-daemon",
                                             "Accept": "image/*", **basic_auth(parts)})
    return connection.getresponse()


def fetch_url(url: str, policy: UrlPolicy) -> bytes:
    """Download the bytes at `url` under `policy`; failures are 400s (or 413 when too large)."""
    deadline = time.monotonic() + policy.timeout
    try:
        for _ in range(policy.max_redirects + 1):
            response = _open(url, policy, deadline)
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                response.close()
                if not location:
                    raise BadRequest("image URL redirected without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                response.close()
                raise BadRequest(f"image URL answered HTTP {response.status}")
            return _read_bounded(response, policy, deadline)
    except (OSError, http.client.HTTPException) as error:
        raise BadRequest(f"image URL could not be fetched: {error.__class__.__name__}") from None
    raise BadRequest(f"image URL redirected more than {policy.max_redirects} times")


def _read_bounded(response: http.client.HTTPResponse, policy: UrlPolicy, deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        response.close()
        raise PayloadTooLarge(f"image at URL is larger than the {policy.max_bytes}-byte limit")
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            response.close()
            raise BadRequest(f"image URL took longer than {policy.timeout:g} s")
        chunk = response.read(65536)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            response.close()
            raise PayloadTooLarge(f"image at URL is larger than the {policy.max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def resolve_checked(host: str, port: int, policy: UrlPolicy) -> str:
    """Public form of the host check, for other network clients (camera streams, their sinks)."""
    return _resolve_checked(host, port, policy)
