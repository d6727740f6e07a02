from pydantic import Field

from lexora_runtime.settings import DatabaseSettings


class UsageSettings(DatabaseSettings):
    # Usage events recorded per transaction, at most (a batch is whatever is ready, up to this).
    record_batch_size: int = Field(default=256, ge=1, le=1000)
