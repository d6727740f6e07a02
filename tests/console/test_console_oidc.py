"""OpenID Connect sign-in on a real provider (oidc-provider-mock, an Authlib-based OpenID provider
run in-process): the console's button goes to the provider, the provider signs the user in, and
the gateway verifies the ID token and opens a session for its email."""

from __future__ import annotations

import uuid

from oidc_provider_mock import run_server_in_thread
from playwright.sync_api import Browser, expect

from support.stack import RunningStack


def test_a_user_signs_in_through_the_provider(console_stack: RunningStack, browser: Browser) -> None:
    with run_server_in_thread(port=0) as provider:
        issuer = f"http://localhost:{provider.server_port}"
        # Started from this thread (no asyncio in it): a service dies with the thread that started it.
        gateway = console_stack.start_gateway(
            LEXORA_OIDC_ISSUER=issuer,
            LEXORA_OIDC_CLIENT_ID="lexora-console",
            LEXORA_OIDC_CLIENT_SECRET="console-client-secret",
            LEXORA_OIDC_NAME="Example SSO",
        )
        root = gateway.removesuffix("/v1")
        email = f"sso-{uuid.uuid4().hex[:8]}@example.test"
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{root}/signin")
        page.get_by_role("link", name="Sign in with Example SSO").click()
        expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
        page.get_by_placeholder("sub").fill(email)
        page.get_by_role("button", name="Authorize").click()
        expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
        expect(page.get_by_text(email)).to_be_visible()
        me = page.request.get(f"{root}/v1/me").json()
        assert me["user"]["email"] == email and me["account"]["plan"] == "free"

        # A forged callback (no state cookie from a start) opens no session.
        other = browser.new_context()
        forged = other.new_page().request.get(f"{root}/v1/auth/oidc/callback?code=x&state=y")
        assert forged.status == 403
        other.close()
        context.close()
