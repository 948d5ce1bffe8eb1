"""The Python packages the demo's Home Assistant needs beyond `homeassistant` itself.

Read from the manifests of the Home Assistant this interpreter imports, so they are that
release's own pins. Standard library only: script/smoke-ha-release runs this file with
another venv's Python (`python demo/ha_requirements.py` prints one requirement a line).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Final

# Integrations Home Assistant sets up at every start (bootstrap's DEFAULT_INTEGRATIONS,
# which include every base entity platform, and what they depend on) or that the demo's
# frontend loads, whose packages `homeassistant` does not bring. Without them the start-up
# fails visibly: "Invalid config: radio_frequency, infrared could not be set up" is the
# first notification, and the frontend stays at "Loading..." without its own package.
DEMO_INTEGRATIONS: Final = (
    "frontend",  # the frontend's files
    "conversation",  # the services list the frontend loads imports these four
    "tts",
    "assist_pipeline",
    "camera",
    "ffmpeg",  # tts depends on it
    "infrared",  # base entity platforms, set up at every start
    "radio_frequency",
    "hassio",  # analytics (onboarding needs it) imports its client from 2026.11 on
)
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def homeassistant_dir() -> Path:
    """The `homeassistant` package this interpreter imports."""
    spec = importlib.util.find_spec("homeassistant")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("homeassistant is not installed in this venv")
    return Path(spec.origin).parent


def requirements(ha_dir: Path | None = None) -> list[str]:
    """The pinned requirements of DEMO_INTEGRATIONS, in order, without duplicates."""
    components = (ha_dir or homeassistant_dir()) / "components"
    found: list[str] = []
    for domain in DEMO_INTEGRATIONS:
        manifest = json.loads((components / domain / "manifest.json").read_text())
        found += [r for r in manifest.get("requirements", []) if r not in found]
    return found


def missing(required: list[str] | None = None) -> list[str]:
    """The requirements this venv does not satisfy (absent, or another version when the
    requirement pins one with `==`)."""
    result = []
    for requirement in required if required is not None else requirements():
        name_match = _NAME.match(requirement)
        if name_match is None:
            continue
        try:
            installed = importlib.metadata.version(name_match.group())
        except importlib.metadata.PackageNotFoundError:
            result.append(requirement)
            continue
        _, _, pinned = requirement.partition("==")
        if pinned and installed != pinned:
            result.append(requirement)
    return result


if __name__ == "__main__":
    print("\n".join(missing() if "--missing" in sys.argv[1:] else requirements()))
