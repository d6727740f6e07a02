"""Settings common to every service. Each service subclasses this; settings are built in main()."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lexora_runtime.bus import NatsAccess

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEXORA_", extra="ignore")

    nats_url: str = DEFAULT_NATS_URL
    # This process's NATS user and password (its principal in lexora_contracts.nats_permissions;
    # the chart and `lexora dev` set them), and the CA of a NATS server that speaks TLS.
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_ca_file: str | None = None
    log_level: str = "INFO"
    # Port of the Prometheus /metrics endpoint; 0 disables it (the gateway serves it on its own port).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    @property
    def nats_access(self) -> NatsAccess:
        password = self.nats_password.get_secret_value() if self.nats_password else None
        return NatsAccess(self.nats_user, password, self.nats_ca_file)


class DatabaseSettings(ServiceSettings):
    # LEXORA_DATABASE_URL: the Postgres database (asyncpg driver). `lexora dev` and the chart always
    # set it; the default names a server on this machine's standard port.
    database_url: str = "postgresql+asyncpg://lexora@127.0.0.1:5432/lexora"
