"""The repository against the rules hassfest and HACS apply to a custom integration.

hassfest (script/hassfest in Home Assistant core) ships neither in the homeassistant wheel
nor in the test plugin, and HACS's repository validators (custom_components/hacs/validate
in hacs/integration) read the repository through GitHub's API. Both run in their own CI
actions; the rules of theirs that bear on this repository are written out here, each test
naming the validator it mirrors, so a change that would fail them fails here first,
offline. tests/integration/test_init.py already checks the manifest's key order and
discovery matchers and the brand icons' sizes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import probatio
import pytest
from awesomeversion import AwesomeVersion, AwesomeVersionStrategy
from homeassistant import const as ha_const
from homeassistant.const import Platform
from homeassistant.helpers import config_validation as cv
from homeassistant.requirements import DISCOVERY_INTEGRATIONS
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from custom_components.esp_ota.const import DOMAIN
from tests.conftest import REPO_ROOT

INTEGRATION = REPO_ROOT / "custom_components" / DOMAIN


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


MANIFEST = load_json(INTEGRATION / "manifest.json")


# --- manifest.json ----------------------------------------------------------------------

# hassfest manifest.py: CUSTOM_INTEGRATION_MANIFEST_SCHEMA (the core schema plus version,
# issue_tracker and import_executor). It allows no other key.
HASSFEST_MANIFEST_KEYS = frozenset(
    {
        "after_dependencies",
        "bluetooth",
        "codeowners",
        "config_flow",
        "dependencies",
        "dhcp",
        "disabled",
        "documentation",
        "domain",
        "homekit",
        "import_executor",
        "integration_type",
        "iot_class",
        "issue_tracker",
        "loggers",
        "mqtt",
        "name",
        "preview_features",
        "quality_scale",
        "requirements",
        "single_config_entry",
        "ssdp",
        "usb",
        "version",
        "zeroconf",
    }
)
# Required by hassfest (version through validate_version, for custom integrations) and by
# HACS's integration_manifest validator (INTEGRATION_MANIFEST_JSON_SCHEMA).
REQUIRED_MANIFEST_KEYS = frozenset(
    {"codeowners", "documentation", "domain", "issue_tracker", "name", "version"}
)
IOT_CLASSES = frozenset(
    {"assumed_state", "calculated", "cloud_polling", "cloud_push", "local_polling", "local_push"}
)
INTEGRATION_TYPES = frozenset(
    {"device", "entity", "hardware", "helper", "hub", "service", "system"}
)
# A GitHub user (@name) or team (@org/team): what a CODEOWNERS line, and so Home Assistant's
# codeowners, can name.
GITHUB_OWNER = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?(?:/[\w.-]+)?")
VERSION_STRATEGIES = frozenset(
    {
        AwesomeVersionStrategy.CALVER,
        AwesomeVersionStrategy.SEMVER,
        AwesomeVersionStrategy.SIMPLEVER,
        AwesomeVersionStrategy.BUILDVER,
        AwesomeVersionStrategy.PEP440,
    }
)


def test_manifest_has_the_keys_hassfest_and_hacs_require_and_no_other() -> None:
    """hassfest manifest.py (schema, validate_version, domain = folder name) and HACS's
    integration_manifest validator."""
    assert set(MANIFEST) <= HASSFEST_MANIFEST_KEYS, set(MANIFEST) - HASSFEST_MANIFEST_KEYS
    assert set(MANIFEST) >= REQUIRED_MANIFEST_KEYS, REQUIRED_MANIFEST_KEYS - set(MANIFEST)
    assert MANIFEST["domain"] == INTEGRATION.name == DOMAIN
    assert isinstance(MANIFEST["name"], str)
    assert MANIFEST["name"]


def test_manifest_names_a_codeowner() -> None:
    """integration-owner, and hassfest's codeowners: a non-empty list of GitHub handles."""
    owners = MANIFEST["codeowners"]
    assert isinstance(owners, list)
    assert owners, "nobody owns the integration"
    bad = [owner for owner in owners if not GITHUB_OWNER.fullmatch(owner)]
    assert bad == [], f"not a GitHub user or team: {bad}"


def test_manifest_values_are_valid() -> None:
    """hassfest manifest.py: iot_class, integration_type, https documentation that is not
    Home Assistant's own (custom_documentation_url), a version AwesomeVersion can order."""
    assert MANIFEST["iot_class"] in IOT_CLASSES
    assert MANIFEST.get("integration_type", "hub") in INTEGRATION_TYPES
    for key in ("documentation", "issue_tracker"):
        url = urlparse(MANIFEST[key])
        assert url.scheme == "https", key
        assert url.netloc, key
    assert not MANIFEST["documentation"].startswith("https://www.home-assistant.io/integrations")
    assert AwesomeVersion(MANIFEST["version"]).strategy in VERSION_STRATEGIES


def test_the_manifest_and_the_package_have_one_version() -> None:
    """docs/release.md: a release raises manifest.json's version and pyproject's together."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert MANIFEST["version"] == pyproject["project"]["version"]


def test_no_logger_repeats_the_integrations_own_package() -> None:
    """Home Assistant's logger integration (components/logger/helpers.py) always adds the
    integration's own package to its `loggers`: listing it again says nothing."""
    assert f"custom_components.{DOMAIN}" not in MANIFEST.get("loggers", [])


def test_requirements_are_plain_pypi_requirements() -> None:
    """hassfest requirements.py (validate_requirements_format): no space, a valid
    requirement (custom integrations need not pin); and dependency-transparency: from
    PyPI, never a URL or a Git repository."""
    for line in MANIFEST.get("requirements", []):
        assert " " not in line, line
        requirement = Requirement(line)
        assert requirement.url is None, line


# --- the requirements are what the code imports -----------------------------------------

# Home Assistant aliases `voluptuous` to probatio, which it requires, before anything
# imports it (homeassistant/__init__.py, install_as_voluptuous); the library imports it by
# that name so that it also runs without Home Assistant.
PROVIDED_BY_HOME_ASSISTANT_ALIAS = frozenset({"voluptuous"})


def imported_top_level_modules() -> dict[str, set[str]]:
    """Top-level module -> the files of the integration (library included) importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(INTEGRATION.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                found.setdefault(top, set()).add(path.relative_to(INTEGRATION).as_posix())
    return found


def distribution_names(lines: list[str]) -> set[str]:
    """The canonical distribution names of requirement lines."""
    return {canonicalize_name(Requirement(line).name) for line in lines}


def test_requirements_are_what_the_code_imports() -> None:
    """Every third-party module the code imports comes with Home Assistant or is in the
    manifest's requirements, and every requirement is imported and not shipped already."""
    modules = imported_top_level_modules()
    home_assistant = distribution_names(importlib.metadata.requires("homeassistant") or [])
    required = distribution_names(MANIFEST.get("requirements", []))
    distributions_of = importlib.metadata.packages_distributions()
    third_party = {
        module: {canonicalize_name(name) for name in distributions_of.get(module, [module])}
        for module in modules
        if module not in sys.stdlib_module_names
        and module not in ("homeassistant", "custom_components")
        and module not in PROVIDED_BY_HOME_ASSISTANT_ALIAS
    }
    missing = {
        module: sorted(modules[module])
        for module, names in third_party.items()
        if not names & (home_assistant | required)
    }
    assert missing == {}, "imported, but neither in Home Assistant nor in the manifest"
    imported = set().union(*third_party.values())
    assert required <= imported, f"required, never imported: {required - imported}"
    assert required & home_assistant == set(), "Home Assistant requires it already"
    assert "numpy" in third_party  # the scan finds what it should (espota/image.py)


# --- dependencies -----------------------------------------------------------------------

# hassfest dependencies.py allows a few internal integrations besides these rules
# (ALLOWED_USED_COMPONENTS); none is used here. Check that list before adding one.
ALLOWED_INTERNAL_INTEGRATIONS: frozenset[str] = frozenset()


class ReferencedIntegrations(ast.NodeVisitor):
    """The homeassistant.components.<x> a module imports, outside `if TYPE_CHECKING:`."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "homeassistant.components":
            self.found.update(alias.name for alias in node.names)
        elif node.module and node.module.startswith("homeassistant.components."):
            self.found.add(node.module.split(".")[2])

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("homeassistant.components."):
                self.found.add(alias.name.split(".")[2])


def test_imported_integrations_are_allowed_by_hassfests_dependencies_rule() -> None:
    """hassfest dependencies.py: another integration's module may be imported only if it is
    an entity platform, a dependency or after-dependency, a discovery integration the
    manifest uses, or one this integration has a platform file for (diagnostics.py)."""
    allowed = (
        {platform.value for platform in Platform}
        | set(MANIFEST.get("dependencies", []))
        | set(MANIFEST.get("after_dependencies", []))
        | ALLOWED_INTERNAL_INTEGRATIONS
        | {DOMAIN}
    )
    allowed |= {
        discovery
        for discovery, keys in DISCOVERY_INTEGRATIONS.items()
        if any(key in MANIFEST for key in keys)
    }
    referenced: dict[str, set[str]] = {}
    for path in sorted(INTEGRATION.rglob("*.py")):
        visitor = ReferencedIntegrations()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        for domain in visitor.found:
            referenced.setdefault(domain, set()).add(path.name)
    not_allowed = {
        domain: sorted(files)
        for domain, files in referenced.items()
        if domain not in allowed
        and not (INTEGRATION / f"{domain}.py").is_file()
        and not (INTEGRATION / domain).is_dir()
    }
    assert not_allowed == {}, "used, but not in dependencies or after_dependencies"
    assert {"sensor", "update"} <= set(referenced)  # the scan finds what it should


# --- translations -----------------------------------------------------------------------

# hassfest translations.py (gen_strings_schema, translation_key_validator,
# translation_value_validator). For a custom integration it checks strings.json and
# translations/en.json alike.
TRANSLATION_KEY = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")
SLUG = re.compile(r"^[a-z0-9_]+$")  # cv.slug
QUOTED_PLACEHOLDER = re.compile(r"'{\w+}'")
COMBINED_REFERENCE = re.compile(r"(.+\[%)|(%\].+)")
STRINGS_SECTIONS = frozenset(
    {
        "application_credentials",
        "common",
        "conditions",
        "config",
        "config_panel",
        "config_subentries",
        "conversation",
        "device",
        "device_automation",
        "entity",
        "entity_component",
        "exceptions",
        "issues",
        "options",
        "preview_features",
        "selector",
        "services",
        "system_health",
        "title",
        "triggers",
    }
)
FLOW_KEYS = frozenset({"abort", "create_entry", "error", "flow_title", "progress", "step"})
STEP_KEYS = frozenset(
    {
        "data",
        "data_description",
        "description",
        "menu_option_descriptions",
        "menu_options",
        "sections",
        "submit",
        "title",
    }
)
ENTITY_KEYS = frozenset({"name", "state", "state_attributes", "unit_of_measurement"})


def text_problem(value: object) -> str | None:
    """Why hassfest refuses this translated text, or None."""
    if not isinstance(value, str):
        return "not a string"
    try:
        cv.string_with_no_html(value)
    except probatio.Invalid:  # Home Assistant's validators are probatio's
        return "contains HTML"
    if QUOTED_PLACEHOLDER.search(value):
        return "a placeholder in single quotes"
    if COMBINED_REFERENCE.search(value):
        return "text combined with a [%key:...%] reference"
    if value != value.strip():
        return "leading or trailing spaces"
    return None


def texts(node: object, where: str) -> Iterator[tuple[str, object]]:
    """Every leaf of a translation tree, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from texts(value, f"{where}.{key}")
    else:
        yield where, node


def flow_problems(flow: dict[str, Any], where: str) -> Iterator[str]:
    """hassfest gen_data_entry_schema: a flow's sections, its steps' keys, and each step's
    data_description naming only the step's fields."""
    yield from (f"{where}: unknown key {key!r}" for key in set(flow) - FLOW_KEYS)
    if "step" not in flow:
        yield f"{where}: no steps"
        return
    for step_id, step in flow["step"].items():
        yield from (f"{where}.step.{step_id}: unknown key {k!r}" for k in set(step) - STEP_KEYS)
        described = set(step.get("data_description", {}))
        if not described <= set(step.get("data", {})):
            yield f"{where}.step.{step_id}: data_description of fields it has not"


def issues_problems(issues: dict[str, Any]) -> Iterator[str]:
    """hassfest gen_issues_schema: a title, and a description or a fix flow (not both)."""
    for issue_id, issue in issues.items():
        if not TRANSLATION_KEY.match(issue_id):
            yield f"issues.{issue_id}: not a translation key"
        if "title" not in issue:
            yield f"issues.{issue_id}: no title"
        if ("description" in issue) == ("fix_flow" in issue):
            yield f"issues.{issue_id}: needs a description or a fix_flow, not both"
        if "fix_flow" in issue:
            yield from flow_problems(issue["fix_flow"], f"issues.{issue_id}.fix_flow")


def states_problems(states: dict[str, Any], where: str) -> Iterator[str]:
    """State keys are translation keys."""
    for state in states:
        if not TRANSLATION_KEY.match(state):
            yield f"{where}.state.{state}: not a translation key"


def entity_problems(platforms: dict[str, Any]) -> Iterator[str]:
    """hassfest's entity section: platform -> translation key -> name, states, attributes."""
    for platform, entities in platforms.items():
        if not SLUG.match(platform):
            yield f"entity.{platform}: not a platform"
        for key, entity in entities.items():
            where = f"entity.{platform}.{key}"
            if not TRANSLATION_KEY.match(key):
                yield f"{where}: not a translation key"
            yield from (f"{where}: unknown key {k!r}" for k in set(entity) - ENTITY_KEYS)
            yield from states_problems(entity.get("state", {}), where)
            for attribute, spec in entity.get("state_attributes", {}).items():
                if not TRANSLATION_KEY.match(attribute) or set(spec) - {"name", "state"}:
                    yield f"{where}.state_attributes.{attribute}: a key with name and state"
                yield from states_problems(
                    spec.get("state", {}), f"{where}.state_attributes.{attribute}"
                )


def strings_problems(strings: dict[str, Any]) -> Iterator[str]:
    """Everything hassfest's translation schema would refuse in a strings file."""
    yield from (f"unknown section {key!r}" for key in set(strings) - STRINGS_SECTIONS)
    if "title" in strings.get("config", {}):
        yield "config.title (moved to the file's root, and only when it is not the name)"
    for kind in ("config", "options"):
        if kind in strings:
            yield from flow_problems(strings[kind], kind)
    yield from issues_problems(strings.get("issues", {}))
    for key, exception in strings.get("exceptions", {}).items():
        if not SLUG.match(key) or set(exception) - {"message"}:
            yield f"exceptions.{key}: a slug key holding only a message"
    for key, selector in strings.get("selector", {}).items():
        if not SLUG.match(key) or set(selector) != {"options"}:
            yield f"selector.{key}: a slug key holding only options"
        for option in selector.get("options", {}):
            if not TRANSLATION_KEY.match(option):
                yield f"selector.{key}.options.{option}: not a translation key"
    yield from entity_problems(strings.get("entity", {}))
    for where, value in texts(strings, ""):
        if (problem := text_problem(value)) is not None:
            yield f"{where.lstrip('.')}: {problem}"


@pytest.mark.parametrize("name", ["strings.json", "translations/en.json"])
def test_translations_pass_hassfests_schema(name: str) -> None:
    """hassfest translations.py, on both files as for every custom integration."""
    assert list(strings_problems(load_json(INTEGRATION / name))) == []


def test_the_translation_check_refuses_what_hassfest_refuses() -> None:
    """The checks above find the faults they look for (so a pass means something)."""
    bad = {
        "config": {"title": "ESP OTA", "step": {"user": {"data_description": {"host": "H"}}}},
        "issues": {"broken": {"title": "T", "description": "D", "fix_flow": {"step": {}}}},
        "entity": {"sensor": {"Bad_Key": {"state": {"ok": " padded"}}}},
        "exceptions": {"x": {"message": "<b>bold</b>"}},
        "selector": {"mode": {"options": {"a": "'{name}'"}}},
    }
    problems = "\n".join(strings_problems(bad))
    for expected in (
        "config.title",
        "data_description",
        "needs a description or a fix_flow",
        "Bad_Key: not a translation key",
        "leading or trailing spaces",
        "contains HTML",
        "single quotes",
    ):
        assert expected in problems


def test_strings_and_the_english_translation_say_the_same() -> None:
    """strings.json is the source; translations/en.json is what Home Assistant loads."""
    assert load_json(INTEGRATION / "strings.json") == load_json(
        INTEGRATION / "translations" / "en.json"
    )


# --- icons ------------------------------------------------------------------------------


def test_icons_pass_hassfests_schema() -> None:
    """hassfest icons.py: known sections, `mdi:` icons, translation keys, and no state icon
    that repeats its entity's default icon."""
    icons = load_json(INTEGRATION / "icons.json")
    problems = [
        f"unknown section {key!r}"
        for key in set(icons) - {"config", "entity", "issues", "options", "services"}
    ]
    for where, value in texts(icons, ""):
        if not (
            isinstance(value, str) and value.startswith("mdi:") and text_problem(value) is None
        ):
            problems.append(f"{where}: not an mdi: icon")
    for platform, entities in icons.get("entity", {}).items():
        for key, spec in entities.items():
            where = f"entity.{platform}.{key}"
            if not TRANSLATION_KEY.match(key):
                problems.append(f"{where}: not a translation key")
            problems += [
                f"{where}: unknown key {k!r}"
                for k in set(spec) - {"default", "range", "state", "state_attributes"}
            ]
            for state, icon in spec.get("state", {}).items():
                if not TRANSLATION_KEY.match(state):
                    problems.append(f"{where}.state.{state}: not a translation key")
                if icon == spec.get("default"):
                    problems.append(f"{where}.state.{state}: the default icon again")
    assert problems == []


# --- HACS -------------------------------------------------------------------------------

# HACS's hacsjson validator (HACS_MANIFEST_JSON_SCHEMA): name is required, no other key.
HACS_JSON_KEYS: dict[str, type | tuple[type, ...]] = {
    "content_in_root": bool,
    "country": (str, list),
    "filename": str,
    "hacs": str,
    "hide_default_branch": bool,
    "homeassistant": str,
    "name": str,
    "persistent_directory": str,
    "render_readme": bool,
    "zip_release": bool,
}
# The brand images Home Assistant (2026.3 and later) serves from an integration's brand/.
BRAND_IMAGES = frozenset(
    f"{dark}{kind}{density}.png"
    for dark in ("", "dark_")
    for kind in ("icon", "logo")
    for density in ("", "@2x")
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_hacs_json_passes_hacs_schema() -> None:
    """HACS's hacsjson validator; `homeassistant` (the oldest version HACS offers the
    integration to) is one the tests run on or older, and the one the README names."""
    hacs = load_json(REPO_ROOT / "hacs.json")
    assert set(hacs) <= set(HACS_JSON_KEYS), set(hacs) - set(HACS_JSON_KEYS)
    assert isinstance(hacs["name"], str)
    assert hacs["name"]
    wrong_types = [key for key, value in hacs.items() if not isinstance(value, HACS_JSON_KEYS[key])]
    assert wrong_types == []
    assert not hacs.get("zip_release") or "filename" in hacs
    minimum = AwesomeVersion(hacs["homeassistant"])
    assert minimum.strategy is AwesomeVersionStrategy.CALVER
    assert minimum <= AwesomeVersion(ha_const.__version__)
    year, month = hacs["homeassistant"].split(".")[:2]
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{year}.{month} or newer" in readme


def test_the_repository_has_the_layout_hacs_installs_from() -> None:
    """HACS's integration repository (validate_repository: the one folder under
    custom_components/ it installs), its information validator (a README) and its brands
    validator (brand/icon.png in that folder, else the domain in Home Assistant's brands
    repository): only images Home Assistant serves, as PNG."""
    folders = [
        path.name
        for path in (REPO_ROOT / "custom_components").iterdir()
        if path.is_dir() and not path.name.startswith((".", "__"))
    ]
    assert folders == [DOMAIN]
    assert (REPO_ROOT / "README.md").is_file()
    brand = INTEGRATION / "brand"
    assert (brand / "icon.png").is_file()
    images = {path.name for path in brand.iterdir()}
    assert images <= BRAND_IMAGES, images - BRAND_IMAGES
    for name in images:
        assert (brand / name).read_bytes().startswith(PNG_SIGNATURE), name


# --- licence ----------------------------------------------------------------------------

# SHA-256 of the Apache License 2.0 as the Apache Software Foundation publishes it
# (apache.org/licenses/LICENSE-2.0.txt), the text GitHub's licence detection matches.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_licence_is_the_apache_license_pyproject_declares() -> None:
    """HACS's license validator reads GitHub's detection of a licence file at the root
    (pyproject's `license` does not count): the standard text, after its copyright line."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "Apache-2.0"
    first_line, text = (REPO_ROOT / "LICENSE").read_bytes().split(b"\n", 1)
    assert first_line.startswith(b"Copyright ")
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256
