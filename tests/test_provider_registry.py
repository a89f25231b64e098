"""Tests of the registry that picks an adapter per platform and mode."""

from __future__ import annotations

import pytest

from postfuze_imports.errors import ProviderPermanentError
from postfuze_imports.providers import KNOWN_PLATFORMS, ProviderRegistry
from postfuze_imports.providers.bluesky import BlueskyProvider
from postfuze_imports.providers.simulator import SimulatorProvider
from postfuze_imports.settings import Settings

SETTINGS = Settings(
    database_url="postgresql://unused",
    redis_url="redis://unused",
    secret_key="k" * 32,
)


@pytest.mark.parametrize("platform", sorted(KNOWN_PLATFORMS))
async def test_test_mode_uses_simulator(platform: str) -> None:
    registry = ProviderRegistry(SETTINGS)
    assert isinstance(registry.get(platform, livemode=False), SimulatorProvider)
    await registry.aclose()


async def test_live_bluesky_uses_adapter() -> None:
    registry = ProviderRegistry(SETTINGS)
    provider = registry.get("bluesky", livemode=True)
    assert isinstance(provider, BlueskyProvider)
    assert registry.get_provider("bluesky", livemode=True) is provider
    session = registry.http_session
    await registry.aclose()
    assert session.closed


@pytest.mark.parametrize("platform", sorted(KNOWN_PLATFORMS - {"bluesky"}))
async def test_live_other_platforms_not_supported(platform: str) -> None:
    registry = ProviderRegistry(SETTINGS)
    with pytest.raises(
        ProviderPermanentError, match=f"imports from {platform} are not supported yet in live mode"
    ):
        registry.get(platform, livemode=True)
    await registry.aclose()


@pytest.mark.parametrize("livemode", [True, False])
async def test_unknown_platform_rejected(livemode: bool) -> None:
    registry = ProviderRegistry(SETTINGS)
    with pytest.raises(ProviderPermanentError, match="unknown platform 'myspace'"):
        registry.get("myspace", livemode=livemode)
    await registry.aclose()


async def test_passed_session_stays_open() -> None:
    outer = ProviderRegistry(SETTINGS)
    registry = ProviderRegistry(SETTINGS, session=outer.http_session)
    registry.get("bluesky", livemode=True)
    await registry.aclose()
    assert not outer.http_session.closed
    await outer.aclose()
    assert registry.http_session.closed
