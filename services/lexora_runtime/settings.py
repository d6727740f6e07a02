"""Settings common to every service. Each service subclasses this; settings are built in main()."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEXORA_", extra="ignore")

    nats_url: str = DEFAULT_NATS_URL
    log_level: str = "INFO"
    # Port of the Prometheus /metrics endpoint; 0 disables it (the gateway serves it on its own port).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"


class DatabaseSettings(ServiceSettings):
    # LEXORA_DATABASE_URL: the Postgres database (asyncpg driver). `lexora dev` and the chart always
    # set it; the default names a server on this machine's standard port.
    database_url: str = "postgresql+asyncpg://lexora@127.0.0.1:5432/lexora"
