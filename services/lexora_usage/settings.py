from pydantic import Field

from lexora_runtime.settings import DatabaseSettings


class UsageSettings(DatabaseSettings):
    # Usage events recorded per transaction, at most (a batch is whatever is ready, up to this).
    record_batch_size: int = Field(default=256, ge=1, le=1000)
    # How long a batch that is not full waits after its first event for more (seconds): fewer,
    # larger transactions at moderate load, for at most this much later recording.
    record_gather_s: float = Field(default=0.1, ge=0, le=1)
