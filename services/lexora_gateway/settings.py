from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from lexora_contracts.plans import DEFAULT_PLANS, PlanLimits
from lexora_gateway.chat import image_inputs
from lexora_runtime.settings import ServiceSettings

DEV_CONSOLE_SECRET = "lexora-development-console-secret-not-for-production"


class GatewaySettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # A job running longer than this is stopped and answered 504 (not charged).
    job_timeout_s: float = 120.0
    # Verified keys are cached this long (a key in use is verified again in the background past half
    # of it); revocations are pushed over NATS and drop entries at once.
    auth_cache_ttl_s: float = 60.0
    # How long reservations outlive their job's deadline before billing's sweeper releases them.
    reservation_grace_s: float = 60.0
    # Credit leases (docs/billing.md "Credit leases"): how long a lease billing grants this replica
    # covers new requests before it is returned and another acquired. Billing expires it after this
    # plus job_timeout_s plus reservation_grace_s (the last request it covered has settled by then).
    lease_use_s: float = Field(default=30.0, gt=0)
    # A lease that covered no request for this long is returned (a quiet account's credit is back).
    lease_idle_s: float = Field(default=2.0, gt=0)
    # Legacy /v1/completions: the most prompts one request may list (each is its own job and charge).
    max_prompts_per_request: int = Field(default=16, ge=1)
    # Limits per plan, e.g. LEXORA_PLANS='{"free": {"requests_per_minute": 20, ...}, ...}'.
    plans: dict[str, PlanLimits] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    # Image inputs (vision models; docs/architecture.md "Image inputs"): the most one image may
    # decode to (20 MiB), and how many images one request may carry.
    image_max_bytes: int = Field(default=image_inputs.DEFAULT_MAX_BYTES, gt=0)
    images_per_request: int = Field(default=image_inputs.DEFAULT_MAX_IMAGES, ge=1)
    # Image URLs (https, public addresses only): the connect limit and the whole fetch's limit.
    image_fetch_connect_timeout_s: float = Field(default=5.0, gt=0)
    image_fetch_timeout_s: float = Field(default=20.0, gt=0)
    # Names clients ask for mapped to served model ids, as fnmatch patterns tried in order (the first
    # that matches wins; a model's id and its declared aliases win over every pattern), e.g.
    # LEXORA_MODEL_ALIASES='{"claude-*-haiku-*": "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt-5*": "..."}'
    # (lexora_gateway.admission.model_names).
    model_aliases: dict[str, str] = Field(default_factory=dict)
    # The largest request body taken (413 above it, before the key is checked or credit held).
    # Unset: NATS's max_payload (a job larger than one NATS message could not be sent anyway), or
    # one base64 image of image_max_bytes plus 1 MiB if that is more, so an oversized image still
    # gets the error that names it.
    max_request_bytes: int | None = Field(default=None, gt=0)
    # Slow and oversized clients (docs/architecture.md, "The edge"): the request line and headers may
    # take at most this many bytes (431 above it) and must arrive within header_timeout_s of the
    # request's first byte (408 and the connection closed, so a slowloris client cannot hold it); a
    # body the route is reading must not stall for longer than body_timeout_s between chunks (408).
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    header_timeout_s: float = Field(default=15.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    # The web console (docs/console.md): the secret its CSRF tokens are signed with, and whether its
    # cookies are Secure (browsers send Secure cookies to http://localhost and 127.0.0.1 too).
    environment: str = "development"
    console_secret: SecretStr = SecretStr(DEV_CONSOLE_SECRET)
    console_cookie_secure: bool = True
    # OpenID Connect sign-in (optional; docs/console.md): the provider's issuer URL (its discovery
    # document is <issuer>/.well-known/openid-configuration), this client's id and secret, the name
    # the sign-in page shows, and the callback URL when the gateway sits behind a proxy
    # (default: <this origin>/v1/auth/oidc/callback; register it with the provider).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_name: str = "single sign-on"
    oidc_redirect_url: str | None = None

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> GatewaySettings:
        if self.environment != "development" and self.console_secret.get_secret_value() == DEV_CONSOLE_SECRET:
            raise ValueError("LEXORA_CONSOLE_SECRET must be set outside development")
        return self
