"""The `postfuze-imports` command: migrate, create-org, create-key, web, worker, demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

import asyncpg

from postfuze_imports import logs
from postfuze_imports.admin import create_key, create_org
from postfuze_imports.api.auth import ALL_SCOPES, SCOPES
from postfuze_imports.errors import ConfigurationError
from postfuze_imports.migrations import migrate
from postfuze_imports.settings import Settings


def _parse_scopes(values: list[str] | None) -> list[str]:
    if not values:
        return [ALL_SCOPES]
    scopes: list[str] = []
    for value in values:
        for scope in value.replace(",", " ").split():
            if scope not in (*SCOPES, ALL_SCOPES):
                raise SystemExit(
                    f"unknown scope {scope!r}; choose from {', '.join((*SCOPES, ALL_SCOPES))}"
                )
            if scope not in scopes:
                scopes.append(scope)
    return scopes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postfuze-imports",
        description="PostFuze Imports API: the web server, the worker and operator commands.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply database migrations (safe to run concurrently)")
    org = commands.add_parser("create-org", help="create an organization; prints its id last")
    org.add_argument("name", help="organization name")
    key = commands.add_parser("create-key", help="create an API key; prints the key last")
    key.add_argument(
        "--org",
        required=True,
        type=uuid.UUID,
        metavar="ORG_ID",
        help="organization id from create-org",
    )
    key.add_argument(
        "--test",
        action="store_true",
        help="create a test-mode key (sk_test_…): simulated networks only",
    )
    key.add_argument(
        "--scopes",
        nargs="+",
        metavar="SCOPE",
        help=f"write scopes: {', '.join(SCOPES)} or * (default: *)",
    )
    web = commands.add_parser("web", help="serve the HTTP API")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    commands.add_parser("worker", help="run import jobs and webhook deliveries")
    demo = commands.add_parser("demo", help="run the whole flow against a local Bluesky PDS")
    demo.add_argument("--posts", type=int, default=300, help="posts to write to the demo account")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigurationError as error:
        print(f"postfuze-imports: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    try:
        _run(args, settings)
    except (OSError, asyncpg.PostgresError) as error:
        # Unreachable servers and ports in use are operator errors, not bugs.
        print(f"postfuze-imports {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _run(args: argparse.Namespace, settings: Settings) -> None:

    if args.command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else ""))
    elif args.command == "create-org":
        print(asyncio.run(create_org(settings.database_url, args.name)))
    elif args.command == "create-key":
        scopes = _parse_scopes(args.scopes)
        try:
            key = asyncio.run(
                create_key(settings.database_url, args.org, livemode=not args.test, scopes=scopes)
            )
        except ConfigurationError as error:
            print(f"postfuze-imports: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"scopes: {' '.join(scopes)}", file=sys.stderr)
        print(key)
    elif args.command == "web":
        from aiohttp import web

        from postfuze_imports.api.app import create_app

        web.run_app(
            create_app(settings),
            host=args.host,
            port=args.port,
            access_log=None,
            print=lambda text: print(text, file=sys.stderr),
        )
    elif args.command == "worker":
        from postfuze_imports.worker import run

        run(settings)
    elif args.command == "demo":
        from postfuze_imports.demo import run_demo

        raise SystemExit(asyncio.run(run_demo(settings, posts=args.posts)))
