"""Where an HTTP-invoked function may point: the URL validator of ``security``.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/invocation/url_validator.rs.
A URL passes when, in this order:

1. it parses as an absolute URL with a host (else "Invalid URL");
2. its scheme is ``https``, if ``require_https`` (else "HTTPS is required");
3. its host matches one of the ``url_allowlist`` patterns (``_glob``; an empty list is
   ``["*"]``) (else "URL not in allowlist");
4. with ``block_private_ips``: the host is not a private address, and if it is a name,
   none of the addresses it resolves to is (else "Private IP blocked", or "DNS lookup
   failed" when it does not resolve).

The addresses checked in step 4 are the ones the call connects to (``Target.addresses``):
a name that answers a public address to the check and a private one to a second
lookup (DNS rebinding) still reaches only the checked one. Upstream checks, then lets
reqwest resolve the name again to connect.

As upstream (Rust's ``Ipv4Addr``/``Ipv6Addr`` tests), an IPv4-mapped IPv6 address
(``::ffff:10.0.0.1``) counts as its IPv4 address, but IPv4 addresses embedded other
ways (6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``, the deprecated IPv4-compatible
``::a.b.c.d``) and the shared (``100.64.0.0/10``) and benchmarking ranges are not
blocked.

The host matched against the patterns is written as the WHATWG URL parser writes it
(Rust's ``url`` crate): lower case, IDNA names in punycode, IPv4 shorthands such as
``127.1`` or ``0x7f.0.0.1`` as dotted quads, IPv6 compressed and in brackets.

Steps 1-3, and step 4 for an IP literal, are ``UrlValidator.check`` (no I/O); the name
lookup is ``UrlValidator.validate``, which takes the resolver as an argument.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import unquote

import httpx

from ._glob import compile_glob

__all__ = [
    "DNS_LOOKUP_FAILED",
    "HTTPS_REQUIRED",
    "INVALID_URL",
    "PRIVATE_IP_BLOCKED",
    "URL_NOT_ALLOWED",
    "Resolver",
    "SecurityError",
    "Target",
    "UrlValidator",
    "is_private_ip",
    "parse_url",
]

#: ``SecurityError``'s wording upstream (its ``Display``).
INVALID_URL: Final = "Invalid URL"
HTTPS_REQUIRED: Final = "HTTPS is required"
URL_NOT_ALLOWED: Final = "URL not in allowlist"
PRIVATE_IP_BLOCKED: Final = "Private IP blocked"
DNS_LOOKUP_FAILED: Final = "DNS lookup failed"

#: The addresses a host name resolves to (any of them private blocks the URL).
Resolver = Callable[[str], Awaitable[Sequence[str]]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Schemes whose URLs must have a host (WHATWG "special" schemes, ``file`` aside).
_SPECIAL: Final = frozenset({"http", "https", "ws", "wss", "ftp"})
#: Code points a WHATWG host may not hold ("forbidden domain code points", ASCII part).
_FORBIDDEN_HOST = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*")
_C0_AND_SPACE: Final = "".join(map(chr, range(0x21)))
_TAB_AND_NEWLINE: Final = dict.fromkeys(map(ord, "\t\n\r"))


class SecurityError(Exception):
    """A URL the validator refuses; ``str()`` is upstream's wording."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed, validated URL, in the parts the HTTP client needs."""

    scheme: str
    #: As WHATWG writes it (IPv6 in brackets): what the allow-list patterns see.
    host: str
    #: ``None`` for the scheme's default port.
    port: int | None
    #: Path and query, percent-encoded, for the request line.
    target: bytes
    #: The host as an address, when it is an IP literal.
    ip: IpAddress | None
    #: The addresses ``UrlValidator.validate`` resolved the host name to and checked;
    #: the call connects to one of these, never to a second lookup's answer. Empty
    #: when nothing was resolved (an IP literal, or ``block_private_ips`` off).
    addresses: tuple[str, ...] = ()
    #: ``"user:password"`` (percent-decoded) from the URL's userinfo, sent as HTTP Basic
    #: credentials as reqwest does; ``None`` when the URL has none.
    basic_auth: str | None = field(default=None, repr=False)

    @property
    def connect_host(self) -> str:
        """The host to open a connection to (no brackets)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def url(self) -> str:
        """The URL as it is requested (upstream error messages show it)."""
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.target.decode('ascii')}"


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host (decimal, ``0x`` hex or ``0`` octal), or None."""
    if _HEX_PART.fullmatch(part):
        return int(part[2:] or "0", 16)
    if not part.isascii() or not part.isdigit():
        return None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part)


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return (last.isascii() and last.isdigit()) or bool(_HEX_PART.fullmatch(last))


def _ipv4_host(labels: list[str]) -> ipaddress.IPv4Address:
    """The WHATWG IPv4 parser; raises ``SecurityError`` where it fails."""
    numbers = [_ipv4_number(part) for part in labels]
    if len(numbers) > 4 or any(n is None for n in numbers):
        raise SecurityError(INVALID_URL)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise SecurityError(INVALID_URL)
    address = values[-1]
    for index, value in enumerate(values[:-1]):
        address += value * 256 ** (3 - index)
    return ipaddress.IPv4Address(address)


def _host(raw_host: bytes) -> tuple[str, IpAddress | None]:
    """The host as WHATWG writes it, and its address if it is an IP literal."""
    text = raw_host.decode("ascii", "replace")
    if ":" in text:
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise SecurityError(INVALID_URL) from None
        return f"[{v6.compressed}]", v6
    host = unquote(text).lower()
    if not host or _FORBIDDEN_HOST.search(host):
        raise SecurityError(INVALID_URL)
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels = labels[:-1]
    if _ends_in_number(labels):
        v4 = _ipv4_host(labels)
        return str(v4), v4
    return host, None


def parse_url(url: str) -> Target:
    """Parse ``url`` as the engine's URL parser would; ``SecurityError("Invalid URL")``
    if it is not an absolute URL with a host."""
    # WHATWG drops leading and trailing C0 controls and spaces, and tabs and newlines
    # anywhere.
    url = url.strip(_C0_AND_SPACE).translate(_TAB_AND_NEWLINE)
    match = _SCHEME.match(url)
    if match is None:
        raise SecurityError(INVALID_URL)
    scheme = match.group()[:-1].lower()
    rest = url[match.end() :]
    if scheme in _SPECIAL:
        # WHATWG reads "http:/h", "http:h" and "http:\\h" as "http://h".
        rest = "//" + rest.lstrip("/\\")
    try:
        parsed = httpx.URL(f"{scheme}:{rest}")
        raw_host, port, target = parsed.raw_host, parsed.port, parsed.raw_path
    except (httpx.InvalidURL, ValueError, TypeError):
        raise SecurityError(INVALID_URL) from None
    if port is not None and not 0 <= port <= 65535:
        raise SecurityError(INVALID_URL)
    host, ip = _host(raw_host)
    userinfo = parsed.username or parsed.password
    return Target(
        scheme=scheme,
        host=host,
        port=port,
        target=target or b"/",
        ip=ip,
        basic_auth=f"{parsed.username}:{parsed.password}" if userinfo else None,
    )


def _is_private_v4(ip: ipaddress.IPv4Address) -> bool:
    # Rust's Ipv4Addr: is_loopback, is_private (10/8, 172.16/12, 192.168/16 only:
    # narrower than Python's is_private), is_link_local, is_broadcast,
    # is_documentation, is_unspecified.
    return any(ip in network for network in _PRIVATE_V4) or ip.packed in (
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x00",
    )


_PRIVATE_V4: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
    )
)
_PRIVATE_V6: Final = tuple(
    ipaddress.IPv6Network(n) for n in ("fc00::/7", "fe80::/10", "ff00::/8", "::1/128", "::/128")
)


def is_private_ip(ip: IpAddress) -> bool:
    """Whether ``block_private_ips`` refuses ``ip`` (an IPv4-mapped IPv6 address
    counts as its IPv4 address)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_private_v4(ip)
    if ip.ipv4_mapped is not None:
        return _is_private_v4(ip.ipv4_mapped)
    return any(ip in network for network in _PRIVATE_V6)


class UrlValidator:
    """The ``security`` rules of ``iii-http-functions``."""

    def __init__(
        self, allowlist: Sequence[str], *, block_private_ips: bool, require_https: bool
    ) -> None:
        """Compile the allow-list; raises ``_glob.GlobError`` for a bad pattern."""
        self._patterns = [compile_glob(pattern) for pattern in allowlist or ["*"]]
        self.block_private_ips = block_private_ips
        self.require_https = require_https

    def check(self, url: str) -> Target:
        """Every rule that needs no name lookup; raises ``SecurityError``."""
        target = parse_url(url)
        if self.require_https and target.scheme != "https":
            raise SecurityError(HTTPS_REQUIRED)
        if not any(pattern.fullmatch(target.host) for pattern in self._patterns):
            raise SecurityError(URL_NOT_ALLOWED)
        if self.block_private_ips and target.ip is not None and is_private_ip(target.ip):
            raise SecurityError(PRIVATE_IP_BLOCKED)
        return target

    def needs_lookup(self, target: Target) -> bool:
        """Whether ``validate`` must resolve ``target``'s host name."""
        return self.block_private_ips and target.ip is None

    async def validate(self, url: str, resolve: Resolver) -> Target:
        """``check``, then with ``block_private_ips`` resolve a host name and refuse it
        if any address it has is private (a failed lookup refuses it too)."""
        target = self.check(url)
        if not self.needs_lookup(target):
            return target
        try:
            addresses = await resolve(target.host)
        except OSError:
            raise SecurityError(DNS_LOOKUP_FAILED) from None
        checked: list[str] = []
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                continue
            if is_private_ip(ip):
                raise SecurityError(PRIVATE_IP_BLOCKED)
            if str(ip) not in checked:
                checked.append(str(ip))
        if not checked:
            # Nothing checked to connect to (upstream lets reqwest look the name up again).
            raise SecurityError(DNS_LOOKUP_FAILED)
        return replace(target, addresses=tuple(checked))
