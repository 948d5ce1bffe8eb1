"""The files the demo writes for Home Assistant, read by Home Assistant's own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.http.config import (
    ActiveConfigType,
    async_get_and_load_store,
    async_load_config,
)
from homeassistant.core import HomeAssistant
from homeassistant.util.yaml import parse_yaml

from demo.errors import DemoError
from demo.hass import (
    INTEGRATIONS,
    Owner,
    configuration_yaml,
    hass_command,
    http_storage,
    prepare_config_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_configuration_lists_only_what_works_here() -> None:
    """No default_config (fails here) and no http: (the storage holds it)."""
    config = parse_yaml(configuration_yaml(8124))
    assert isinstance(config, dict)
    assert "default_config" not in config
    assert "http" not in config
    for name in INTEGRATIONS:
        assert name in config
    assert config["homeassistant"]["internal_url"] == "http://127.0.0.1:8124"


async def test_http_storage_is_the_confirmed_config(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """Home Assistant starts on 127.0.0.1:<port> from it, with nothing pending to revert."""
    hass_storage["http"] = http_storage(8124)
    conf = await async_load_config(hass, {})
    assert conf["server_host"] == ["127.0.0.1"]
    assert conf["server_port"] == 8124
    store = await async_get_and_load_store(hass)
    assert store.active_config_type is ActiveConfigType.STABLE
    assert store.revert_deadline is None
    assert store.pending is None


def test_config_dir_links_the_integration(tmp_path: Path) -> None:
    """configuration.yaml, .storage/http and a link to the repository's integration; a
    second run keeps the link, a foreign folder in its place is refused."""
    prepare_config_dir(tmp_path, 8124, REPO_ROOT)
    prepare_config_dir(tmp_path, 8125, REPO_ROOT)
    link = tmp_path / "custom_components" / "esp_ota"
    assert link.is_symlink()
    assert (link / "manifest.json").exists()
    assert '"server_port": 8125' in (tmp_path / ".storage" / "http").read_text()

    other = tmp_path / "other"
    (other / "custom_components" / "esp_ota").mkdir(parents=True)
    with pytest.raises(DemoError, match="not a link"):
        prepare_config_dir(other, 8124, REPO_ROOT)


def test_owner_is_kept_private(tmp_path: Path) -> None:
    """The owner's password survives a restart and is readable by its owner only."""
    path = tmp_path / "owner.json"
    owner = Owner.load_or_create(path)
    assert Owner.load_or_create(path) == owner
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(owner.password) >= 16


def test_hass_command() -> None:
    """`hass -c DIR`, with --skip-pip only when nothing is missing."""
    assert hass_command(Path("/x"), skip_pip=True)[-3:] == ["-c", "/x", "--skip-pip"]
    assert hass_command(Path("/x"), skip_pip=False)[-2:] == ["-c", "/x"]
    # Another venv's Home Assistant (script/smoke-ha-release) runs its own `hass`.
    other = Path("/v/bin/hass")
    assert hass_command(Path("/x"), skip_pip=True, hass=other) == [
        "/v/bin/hass",
        "-c",
        "/x",
        "--skip-pip",
    ]
