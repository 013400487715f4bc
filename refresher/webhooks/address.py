"""Where a webhook may go: an http(s) URL whose host is a public address.

A job's `webhookUrl` is a request, made by whoever holds a token, for the
server to connect somewhere: unchecked, it reaches what only the server can
reach (the cloud's metadata service at 169.254.169.254, a database on
localhost, the office network). So the host is read the way a resolver would
read it — `127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1` and
`[::ffff:127.0.0.1]` all mean 127.0.0.1 — a name is resolved and every
address it resolves to must be public, and the delivery connects to an
address checked this way, never to the name again (a name that resolves
elsewhere a second time is not asked twice). WEBHOOK_ALLOW_PRIVATE=1 lets
every address through, for tests and private networks.

Pure apart from the resolver, which callers may replace (the tests do)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_LENGTH = 2048
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_NUMBER_LIKE = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")

_PRIVATE_V4 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_METADATA = ipaddress.ip_address("169.254.169.254")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SPECIAL_V4 = ipaddress.ip_network("192.0.0.0/24")  # IETF protocol assignments (Python 3.11 calls some global)


class Refused(ValueError):
    """The destination may not be called; the message says why, for a person."""


@dataclass(frozen=True)
class Destination:
    """A parsed webhook URL: what to connect to and what to ask for."""

    url: str
    scheme: str  # http or https
    host: str  # a name (lower case, IDNA) or an address, without brackets
    port: int
    target: str  # path and query, as sent in the request line
    address: IPAddress | None  # when the host is an address, in whatever spelling

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return shown if self.port == default else f"{shown}:{self.port}"


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any spelling a resolver accepts (inet_aton's: one
    to four parts, each decimal, octal with a leading 0 or hex with 0x, the
    last filling the remaining bytes); None when the host does not end in a
    number (a name). Refused when it ends in a number but is no address
    (`1.2.3.4.5`, `08.0.0.1`, `256.1.1.1`): such a host is neither a name
    nor an address, and resolvers disagree about it."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]  # a trailing dot, as in fully qualified names
    if not parts or not _NUMBER_LIKE.match(parts[-1]):
        return None
    if len(parts) > 4:
        raise Refused(f"its host {host!r} is not a valid IPv4 address")
    numbers = []
    for part in parts:
        if not _NUMBER_LIKE.match(part):
            raise Refused(f"its host {host!r} is not a valid IPv4 address")
        try:
            if part[:2].lower() == "0x":
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part[0] == "0":
                numbers.append(int(part[1:], 8))
            else:
                numbers.append(int(part))
        except ValueError:  # 8 or 9 in an octal part
            raise Refused(f"its host {host!r} is not a valid IPv4 address") from None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise Refused(f"its host {host!r} is not a valid IPv4 address")
    value = last
    for position, n in enumerate(leading):
        value += n << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def parse_url(raw: object) -> Destination:
    """The webhook URL, checked for its form (not yet for where it leads)."""
    if not isinstance(raw, str) or not raw.strip():
        raise Refused("must be an http:// or https:// URL")
    url = raw.strip()
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise Refused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"must be an http:// or https:// URL, not {scheme + ':' if scheme else 'a relative one'}")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry a user name or password")
    host = parts.hostname or ""
    if not host:
        raise Refused("has no host")
    address: IPAddress | None
    if parts.netloc.rsplit("@", 1)[-1].startswith("["):
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise Refused(f"its host [{host}] is not a valid IPv6 address") from None
    elif ":" in host:
        raise Refused(f"its host {host!r} is not valid (an IPv6 address goes in brackets)")
    else:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise Refused(f"its host {host!r} is not a valid host name") from None
        address = parse_ipv4(host)
        if address is None and not _NAME.match(host.rstrip(".") or "-"):
            raise Refused(f"its host {host!r} is not a valid host name")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(
        url=url,
        scheme=scheme,
        host=str(address) if address is not None else host,
        port=port if port is not None else (443 if scheme == "https" else 80),
        target=target,
        address=address,
    )


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4, Teredo and NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64) or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def why_not_public(address: IPAddress) -> str | None:
    """Which kind of non-public address this is ("loopback", "private", …);
    None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = why_not_public(inner)
            if reason is not None:
                return f"{reason} (it carries {inner})"
            if address.ipv4_mapped is not None:
                return None  # the connection goes to the IPv4 address, which is public
        address = address.__class__(address.exploded)  # without a zone (%eth0)
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address == _METADATA:
        return "link-local (the cloud metadata service)"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "unique-local"
    if isinstance(address, ipaddress.IPv4Address) and any(address in n for n in _PRIVATE_V4):
        return "private"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_reserved or not address.is_global or address in _SPECIAL_V4:
        return "reserved"
    return None


def resolve_with_system(host: str, port: int) -> list[str]:
    """Every address the system's resolver gives for the host."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"its host {host} could not be resolved ({exc})") from None
    return [str(info[4][0]) for info in found]


def vet(destination: Destination, allow_private: bool, resolve: Resolver = resolve_with_system) -> list[IPAddress]:
    """The addresses to connect to (all of them public unless `allow_private`);
    Refused, naming the address and its kind, when any is not."""
    if destination.address is not None:
        found: list[IPAddress] = [destination.address]
    else:
        found = []
        for text in resolve(destination.host, destination.port):
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise Refused(f"its host {destination.host} resolves to {text!r}, which is not an address") from None
            if address not in found:
                found.append(address)
        if not found:
            raise Refused(f"its host {destination.host} resolves to no address")
    if not allow_private:
        for address in found:
            reason = why_not_public(address)
            if reason is not None:
                where = (
                    f"points to {address}"
                    if destination.address is not None
                    else f"has a host, {destination.host}, that resolves to {address}"
                )
                article = "an" if reason[0] in "aeiou" else "a"
                raise Refused(
                    f"{where}, {article} {reason} address; webhooks go to public addresses only "
                    f"(WEBHOOK_ALLOW_PRIVATE=1 allows others)"
                )
    return found
