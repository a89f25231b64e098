"""Application state shared by the handlers, as typed aiohttp AppKeys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from arq.connections import ArqRedis

from postfuze_imports.crypto import Secrets
from postfuze_imports.db import Pool
from postfuze_imports.imports.jobs import FinishHook
from postfuze_imports.records import ApiKey
from postfuze_imports.settings import Settings

# Opens a Bluesky session: (client, api_base_url, identifier, app_password) -> credentials.
BlueskyConnector = Callable[[aiohttp.ClientSession, str, str, str], Awaitable[dict[str, Any]]]


@dataclass
class Services:
    """Shared clients of the handlers, created at startup and closed at cleanup."""

    settings: Settings
    secrets: Secrets
    pool: Pool
    redis: ArqRedis | None
    http: aiohttp.ClientSession
    connect_bluesky: BlueskyConnector


SERVICES = web.AppKey("services", Services)
# Typed request keys: aiohttp 3.14 warns (NotAppKeyWarning) about plain string keys.
API_KEY = web.RequestKey("postfuze_api_key", ApiKey)
REQUEST_ID = web.RequestKey("postfuze_request_id", str)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def api_key(request: web.Request) -> ApiKey:
    return request[API_KEY]


# A Callable alias is not a class, so the key is typed by annotation.
FINISH_HOOK: web.AppKey[FinishHook] = web.AppKey("finish_hook")
