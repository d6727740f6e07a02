from __future__ import annotations

from pydantic import SecretStr, model_validator

from lexora_contracts.accounts_api import SignupMode
from lexora_runtime.settings import DatabaseSettings

DEV_PEPPER = "lexora-development-pepper-not-for-production"


class AuthSettings(DatabaseSettings):
    environment: str = "development"
    key_prefix: str = "sk-lexora-"
    # Secret mixed into every key hash: a leaked table of hashes cannot be checked against guesses.
    key_pepper: SecretStr = SecretStr(DEV_PEPPER)
    # Who may create a console account: anyone (open), holders of an admin's invitation link
    # (invite), or nobody (closed: admins create users with `lexora admin create-user`).
    signup_mode: SignupMode = "open"

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> AuthSettings:
        if self.environment != "development" and self.key_pepper.get_secret_value() == DEV_PEPPER:
            raise ValueError("LEXORA_KEY_PEPPER must be set outside development")
        return self
