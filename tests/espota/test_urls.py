"""URLs shown or logged without the parts that grant access (query, user and password)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from custom_components.esp_ota.espota.urls import redacted_text, redacted_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # A token in the query: the query's presence shows, its text does not.
        (
            "https://fw.example.com/garden/feed.json?token=SECRET123",
            "https://fw.example.com/garden/feed.json?REDACTED",
        ),
        ("https://h/feed.json?a=1&token=SECRET123&b=2", "https://h/feed.json?REDACTED"),
        # A user and password, or a user alone (a token as the user name).
        ("https://user:SECRET123@fw.example.com/feed.json", "https://fw.example.com/feed.json"),
        ("https://SECRET123@fw.example.com/feed.json", "https://fw.example.com/feed.json"),
        ("https://user:p%40SECRET123@h/feed.json", "https://h/feed.json"),
        ("https://us@r:SECRET123@h/feed.json", "https://h/feed.json"),
        # Everything at once, with a port and a fragment.
        (
            "https://user:SECRET123@fw.example.com:8443/a/feed.json?token=SECRET123#SECRET123",
            "https://fw.example.com:8443/a/feed.json?REDACTED",
        ),
        # A fragment is left out; a "?" inside it is the fragment's, not a query.
        ("https://h/feed.json#SECRET123", "https://h/feed.json"),
        ("https://h/feed.json#x?SECRET123", "https://h/feed.json"),
        # IPv6 hosts, with a port, a zone, userinfo.
        ("http://[::1]:8123/feed.json?token=SECRET123", "http://[::1]:8123/feed.json?REDACTED"),
        ("https://u:SECRET123@[fe80::1%25eth0]/f.json", "https://[fe80::1%25eth0]/f.json"),
        ("https://[2001:db8::1]/feed.json", "https://[2001:db8::1]/feed.json"),
        # Nothing to hide: unchanged.
        ("http://127.0.0.1:8080/feed.json", "http://127.0.0.1:8080/feed.json"),
        ("https://fw.example.com", "https://fw.example.com"),
        ("https://fw.example.com/", "https://fw.example.com/"),
        ("https://h/@scope/feed.json", "https://h/@scope/feed.json"),
        ("https://h/a%20b.bin", "https://h/a%20b.bin"),
        ("file:///srv/feed.json", "file:///srv/feed.json"),
        # An empty query has nothing to hide.
        ("https://h/feed.json?", "https://h/feed.json"),
        ("https://h/feed.json?#top", "https://h/feed.json"),
        # Scheme-relative.
        ("//u:SECRET123@h/x?y=SECRET123", "//h/x?REDACTED"),
        # Garbage: never raises, never shows what may be a password.
        ("", ""),
        ("not a url", "not a url"),
        ("?token=SECRET123", "?REDACTED"),
        ("user:SECRET123@host/feed.json", "host/feed.json"),
        ("http://[::1/feed.json?token=SECRET123", "http://REDACTED"),
        ("https://user:SECRET/123@h/feed.json", "https://REDACTED"),  # an unescaped "/"
        ("https://h:SECRET123/feed.json", "https://REDACTED"),  # not a port
        ("https://h:99999999/feed.json", "https://h:99999999/feed.json"),
        ("http://", "http://"),
        ("\x00\n\ud800 ?SECRET123", "\x00\n\ud800 ?REDACTED"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    assert redacted_url(shown) == shown  # what is shown is shown as it is


def test_a_yarl_url_is_redacted_as_its_text() -> None:
    url = URL("https://user:SECRET123@h:8443/feed.json?token=SECRET123")
    assert redacted_url(url) == "https://h:8443/feed.json?REDACTED"


_SECRET = st.text(string.ascii_letters + string.digits, min_size=4).map(lambda s: f"S3CRET{s}")
_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){0,2}", fullmatch=True) | st.sampled_from(
    ["127.0.0.1", "[::1]", "[fe80::1%25eth0]", "[2001:db8::42]"]
)
_PATH = st.lists(st.from_regex(r"[a-z0-9._~@-]{1,12}", fullmatch=True), max_size=4).map("/".join)


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_HOST,
    port=st.none() | st.integers(1, 65535),
    path=_PATH,
    secret=_SECRET,
    user=st.sampled_from(["", "user:{}@", "{}@", "{}:x@"]),
    query=st.sampled_from(["", "?token={}", "?a=1&b={}", "?{}"]),
    fragment=st.sampled_from(["", "#{}", "#top"]),
)
def test_fuzz_a_secret_never_shows_and_the_place_stays(
    *,
    scheme: str,
    host: str,
    port: int | None,
    path: str,
    secret: str,
    user: str,
    query: str,
    fragment: str,
) -> None:
    """Wherever the secret is (password, user, query, fragment), it is gone, while yarl
    (what aiohttp requests with) reads the same host, port and path from what is shown."""
    netloc = host + (f":{port}" if port is not None else "")
    url = (
        f"{scheme}://{user.format(secret)}{netloc}/{path}{query.format(secret)}"
        f"{fragment.format(secret)}"
    )
    shown = redacted_url(url)
    assert secret not in shown
    real, seen = URL(url), URL(shown)
    assert (seen.scheme, seen.host, seen.port, seen.path) == (
        real.scheme,
        real.host,
        real.port,
        real.path,
    )
    assert (seen.user, seen.password, seen.fragment) == (None, None, "")
    assert seen.query_string == ("REDACTED" if real.query_string else "")


@given(st.text())
def test_fuzz_any_text_is_redacted_without_raising(text: str) -> None:
    shown = redacted_url(text)
    assert isinstance(shown, str)
    assert redacted_url(shown) == shown
    assert isinstance(redacted_text(text), str)


def test_redacted_text_redacts_every_url_in_a_message() -> None:
    """Another library's message (aiohttp names the URL, or where a redirect led)."""
    message = (
        "404, message='Not Found', url='https://cdn.example.com/a.bin?sig=SECRET123', "
        "redirected from https://user:SECRET123@fw.example.com/a.bin: gone; "
        "see http://[::1]:8123/x?token=SECRET123."
    )
    assert redacted_text(message) == (
        "404, message='Not Found', url='https://cdn.example.com/a.bin?REDACTED', "
        "redirected from https://fw.example.com/a.bin: gone; "
        "see http://[::1]:8123/x?REDACTED."
    )
    assert redacted_text("no URL at all: 127.0.0.1:80") == "no URL at all: 127.0.0.1:80"
