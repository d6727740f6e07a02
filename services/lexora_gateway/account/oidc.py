"""Sign-in through an OpenID Connect provider (authorization code flow with PKCE, Authlib's client).

`GET /v1/auth/oidc/start` sends the browser to the provider with a fresh state, nonce and PKCE
verifier, kept in a short-lived cookie signed with the console secret; `GET /v1/auth/oidc/callback`
checks the state, trades the code for tokens, verifies the ID token (signature against the
provider's JWKS, issuer, audience, expiry, nonce) and asks auth for a session for its email.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from lexora_contracts.accounts_api import ExternalSignInRequest
from lexora_contracts.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from lexora_gateway.account.console_api import signed_in_response
from lexora_gateway.settings import GatewaySettings
from lexora_gateway.state import StateDep

router = APIRouter()
STATE_COOKIE = "lexora_oidc"
STATE_TTL_S = 600
PROVIDER_TIMEOUT_S = 10.0


def sign_state(secret: str, state: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()
    mac = hmac.new(secret.encode(), ("oidc:" + body).encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def read_state(secret: str, value: str | None, now: float) -> dict[str, Any] | None:
    """The state the start route left, if the cookie is ours and not older than STATE_TTL_S."""
    if not value:
        return None
    body, _, mac = value.rpartition(".")
    expected = hmac.new(secret.encode(), ("oidc:" + body).encode(), hashlib.sha256).hexdigest()
    if not body or not hmac.compare_digest(mac, expected):
        return None
    try:
        state = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    return state if isinstance(state, dict) and now - state.get("at", 0) <= STATE_TTL_S else None


def safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _configured(settings: GatewaySettings) -> tuple[str, str, str]:
    if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret):
        raise NotFound("OpenID Connect sign-in is not set up on this installation")
    secret = settings.oidc_client_secret.get_secret_value()
    return settings.oidc_issuer.rstrip("/"), settings.oidc_client_id, secret


async def _discovery(issuer: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=PROVIDER_TIMEOUT_S) as http:
        response = await http.get(f"{issuer}/.well-known/openid-configuration")
    if response.status_code != 200:
        raise Unauthorized("The sign-in provider could not be reached; try again later")
    return response.json()  # type: ignore[no-any-return]


def _redirect_url(request: Request, settings: GatewaySettings) -> str:
    return settings.oidc_redirect_url or str(request.url_for("oidc_callback"))


@router.get("/auth/oidc/start", include_in_schema=False)
async def oidc_start(request: Request, state: StateDep) -> Response:
    settings = state.settings
    issuer, client_id, client_secret = _configured(settings)
    provider = await _discovery(issuer)
    flow = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": secrets.token_urlsafe(48),
        "next": safe_next(request.query_params.get("next")),
        "at": time.time(),
    }
    async with AsyncOAuth2Client(
        client_id,
        client_secret,
        scope="openid email profile",
        redirect_uri=_redirect_url(request, settings),
        code_challenge_method="S256",
    ) as client:
        url, _ = client.create_authorization_url(
            provider["authorization_endpoint"], state=flow["state"], nonce=flow["nonce"], code_verifier=flow["verifier"]
        )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        sign_state(settings.console_secret.get_secret_value(), flow),
        max_age=STATE_TTL_S,
        httponly=True,
        secure=settings.console_cookie_secure,
        samesite="lax",  # sent on the provider's redirect back (a top-level GET)
        path="/",
    )
    return response


@router.get("/auth/oidc/callback", include_in_schema=False, name="oidc_callback")
async def oidc_callback(request: Request, state: StateDep) -> Response:
    settings = state.settings
    issuer, client_id, client_secret = _configured(settings)
    flow = read_state(settings.console_secret.get_secret_value(), request.cookies.get(STATE_COOKIE), time.time())
    if flow is None or not hmac.compare_digest(flow["state"], request.query_params.get("state", "")):
        raise Forbidden("This sign-in has expired or did not start here: sign in again")
    if request.query_params.get("error"):
        raise Unauthorized(f"The sign-in provider refused: {request.query_params.get('error')}")
    code = request.query_params.get("code")
    if not code:
        raise InvalidRequest("The provider sent no authorization code", param="code")
    provider = await _discovery(issuer)
    async with AsyncOAuth2Client(
        client_id, client_secret, redirect_uri=_redirect_url(request, settings), timeout=PROVIDER_TIMEOUT_S
    ) as client:
        try:
            token = await client.fetch_token(
                provider["token_endpoint"], code=code, code_verifier=flow["verifier"], grant_type="authorization_code"
            )
        except Exception as exc:  # authlib raises its OAuthError, httpx its own: either way a refusal
            raise Unauthorized("The sign-in provider did not accept the sign-in; try again") from exc
        jwks = (await client.get(provider["jwks_uri"])).json()
    claims = verified_claims(token.get("id_token"), jwks, provider.get("issuer", issuer), client_id, flow["nonce"])
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is False:
        raise Forbidden("The sign-in provider gave no verified email address")
    reply = await state.auth.sign_in_external(ExternalSignInRequest(email=email, issuer=issuer, subject=claims["sub"]))
    response = signed_in_response(state, reply, redirect_to=flow["next"])
    response.delete_cookie(STATE_COOKIE, path="/")
    return response


def verified_claims(id_token: Any, jwks: dict[str, Any], issuer: str, client_id: str, nonce: str) -> dict[str, Any]:
    if not isinstance(id_token, str):
        raise Unauthorized("The sign-in provider sent no ID token")
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(jwks))
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise Unauthorized("The sign-in provider's ID token did not verify") from exc
    return token.claims
