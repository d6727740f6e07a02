"""`python -m bench`'s options stand for the BENCH_* settings they name; without any, the full run."""

from __future__ import annotations

from bench import cli
from bench.settings import SECTIONS, Settings


def test_options_become_the_settings_they_name() -> None:
    args = cli.parser().parse_args(["--quick", "--sections", "hops,memory", "--no-profile", "--pg-fsync", "off"])
    env = cli.environment(args)
    assert env == {"BENCH_QUICK": "1", "BENCH_SECTIONS": "hops,memory", "BENCH_PROFILE": "0", "BENCH_PG_FSYNC": "off"}
    settings = Settings.from_env({"BENCH_LEVELS": "2,8", **env})
    assert settings.quick and settings.levels == [2, 8] and settings.sections == ["hops", "memory"]
    assert not settings.profile and not settings.pg_fsync


def test_no_options_is_the_full_run() -> None:
    assert cli.environment(cli.parser().parse_args([])) == {}
    settings = Settings.from_env({})
    assert not settings.quick and settings.levels == [1, 2, 4, 8, 16, 32, 64] and settings.workers == [1, 2]
    assert settings.sections == list(SECTIONS) and settings.profile and settings.pg_fsync
