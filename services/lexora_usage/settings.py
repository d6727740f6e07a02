from lexora_runtime.settings import DatabaseSettings


class UsageSettings(DatabaseSettings):
    pass
