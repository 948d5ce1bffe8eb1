"""quality_scale.yaml: every rule of every tier, with an honest status the code backs up."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from homeassistant.util.yaml import load_yaml_dict
from packaging.requirements import Requirement

from custom_components.esp_ota.const import DOMAIN
from tests.conftest import REPO_ROOT

INTEGRATION = REPO_ROOT / "custom_components" / DOMAIN

# Home Assistant's integration quality scale, tier by tier (developers.home-assistant.io).
TIERS: dict[str, tuple[str, ...]] = {
    "bronze": (
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow-test-coverage",
        "config-flow",
        "dependency-transparency",
        "docs-actions",
        "docs-conditions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "docs-triggers",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    ),
    "silver": (
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    ),
    "gold": (
        "devices",
        "diagnostics",
        "discovery-update-info",
        "discovery",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    ),
    "platinum": ("async-dependency", "inject-websession", "strict-typing"),
}
ALL_RULES = [rule for rules in TIERS.values() for rule in rules]
PLATFORM_MODULES = ("sensor", "update")


def load_rules() -> dict[str, Any]:
    """The `rules` mapping of the integration's quality_scale.yaml."""
    document = load_yaml_dict(str(INTEGRATION / "quality_scale.yaml"))
    assert list(document) == ["rules"]
    rules = document["rules"]
    assert isinstance(rules, dict)
    return rules


def status_of(rule: str) -> str:
    """done, todo or exempt."""
    value = load_rules()[rule]
    status = value["status"] if isinstance(value, dict) else value
    assert isinstance(status, str)
    return status


def load_json(name: str) -> dict[str, Any]:
    """A JSON file of the integration."""
    data = json.loads((INTEGRATION / name).read_text())
    assert isinstance(data, dict)
    return data


def test_every_rule_of_every_tier_is_listed_once_in_tier_order() -> None:
    """No rule missing, none unknown, in the order of the tiers (as hassfest lists them)."""
    rules = load_rules()
    missing = [rule for rule in ALL_RULES if rule not in rules]
    unknown = [rule for rule in rules if rule not in ALL_RULES]
    assert missing == []
    assert unknown == []
    assert list(rules) == ALL_RULES


@pytest.mark.parametrize("rule", ALL_RULES)
def test_status_is_valid_and_not_done_says_why(rule: str) -> None:
    """done, or exempt/todo with a comment giving the reason."""
    value = load_rules()[rule]
    if isinstance(value, str):
        assert value == "done", f"{rule}: a bare status must be done, got {value!r}"
        return
    assert isinstance(value, dict), rule
    assert set(value) <= {"status", "comment"}, rule
    assert value["status"] in ("done", "exempt", "todo"), rule
    if value["status"] != "done":
        comment = value.get("comment")
        assert isinstance(comment, str), f"{rule}: {value['status']} needs a comment"
        assert len(comment.split()) >= 4, f"{rule}: the comment must give a reason"


def raised_translation_keys(tree: ast.AST) -> tuple[set[str], set[str]]:
    """translation_key= of every raised exception, and of every repair issue created."""
    raised: set[str] = set()
    issues: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            target, call = raised, node.exc
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "async_create_issue"
        ):
            target, call = issues, node
        else:
            continue
        for keyword in call.keywords:
            if keyword.arg != "translation_key":
                continue
            # A literal, or a choice between literals (`"a" if bad else "b"`); a key held
            # in a variable cannot be read here (its module's tests must show its text).
            value = keyword.value
            choices = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
            target.update(
                choice.value
                for choice in choices
                if isinstance(choice, ast.Constant) and isinstance(choice.value, str)
            )
    return raised, issues


def integration_modules() -> list[Path]:
    """The Home Assistant layer's modules (not the library)."""
    return sorted(INTEGRATION.glob("*.py"))


def test_exceptions_and_issues_are_translated() -> None:
    """exception-translations and repair-issues: every key raised or created has a text."""
    assert status_of("exception-translations") == "done"
    assert status_of("repair-issues") == "done"
    strings = load_json("strings.json")
    raised: set[str] = set()
    issues: set[str] = set()
    for module in integration_modules():
        more_raised, more_issues = raised_translation_keys(ast.parse(module.read_text()))
        raised |= more_raised
        issues |= more_issues
    assert {"cannot_connect", "feed_failed", "invalid_auth"} <= raised
    assert {"certificate_mismatch", "feed_failing", "feed_bad_signature"} <= issues
    assert raised - set(strings["exceptions"]) == set()
    assert issues - set(strings["issues"]) == set()


def test_install_failures_and_their_repairs_are_translated() -> None:
    """action-exceptions: the install's failures, whose keys are made from the job's reason."""
    assert status_of("action-exceptions") == "done"
    from custom_components.esp_ota.espota.job_record import FailureReason
    from custom_components.esp_ota.installer import NOT_BACK_ISSUE, ROLLED_BACK_ISSUE

    strings = load_json("strings.json")
    missing = [
        f"install_{reason.value}"
        for reason in FailureReason
        if f"install_{reason.value}" not in strings["exceptions"]
    ]
    assert missing == []
    assert "install_running" in strings["exceptions"]
    assert {ROLLED_BACK_ISSUE, NOT_BACK_ISSUE} <= set(strings["issues"])


def test_entities_are_translated_and_have_icons() -> None:
    """entity-translations, icon-translations: names, states and icons for every entity."""
    from custom_components.esp_ota.sensor import SENSORS
    from custom_components.esp_ota.update import UPDATES

    strings = load_json("strings.json")["entity"]
    icons = load_json("icons.json")["entity"]
    for description in SENSORS:
        key = description.translation_key
        assert key is not None
        assert "name" in strings["sensor"][key], key
        assert key in icons["sensor"], f"sensor {key} has no icon"
        for option in description.options or ():
            assert option in strings["sensor"][key]["state"], f"{key}: state {option}"
        for state in icons["sensor"][key].get("state", {}):
            assert state in (description.options or ()), f"{key}: icon for unknown {state}"
    for update in UPDATES:
        assert update.translation_key is not None
        assert "name" in strings["update"][update.translation_key]


def test_rules_marked_done_are_backed_by_the_code() -> None:
    """The checks of the rules the code shows (the others are covered by their tests)."""
    manifest = load_json("manifest.json")
    integration = importlib.import_module(f"custom_components.{DOMAIN}")
    config_flow = importlib.import_module(f"custom_components.{DOMAIN}.config_flow")
    flow = config_flow.EspOtaConfigFlow
    checks = {
        "config-flow": manifest.get("config_flow") is True,
        "integration-owner": bool(manifest.get("codeowners")),
        # Its source under an OSI licence, every requirement a plain PyPI one (no URL).
        "dependency-transparency": (REPO_ROOT / "LICENSE").is_file()
        and all(Requirement(line).url is None for line in manifest.get("requirements", [])),
        "discovery": bool(manifest.get("zeroconf") or manifest.get("dhcp")),
        "discovery-update-info": bool(manifest.get("dhcp")),
        "reauthentication-flow": hasattr(flow, "async_step_reauth_confirm"),
        "reconfiguration-flow": hasattr(flow, "async_step_reconfigure"),
        "diagnostics": (INTEGRATION / "diagnostics.py").is_file(),
        "stale-devices": hasattr(integration, "async_remove_config_entry_device"),
        "brands": (INTEGRATION / "brand" / "icon.png").is_file(),
        "config-entry-unloading": hasattr(integration, "async_unload_entry"),
        "parallel-updates": all(
            isinstance(
                importlib.import_module(f"{integration.__name__}.{name}").PARALLEL_UPDATES,
                int,
            )
            for name in PLATFORM_MODULES
        ),
    }
    wrong = [rule for rule, holds in checks.items() if (status_of(rule) == "done") is not holds]
    assert wrong == [], f"status does not match the code for {wrong}"


def comment_of(rule: str) -> str:
    """The rule's comment ('' for a bare status)."""
    value = load_rules()[rule]
    return str(value.get("comment", "")) if isinstance(value, dict) else ""


# The calls that open a socket of their own, by their last name (socket.socket,
# asyncio.open_connection, loop.create_connection, aiohttp.ClientSession, ...).
SOCKET_OPENERS = frozenset(
    {
        "ClientSession",
        "HTTPConnection",
        "HTTPSConnection",
        "TCPConnector",
        "create_connection",
        "create_datagram_endpoint",
        "create_server",
        "create_unix_connection",
        "open_connection",
        "open_unix_connection",
        "sock_connect",
        "socket",
        "socketpair",
        "start_server",
        "urlopen",
    }
)
# inject-websession: every socket the integration opens itself (file, call), and the words
# by which the rule's comment names it. A new one must be named there, or use the session.
OWN_SOCKETS = {
    ("espota/device_client.py", "open_connection"): "config flow",  # the device's certificate
    ("espota/direct_download.py", "open_connection"): "direct-mode",  # the release server's
    ("firmware.py", "socket"): "UDP",  # the route probe: connect() picks a route, sends nothing
    ("espota/bounded_listener.py", "create_server"): "firmware server",  # its listener
    ("device_session.py", "ClientSession"): "device session",  # the devices' HTTP session
}
# The library's clients that make HTTP requests, and what the HA layer must pass them.
SESSION_CLIENTS = frozenset({"DeviceClient", "FeedClient", "FirmwareStore"})
INJECTED_SESSIONS = frozenset({"async_get_clientsession", "async_get_device_session"})


def called_name(call: ast.Call) -> str:
    """The last name of what is called: `socket` for socket.socket(...)."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def own_sockets() -> set[tuple[str, str]]:
    """(file, call) of every call in the integration (library included) that opens a socket."""
    found: set[tuple[str, str]] = set()
    for path in sorted(INTEGRATION.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and called_name(node) in SOCKET_OPENERS:
                found.add((path.relative_to(INTEGRATION).as_posix(), called_name(node)))
    return found


def test_inject_websession_names_every_socket_the_integration_opens() -> None:
    """inject-websession: HTTP goes through Home Assistant's session, and the comment names
    every other socket (a new one fails here until it is named, or moved to the session)."""
    assert status_of("inject-websession") == "done"
    assert own_sockets() == set(OWN_SOCKETS)
    comment = comment_of("inject-websession")
    unnamed = [site for site, words in OWN_SOCKETS.items() if words not in comment]
    assert unnamed == [], f"the comment does not name {unnamed}"
    assert "device session" in comment
    # The HA layer hands every HTTP client of the library Home Assistant's shared session,
    # or the device session built over it (its resolver) with the lean TLS connector.
    made = 0
    for module in integration_modules():
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and called_name(node) in SESSION_CLIENTS:
                arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
                shared = [
                    argument
                    for argument in arguments
                    if isinstance(argument, ast.Call) and called_name(argument) in INJECTED_SESSIONS
                ]
                assert shared, f"{module.name}: {ast.unparse(node)} without the shared session"
                made += 1
    assert made >= 4  # the config flow's and the entries' device clients, feed, store


def test_polling_is_what_appropriate_polling_says() -> None:
    """appropriate-polling: the comment's figures are the code's."""
    from custom_components.esp_ota.const import FALLBACK_POLL_MAX, FALLBACK_POLL_MIN
    from custom_components.esp_ota.feed_coordinator import FEED_UPDATE_INTERVAL

    comment = comment_of("appropriate-polling")
    assert FALLBACK_POLL_MIN.total_seconds() == 30
    assert "every 30 s" in comment
    assert FALLBACK_POLL_MAX.total_seconds() == 5 * 60
    assert "5 min" in comment
    assert FEED_UPDATE_INTERVAL.total_seconds() == 3600
    assert "hourly" in comment


def flow_reasons() -> dict[str, set[str]]:
    """Every error and abort reason the flows can show, read from config_flow.py.

    Literal reasons (`errors[...] = "x"`, `ConnectionTestError("x")`, `reason="x"`), and
    the ones Home Assistant's flow helpers raise for the helpers config_flow.py calls."""
    source = (INTEGRATION / "config_flow.py").read_text()
    found: dict[str, set[str]] = {"config.error": set(), "options.error": set()}
    found["config.abort"] = set()
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef) or not cls.name.endswith("Flow"):
            continue
        kind = "options" if "Options" in cls.name else "config"
        for node in ast.walk(cls):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                target = node.targets[0]
                if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "errors":
                    found[f"{kind}.error"].add(str(node.value.value))
            elif isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name == "ConnectionTestError" and isinstance(node.args[0], ast.Constant):
                    found["config.error"].add(str(node.args[0].value))
                if name == "self.async_set_unique_id" and not any(
                    keyword.arg == "raise_on_progress" for keyword in node.keywords
                ):
                    found["config.abort"].add("already_in_progress")  # a second discovery
                found[f"{kind}.abort"] = found.get(f"{kind}.abort", set()) | {
                    str(keyword.value.value)
                    for keyword in node.keywords
                    if keyword.arg == "reason" and isinstance(keyword.value, ast.Constant)
                }
    helpers = {
        "_abort_if_unique_id_configured": "already_configured",
        "_get_reauth_entry": "reauth_successful",
        "_get_reconfigure_entry": "reconfigure_successful",
    }
    for call, reason in helpers.items():
        if call in source:
            found["config.abort"].add(reason)
    return found


FLOW_REASONS = sorted(
    (section, reason) for section, reasons in flow_reasons().items() for reason in reasons
)


@pytest.mark.parametrize(("section", "reason"), FLOW_REASONS)
def test_every_flow_error_and_abort_is_translated(section: str, reason: str) -> None:
    """config-flow: the user reads a sentence, not a key, for every error and abort."""
    strings = load_json("strings.json")
    translations = load_json("translations/en.json")
    flow, kind = section.split(".")
    assert reason in strings[flow][kind], f"{section}.{reason} missing in strings.json"
    assert translations[flow][kind][reason] == strings[flow][kind][reason]


def test_the_reasons_are_found() -> None:
    """The scan above finds the reasons it should (so the parametrized test tests)."""
    reasons = flow_reasons()
    assert {"cannot_connect", "invalid_auth", "cert_mismatch", "invalid_host"} <= reasons[
        "config.error"
    ]
    assert {"invalid_feed_url", "invalid_public_key"} <= reasons["options.error"]
    assert {"wrong_device", "unsupported_device", "already_configured"} <= reasons["config.abort"]
