"""URLs as they may be shown or logged: without the parts that grant access.

A feed URL may carry an access token in its query (docs/feed.md allows it) or a user and
password; release URLs resolved against it keep the user and password, and a CDN's signed
URL carries its signature in the query. Error messages, log lines, diagnostics and repair
issues therefore show `redacted_url(url)`; only requests use the real URL.

Parsing follows RFC 3986 appendix B with plain string operations, so that any text,
however broken, is redacted rather than refused: a URL too broken to request is exactly
the one an error message has to show.
"""

from __future__ import annotations

import re
from typing import Final

from yarl import URL

__all__ = ["REDACTED", "redacted_text", "redacted_url"]

REDACTED: Final = "REDACTED"

# `scheme://authority/path` or `//authority/path` (what comes before "?" and "#").
_HIERARCHICAL: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:)?//(?P<rest>.*)", re.DOTALL)
# host[:port], the host a name, an IPv4 address or a bracketed IPv6 address (zone allowed).
_HOST_PORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+(%[^\]]*)?\]|[^:\[\]@]*)(:[0-9]*)?")
# A URL inside free text (another library's error message): up to a space or a quote; a
# trailing ":", ",", ";", "." or ")" is the sentence's, not the URL's.
_URL_IN_TEXT: Final = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]*[^\s'"<>:,;.)]""")


def redacted_url(url: str | URL) -> str:
    """`url` with its scheme, host, port and path; a query becomes ``?REDACTED``, and the
    user, password and fragment are left out.

    ``https://user:pw@fw.example.com:8443/feed.json?token=X#top`` →
    ``https://fw.example.com:8443/feed.json?REDACTED``. Never raises: an authority that
    is not ``host[:port]`` is shown as ``REDACTED`` whole (it may hold a password with an
    unescaped ``/``).
    """
    text = str(url)
    cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
    head, tail = text[:cut], text[cut:]
    # "?" alone, or "?#…", is an empty query: nothing to hide, nothing worth showing.
    query = f"?{REDACTED}" if tail.startswith("?") and tail[1:2] not in ("", "#") else ""
    hierarchical = _HIERARCHICAL.fullmatch(head)
    if hierarchical is None:
        # No authority (`mailto:`, a bare path, garbage): whatever precedes an "@" may
        # still be a user and password typed without "//".
        return head.rpartition("@")[2] + query
    scheme = hierarchical["scheme"] or ""
    authority, slash, path = hierarchical["rest"].partition("/")
    host_port = authority.rpartition("@")[2]
    if _HOST_PORT.fullmatch(host_port) is None:
        return f"{scheme}//{REDACTED}"
    return f"{scheme}//{host_port}{slash}{path}{query}"


def redacted_text(text: str) -> str:
    """`text` (an error message from another library) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redacted_url(match[0]), text)
