"""`lexora`: `lexora migrate` and `lexora admin ...` (production), `lexora dev` (the local platform)."""

from __future__ import annotations

import argparse
import os
import sys

from lexora_cli import admin
from lexora_cli.local import read_stack_file, state_dir_from_env


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lexora", description="Lexora: self-hosted inference API platform")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the whole platform locally (NATS, Postgres, Triton, services)")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or os.environ.get("LEXORA_DATABASE_URL"),
        help="the Postgres database (postgresql+asyncpg://...); default $DATABASE_URL, $LEXORA_DATABASE_URL, "
        "else the local stack's embedded database",
    )
    admin.add_parsers(commands)
    return root


def run_migrate(args: argparse.Namespace) -> int:
    from lexora_db.engine import migrate

    state_dir = state_dir_from_env()
    url = args.database_url or read_stack_file(state_dir).get("database_url")  # a running `lexora dev`'s
    if url:
        migrate(url)
        return 0
    # No server named: the local stack's embedded database, started for the migration.
    try:
        from lexora_dev.stack import local_database

        with local_database(state_dir):
            pass
    except (ImportError, FileNotFoundError) as exc:
        print(f"lexora migrate: no database: pass --database-url or set DATABASE_URL ({exc})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "dev":
        from lexora_dev.cli import run_dev  # the local platform only: nothing of it in production

        return run_dev(args)
    if args.command == "migrate":
        return run_migrate(args)
    return admin.run_admin(args)


if __name__ == "__main__":
    sys.exit(main())
