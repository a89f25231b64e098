"""Network adapters and the registry that picks one for an account.

Test-mode accounts of every platform import from `SimulatorProvider`. Live accounts
import from the network's real API; Bluesky is the only network with a live adapter so
far.
"""

from __future__ import annotations

from datetime import datetime

import aiohttp

from postfuze_imports import __version__
from postfuze_imports.errors import ProviderPermanentError
from postfuze_imports.outbound import create_client_session
from postfuze_imports.providers.base import PLATFORMS, Provider
from postfuze_imports.providers.bluesky import BlueskyProvider
from postfuze_imports.providers.simulator import SimulatorProvider
from postfuze_imports.settings import Settings

# Platforms accounts can be connected for.
KNOWN_PLATFORMS = frozenset(PLATFORMS)
LIVE_PLATFORMS = frozenset({"bluesky"})
USER_AGENT = f"postfuze-imports/{__version__}"


class ProviderRegistry:
    """Hands out adapters; create one per worker process and `aclose` it at shutdown.

    The guarded HTTP session all live adapters share is created on first use, so the
    registry must be used inside a running event loop. A session passed in is used
    as is and left open by `aclose`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        simulator_anchor: datetime | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._owns_session = session is None
        self._simulator = SimulatorProvider(anchor=simulator_anchor)
        self._bluesky: BlueskyProvider | None = None

    @property
    def http_session(self) -> aiohttp.ClientSession:
        """The guarded session for requests to networks, created on first use."""
        if self._session is None:
            timeout = self._settings.network_timeout_seconds
            self._session = create_client_session(
                allow_private=self._settings.allow_private_networks,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def get(self, platform: str, *, livemode: bool) -> Provider:
        """Return the adapter for an account of `platform` in live or test mode.

        Raises `ProviderPermanentError` for an unknown platform and for live accounts of
        platforms without a live adapter.
        """
        if platform not in KNOWN_PLATFORMS:
            raise ProviderPermanentError(
                f"unknown platform {platform!r}; expected one of "
                + ", ".join(sorted(KNOWN_PLATFORMS))
            )
        if not livemode:
            return self._simulator
        if platform == "bluesky":
            return self.bluesky()
        raise ProviderPermanentError(f"imports from {platform} are not supported yet in live mode")

    get_provider = get

    def bluesky(self) -> BlueskyProvider:
        """Return the live Bluesky adapter, which also opens sessions for the API."""
        if self._bluesky is None:
            self._bluesky = BlueskyProvider(
                session=self.http_session,
                default_pds=self._settings.bluesky_default_pds,
                allow_private=self._settings.allow_private_networks,
                timeout=self._settings.network_timeout_seconds,
            )
        return self._bluesky

    async def aclose(self) -> None:
        """Close the HTTP session if the registry created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None
            self._bluesky = None


__all__ = ["LIVE_PLATFORMS", "ProviderRegistry"]
