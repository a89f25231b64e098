"""Shell interface of the private stack, used by the Makefile.

`python -m postfuze_imports.devstack env` starts what the environment lacks and prints
`export` lines for the shell to evaluate; `stop [postgres] [redis]` stops the servers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from postfuze_imports.devstack import stack


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m postfuze_imports.devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "env", help="start the servers the environment lacks and print export lines"
    )
    stop = commands.add_parser("stop", help="stop the private servers")
    stop.add_argument(
        "servers", nargs="*", metavar="SERVER", help="postgres, redis (default: both)"
    )
    args = parser.parse_args()
    unknown = set(getattr(args, "servers", [])) - {"postgres", "redis"}
    if unknown:
        parser.error(f"unknown server {sorted(unknown)[0]!r}; choose postgres or redis")
    stack_dir = stack.find_stack_dir()

    if args.command == "env":
        exports: dict[str, str] = {}
        started: list[str] = []
        if not os.environ.get("DATABASE_URL"):
            exports["DATABASE_URL"], was_started = stack.ensure_postgres(stack_dir)
            if was_started:
                started.append("postgres")
        if not os.environ.get("REDIS_URL"):
            exports["REDIS_URL"], was_started = stack.ensure_redis(stack_dir)
            if was_started:
                started.append("redis")
        if not os.environ.get("POSTFUZE_SECRET_KEY"):
            exports["POSTFUZE_SECRET_KEY"] = stack.ensure_secret_key(stack_dir)
        exports["POSTFUZE_STACK_STARTED"] = " ".join(started)
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")
        return

    servers = args.servers or ["postgres", "redis"]
    if "postgres" in servers and stack.stop_postgres(stack_dir):
        print("Stopped the private PostgreSQL server", file=sys.stderr)
    if "redis" in servers and stack.stop_redis(stack_dir):
        print("Stopped the private Redis server", file=sys.stderr)


if __name__ == "__main__":
    main()
