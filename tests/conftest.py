"""Fixtures shared by every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fuzzing profiles: "ci" (the default) keeps the suite fast; "long" is for a run by hand,
# HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/espota -k fuzz (minutes).
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis 6.170 warns about its own thread-local PRNG at its first use in a process
    (its `register_random` of `_hypothesis_global_random`): nothing of ours to act on."""
    config.addinivalue_line(
        "filterwarnings",
        "ignore:It looks like `register_random`:hypothesis.errors.HypothesisWarning",
    )


REPO_ROOT = Path(__file__).resolve().parents[1]
# Real ESP-IDF images live beside the repository in ../shared (never committed here).
SHARED_ESP_IMAGES = REPO_ROOT.parent / "shared" / "testdata" / "esp-images"


@pytest.fixture
def esp_images_dir() -> Path:
    """The folder of real ESP-IDF images; skips the test when it is absent."""
    if not SHARED_ESP_IMAGES.is_dir():
        pytest.skip(
            f"real ESP-IDF test images not found at {SHARED_ESP_IMAGES} "
            "(they come from ../shared/testdata, which only the project's own machines have)"
        )
    return SHARED_ESP_IMAGES


@pytest.fixture
def hass_config_dir(hass_tmp_config_dir: str) -> str:
    """Each test's Home Assistant gets its own config folder (the plugin's way): the
    firmware cache, server certificate and stored jobs of one test never reach another,
    nor the installed plugin's shared testing_config."""
    return hass_tmp_config_dir
