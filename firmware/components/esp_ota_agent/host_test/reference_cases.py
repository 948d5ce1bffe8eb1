"""Print test_ota_request_cases.h: POST /api/v1/ota bodies and what the reference device
(simulator/api.py _start_ota, _field, _headers; simulator/ota_task.py validate_request)
answers to each, for the C parser's table-driven test (test_ota_request.c). A row marked
"the reference device: ..." is one where the C device answers differently on purpose
(see src/core/agent_ota_request.c).

    .venv/bin/python firmware/components/esp_ota_agent/host_test/reference_cases.py \\
        > firmware/components/esp_ota_agent/host_test/test_ota_request_cases.h

SPDX-License-Identifier: Apache-2.0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository

from simulator.api import decode_ota_request
from simulator.esp_err import EspError
from simulator.ota_task import validate_request

SLOT = 1740800  # the OTA slot of the default partition table (1700 KiB)
CERT = (  # a self-signed ECDSA P-256 certificate (its key was not kept)
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBijCCAS+gAwIBAgIUPMoMxS2LfNo1z0iZvrR5maXjVSYwCgYIKoZIzj0EAwIw\n"
    "GjEYMBYGA1UEAwwPZmlybXdhcmUtc2VydmVyMB4XDTI2MTIwNjAyNDYyM1oXDTM2\n"
    "MTIwMzAyNDYyM1owGjEYMBYGA1UEAwwPZmlybXdhcmUtc2VydmVyMFkwEwYHKoZI\n"
    "zj0CAQYIKoZIzj0DAQcDQgAELGeDz88Asu+9QM52veeff/jW3iqWLtbUcphQSYhq\n"
    "F8pxpEFXaHeNdx+Vb4MTigXKn6hhfqvaRasKcpHzb2EM7qNTMFEwHQYDVR0OBBYE\n"
    "FH6hGz6MheA9jxRS7/EtQAC0JMOCMB8GA1UdIwQYMBaAFH6hGz6MheA9jxRS7/Et\n"
    "QAC0JMOCMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAO6Z6s0F\n"
    "bjfkOfot7qc/WDXr8Zu3FKWn/kxpHkUHUGSNAiEAse9LKuGNBuX8pzGY6w6e+nSu\n"
    "v6DdEFWMCe+baYkwLqc=\n"
    "-----END CERTIFICATE-----\n"
)
FIELDS = ("url", "sha256", "size", "version", "cert_pem")
DEFAULTS = {
    "url": json.dumps("https://192.168.1.10:8443/firmware/garden.bin"),
    "sha256": json.dumps("9C25615A" * 8),
    "size": "912384",
    "version": json.dumps("1.2.0"),
    "cert_pem": json.dumps(CERT),
}
OMIT = "OMIT"  # leave the field out
INVALID_ARG = "ESP_ERR_INVALID_ARG"


def js(value: str) -> str:
    """A JSON string literal."""
    return json.dumps(value)


def headers(*pairs: tuple[str, str]) -> str:
    """A headers member appended to the body, names and values taken as JSON text."""
    return ',"headers":{' + ",".join(f'"{name}":"{value}"' for name, value in pairs) + "}"


NINE = [(chr(ord("A") + i), str(i + 1)) for i in range(9)]


def case(name: str, c: tuple[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """A body built from the default fields, `fields` replacing (or OMIT-ting) some, or
    given whole as raw=b"..."; `c` is the C device's answer where it differs."""
    return {"name": name, "c": c, **fields}


def url_refused(url: str) -> tuple[str, str]:
    return INVALID_ARG, f"url must be an https:// URL, got {url!r}"


def not_supported(what: str, line: int, column: int) -> tuple[str, str]:
    position = f"line {line} column {column} (char {column - 1})"
    return INVALID_ARG, f"bad OTA request: {what} is not supported: {position}"


def nul_refused(field: str) -> tuple[str, str]:
    return INVALID_ARG, f"bad OTA request: {field} must not contain U+0000"


CASES = [
    # --- not JSON (Python's json words and positions) ---
    case("empty body", raw=b""),
    case("whitespace only", raw=b" \n "),
    case("open brace", raw=b"{"),
    case("trailing comma in object", raw=b'{"a":1,}'),
    case("trailing comma in array", raw=b'{"a":[1,]}'),
    case("extra data", raw=b'{"a":1} x'),
    case("two documents", raw=b"{}{}"),
    case("utf-8 BOM", raw=b"\xef\xbb\xbf{}"),
    case("leading zero", raw=b'{"a":01}'),
    case("fraction without digits", raw=b'{"a":1.}'),
    case("exponent without digits", raw=b'{"a":1e}'),
    case("lone minus", raw=b'{"a":-}'),
    case("plus sign", raw=b'{"a":+1}'),
    case("raw control character in a string", raw=b'{"a":"\x01"}'),
    case("raw newline in a string", raw=b'{"url":"https://h/\n"}'),
    case("raw NUL byte", raw=b'{"a":"\x00"}'),
    case("unknown escape", raw=b'{"a":"\\x"}'),
    case("short \\u escape", raw=b'{"a":"\\u12"}'),
    case("non-hex \\u escape", raw=b'{"a":"\\u12g4"}'),
    case("bad low half of a pair", raw=b'{"a":"\\ud800\\u12"}'),
    case("unterminated string", raw=b'{"a":"abc'),
    case("unterminated after escape", raw=b'{"a":"abc\\'),
    case("unterminated after \\u", raw=b'{"a":"\\u1234'),
    case("missing colon", raw=b'{"a" 1}'),
    case("key without value", raw=b'{"a":1,"b"}'),
    case("missing comma", raw=b'{"a":1 "b":2}'),
    case("unquoted key", raw=b"{a:1}"),
    case("single quotes", raw=b"{'a':1}"),
    case("comma first", raw=b"{,}"),
    case("bad literal", raw=b'{"a":tru}'),
    case("unclosed array", raw=b'{"a":[1,2}'),
    case("unclosed object", raw=b'{"a":1'),
    case("position on the third line", raw=b'{\n  "a": 1,\n  "b": x}'),
    case("position counts characters", raw='{"\u00e9\u20ac\U0001f600": x}'.encode()),
    case("vertical tab is not whitespace", raw=b"\x0b{}"),
    # --- not UTF-8 (UnicodeDecodeError) ---
    case("invalid start byte", raw=b"\xff{}"),
    case("invalid continuation byte", raw=b'{"a":"\xe2\x28\xa1"}'),
    case("invalid continuation after two", raw=b'{"a":"\xf0\x90\x80"}'),
    case("overlong", raw=b'{"a":"\xc0\xaf"}'),
    case("encoded surrogate", raw=b'{"a":"\xed\xa0\x80"}'),
    case("unexpected end of data", raw=b'{"a":"\xe2\x82'),
    # --- JSON to Python that cJSON cannot hold: refused in the C device's words ---
    case("NaN", raw=b'{"a":NaN}', c=not_supported("NaN or Infinity", 1, 6)),
    case("-Infinity", raw=b'{"a":[-Infinity]}', c=not_supported("NaN or Infinity", 1, 7)),
    case(
        "lone surrogate",
        raw=b'{"a":"x\\ud800"}',
        c=not_supported("a lone UTF-16 surrogate escape", 1, 8),
    ),
    case(
        "lone low surrogate",
        raw=b'{"a":"\\udc00"}',
        c=not_supported("a lone UTF-16 surrogate escape", 1, 7),
    ),
    case("syntax error after a lone surrogate", raw=b'{"a":"\\ud800",}'),
    case(
        "nested 17 deep",
        raw=b'{"a":' + b"[" * 16 + b"]" * 16 + b"}",
        c=(INVALID_ARG, "bad OTA request: JSON nested too deeply: line 1 column 21 (char 20)"),
    ),
    # --- not an object ---
    case("array", raw=b"[1]"),
    case("string", raw=b'"url"'),
    case("null", raw=b"null"),
    case("number", raw=b" 5 "),
    case("empty object", raw=b"{}"),
    # --- fields of the wrong type (_field, _headers), in their order ---
    case("url missing", url=OMIT),
    case("url null", url="null"),
    case("url number", url="5"),
    case("url array", url='["https://h/"]'),
    case("url key differs in case", url=OMIT, extra=',"URL":"https://h/"'),
    case("sha256 missing (url wrong too)", url="1", sha256=OMIT),
    case("sha256 missing", sha256=OMIT),
    case("sha256 number", sha256="1234"),
    case("size missing", size=OMIT),
    case("size string", size='"912384"'),
    case("size true", size="true"),
    case("size false", size="false"),
    case("size null", size="null"),
    case("size with a fraction", size="912384.0"),
    case("size with an exponent", size="1e6"),
    case("size with a capital exponent", size="1E6"),
    case("size with a negative exponent", size="9123840e-1"),
    case("size object", size="{}"),
    case("version missing", version=OMIT),
    case("version number", version="1.2"),
    case("cert_pem missing", cert_pem=OMIT),
    case("cert_pem list", cert_pem="[]"),
    case("headers null", extra=',"headers":null'),
    case("headers list", extra=',"headers":[]'),
    case("headers string", extra=',"headers":"Authorization: x"'),
    case("header value number", extra=',"headers":{"A":"x","B":1}'),
    case("header value null", extra=',"headers":{"A":null}'),
    case("header value object", extra=',"headers":{"A":{}}'),
    case("cert_pem wrong before headers", cert_pem="1", extra=',"headers":1'),
    case("type errors before value errors", url=js("http://h/"), size='"x"'),
    # --- U+0000 in a string the C device keeps (Python keeps it; a C string cannot) ---
    case("NUL in url", url=js("https://h/\0x"), c=nul_refused("url")),
    case("NUL in version", version=js("1.2\0"), c=nul_refused("version")),
    case("NUL in a header", extra=headers(("A", "b\\u0000c")), c=nul_refused("headers")),
    case("NUL in a header name", extra=headers(("A\\u0000", "b")), c=nul_refused("headers")),
    # --- validate_request, in its order ---
    case("plain http", url=js("http://192.168.1.10/firmware.bin")),
    case("ftp", url=js("ftp://h/x")),
    case("no scheme", url=js("//h/x")),
    case("empty url", url=js("")),
    case("https without host", url=js("https://")),
    case("https with empty host", url=js("https:///x")),
    case("https: without slashes", url=js("https:h")),
    case("url with a quote", url=js("http://it's/x")),
    case("url with both quotes", url=js('http://it\'s/"x"')),
    case("url with a backslash and a tab", url=js("http://h/\\x\t")),
    case("url with non-ASCII", url=js("http://h/caf\u00e9\u00a0")),
    # URLs yarl cannot read: refused like any other bad URL (by both devices).
    *(
        case(f"url {what}", url=js(url))
        for what, url in [
            ("port not a number", "https://h:notaport/x"),
            ("port above 65535", "https://h:99999/"),
            ("IPv6 unclosed", "https://[::1/x"),
            ("IPv6 empty", "https://[]/x"),
            ("IPv6 then junk", "https://[::1]x/"),
            ("backslash in the host", "https://h\\x/"),
            ("userinfo without host", "https://user@/x"),
            ("port without host", "https://:443/x"),
        ]
    ),
    # URLs esp_http_client cannot send: the C device refuses them too.
    *(
        case(f"url {what}", url=js(url), c=url_refused(url))
        for what, url in [
            ("with a leading space", " https://h/"),
            ("with a space in the host", "https://h x/"),
            ("with a control character", "https://h/\x01"),
        ]
    ),
    case("http before bad sha256", url=js("http://h/"), sha256=js("x")),
    case("sha256 of 63 digits", sha256=js("a" * 63)),
    case("sha256 of 65 digits", sha256=js("a" * 65)),
    case("sha256 not hex", sha256=js("g" * 64)),
    case("sha256 empty", sha256=js("")),
    case("sha256 before size", sha256=js("x"), size="5"),
    case("size 1023", size="1023"),
    case("size 0", size="0"),
    case("size -0", size="-0"),
    case("size negative", size="-5"),
    case("size very negative", size="-123456789012345678901234567890"),
    case("size above the slot", size="1740801"),
    case("size above 32 bits", size="4294967296"),
    case("size of 25 digits", size="1234567890123456789012345"),
    case("size below before version", size="1", version=js("")),
    case("size above before version", size="99999999", version=js("")),
    case("version empty", version=js("")),
    case("version of 32 bytes", version=js("v" * 32)),
    case("version of 16 two-byte characters", version=js("\u00e9" * 16)),
    case("version before cert_pem", version=js(""), cert_pem=js("")),
    case("cert_pem empty", cert_pem=js("")),
    case("cert_pem blank", cert_pem=js(" \n\t\r\x0b\x0c\x1c\x1f")),
    case("cert_pem of Unicode spaces", cert_pem=js("\u00a0\u2003\u3000\u2028\x85")),
    case(
        "cert_pem without a certificate",
        cert_pem=js("hello"),
        c=(
            INVALID_ARG,
            "cert_pem is not a usable certificate: no start line: "
            "cadata does not contain a certificate",
        ),
    ),
    case("cert_pem before headers", cert_pem=js(""), extra=headers(("", "x"))),
    case("header with an empty name", extra=headers(("", "x"))),
    case("header name with CR", extra=headers(("A\\r", "x"))),
    case("header value with LF", extra=headers(("Authorization", "Bearer x\\ny"))),
    case("second header bad", extra=headers(("A", "1"), ("B\\n", "2"))),
    case("header name quoted with quotes", extra=headers(("it's\\n", "1"))),
    case("nine headers", extra=headers(*NINE), c=(INVALID_ARG, "too many headers: 9 (at most 8)")),
    case("nine headers, the ninth bad", extra=headers(*NINE[:8], ("I\\r", "9"))),
    # --- accepted ---
    case("valid"),
    case("valid, size exactly the slot", size="1740800"),
    case("valid, size 1024", size="1024"),
    case("valid, version of 31 bytes", version=js("v" * 31)),
    case("valid, scheme in capitals", url=js("HTTPS://h/x")),
    case("valid, user and port", url=js("https://user:pw@h:8443/x?y#z")),
    case("valid, IPv6 host", url=js("https://[::1]:8443/x")),
    case("valid, host only", url=js("https://h")),
    case("valid, empty port", url=js("https://h:/x")),
    case("valid, @ in the path", url=js("https://h/a@b")),
    case("valid, two @", url=js("https://a@b@h:1/")),
    case("valid, port 65535", url=js("https://h:65535/")),
    case("valid, eight headers", extra=headers(*NINE[:8])),
    case("valid, nine header members, one repeated", extra=headers(*NINE[:8], ("A", "9"))),
    case("valid, a bad value replaced by a later one", extra=headers(("A", "x\\ny"), ("A", "ok"))),
    case("valid, empty headers", extra=headers()),
    case("valid, unknown fields", extra=',"x":[1,{"y":null}],"z":-1.5e3'),
    case("valid, the last url counts", url=js("http://h/"), extra=',"url":"https://h/"'),
    case("valid, a key with NUL is another key", extra=',"url\\u0000":"http://h/"'),
    case("valid, an escaped key", url=OMIT, extra=',"\\u0075rl":"https://h/"'),
    case("valid, a surrogate pair", extra=',"x":"\\ud83d\\ude00"'),
    case("valid, NUL in an unknown field", extra=',"x":"\\u0000"'),
    case(
        "valid, whitespace everywhere",
        raw=(
            f' \r\n\t{{ "url" : {DEFAULTS["url"]} , "sha256":{DEFAULTS["sha256"]},"size" :1024'
            f' ,"version":"1","cert_pem":{DEFAULTS["cert_pem"]} }}\n'
        ).encode(),
    ),
]


def body_of(spec: dict[str, Any]) -> bytes:
    if "raw" in spec:
        raw: bytes = spec["raw"]
        return raw
    members = [
        f'"{name}":{spec.get(name, DEFAULTS[name])}' for name in FIELDS if spec.get(name) != OMIT
    ]
    extra: str = spec.get("extra", "")
    return ("{" + ",".join(members) + extra + "}").encode()


def reference(body: bytes) -> tuple[str, str]:
    """The reference device's answer: (error name or ESP_OK or 500, message)."""
    try:
        request = decode_ota_request(body)
    except (ValueError, TypeError, AttributeError) as err:
        return INVALID_ARG, f"bad OTA request: {err}"
    try:
        validate_request(request, SLOT)
    except EspError as err:
        return err.name, err.message
    except ValueError as err:  # the simulator does not catch it: HTTP 500
        return "500", str(err)
    return "ESP_OK", ""


def c_literal(value: str | bytes) -> str:
    """A C string literal of the bytes; octal escapes (at most 3 digits) never run on."""
    data = value.encode() if isinstance(value, str) else value
    out = []
    for byte in data:
        char = chr(byte)
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif 32 <= byte < 127 and char != "?":  # no trigraphs
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def main() -> None:
    print("/*")
    print(" * POST /api/v1/ota bodies and the reference device's answers (simulator/api.py and")
    print(" * simulator/device.py), generated by reference_cases.py: do not edit by hand.")
    print(" *")
    print(" * SPDX-License-Identifier: Apache-2.0")
    print(" */")
    print("/* clang-format off */")
    print(f"#define SLOT_SIZE {SLOT}")
    for name in FIELDS:
        print(f"#define DEFAULT_{name.upper()} {c_literal(DEFAULTS[name])}")
    print("static const request_case_t CASES[] = {")
    for spec in CASES:
        error, message = reference(body_of(spec))
        row = [f".name = {c_literal(spec['name'])}"]
        if "raw" in spec:
            row.append(f".raw = {c_literal(spec['raw'])}")
            if b"\0" in spec["raw"]:
                row.append(f".raw_len = {len(spec['raw'])}")
        row.extend(
            f".{name} = " + ("OMIT" if spec[name] == OMIT else c_literal(spec[name]))
            for name in FIELDS
            if name in spec
        )
        if "extra" in spec:
            row.append(f".extra = {c_literal(spec['extra'])}")
        if spec["c"] is not None:
            print(f"    /* the reference device: {error} {message!r} */")
            error, message = spec["c"]
        row.append(f".err = {error}")
        row.append(f".message = {c_literal(message)}")
        print("    {" + ", ".join(row) + "},")
    print("};")


if __name__ == "__main__":
    main()
