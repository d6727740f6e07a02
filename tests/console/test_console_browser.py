"""The console in a real browser (chromium) against the whole platform: a new user signs up,
creates a key, calls the API with it and sees the request in Usage with its cost; a signed Stripe
event tops the account up; an admin grants credit and changes the plan; a revoked key gets 401."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from lexora_billing.topups import topup_for
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.browser import off_the_loop
from support.stack import RunningStack
from support.stripe_events import STRIPE_TEST_ENV, checkout_session_event, signature_header

PASSWORD = "correct horse battery staple"
PHONE = {"width": 390, "height": 844}


def root_of(stack: RunningStack) -> str:
    return stack.base_url.removesuffix("/v1")


def new_email(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.test"


def sign_up(context: BrowserContext, root: str, email: str) -> Page:
    page = context.new_page()
    page.goto(f"{root}/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Timezone").fill("Europe/Paris")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    return page


def sign_in_with_keyboard(context: BrowserContext, root: str, email: str) -> Page:
    page = context.new_page()
    page.goto(f"{root}/signin")
    page.get_by_label("Email").focus()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    return page


def account_id_of(page: Page, root: str) -> str:
    me = page.request.get(f"{root}/v1/me")
    assert me.status == 200, me.text()
    return me.json()["account"]["id"]


def deliver_topup(stack: RunningStack, account_id: str, package: str) -> None:
    """A paid Checkout Session, as Stripe would deliver it to the webhook (signed)."""
    suffix = uuid.uuid4().hex
    payload = checkout_session_event(f"evt_test_{suffix}", f"cs_test_{suffix}", account_id, topup_for(package, None))
    signature = signature_header(payload, STRIPE_TEST_ENV["LEXORA_STRIPE_WEBHOOK_SECRET"])
    response = httpx.post(
        f"{stack.base_url}/billing/stripe/webhook",
        content=payload.encode(),
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def fits_the_screen(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")


def test_a_new_user_works_from_the_console(
    console_stack: RunningStack, browser: Browser, screenshots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = root_of(console_stack)
    user_email = new_email("user")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = sign_up(context, root, user_email)
    session = next(c for c in context.cookies() if c["name"] == "lexora_session")
    # Secure cookies are kept for http://127.0.0.1: browsers count loopback as a secure origin.
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)
    account_id = account_id_of(page, root)

    # Top-up through a signed Stripe event: the balance and the history show it.
    page.get_by_role("link", name="Credits", exact=True).click()
    expect(page.get_by_text("Balance: $0.00")).to_be_visible()
    deliver_topup(console_stack, account_id, "credits_2000")  # 2,000 credits = $20
    page.reload()
    expect(page.locator("#balance")).to_have_text("$20.00")
    expect(page.locator("#transactions")).to_contain_text("Top-up")
    expect(page.locator("#transactions")).to_contain_text("$20.00")
    expect(page.get_by_role("button", name="Buy credits")).to_be_visible()
    page.screenshot(path=str(screenshots / "credits.png"), full_page=True)

    # A key, shown once in a read-only field labeled "API key".
    page.get_by_role("link", name="Keys", exact=True).click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Spend limit in USD (optional)").fill("5")
    page.get_by_role("button", name="Create key").click()
    key_field = page.get_by_label("API key")
    expect(key_field).to_have_attribute("readonly", "")
    api_key = key_field.input_value()
    assert api_key.startswith("sk-lexora-")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    # The key itself is masked: the screenshot lands in docs/, and no key belongs in the repository.
    page.screenshot(path=str(screenshots / "keys.png"), full_page=True, mask=[key_field])
    page.goto(f"{root}/keys")  # shown once: a fresh page has no key in it
    assert api_key not in page.content()

    # The key works with the real OpenAI SDK, and the request shows in Usage with its cost.
    client = openai.OpenAI(base_url=console_stack.base_url, api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    cost = reply.usage.model_extra["cost"]
    assert cost > 0
    off_the_loop(console_stack.wait_for_usage_rows, account_id, 1)
    page.get_by_role("link", name="Usage", exact=True).click()
    recent = page.locator("#recent tbody tr").first
    expect(recent).to_contain_text(LOCAL_CHAT_MODEL)
    expect(recent).to_contain_text(f"{reply.usage.prompt_tokens} / {reply.usage.completion_tokens}")
    expect(recent.locator(".cost")).to_have_text(re.compile(r"^\$0\.0\d*[1-9]"))
    page.screenshot(path=str(screenshots / "usage.png"), full_page=True)
    for name, shot in (("Models", "models.png"), ("Playground", "playground.png"), ("Settings", "settings.png")):
        page.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
        page.screenshot(path=str(screenshots / shot), full_page=True)

    # The admin, signed in with the keyboard alone, grants credit and changes the plan.
    admin_email = new_email("admin")
    monkeypatch.setenv("LEXORA_USER_PASSWORD", PASSWORD)
    console_stack.admin_cli("create-user", "--email", admin_email, "--admin")
    admin_context = browser.new_context(viewport={"width": 1280, "height": 900})
    admin = sign_in_with_keyboard(admin_context, root, admin_email)
    admin.get_by_role("link", name="Admin", exact=True).click()
    admin.get_by_label("Search accounts").fill(user_email)
    admin.get_by_role("button", name="Search").click()
    row = admin.locator(f'tr[data-account="{account_id}"]')
    row.get_by_label("Amount in USD").fill("2.50")
    row.get_by_label("Reason").fill("welcome credit")
    row.get_by_role("button", name="Grant credit").click()
    expect(admin.get_by_role("status")).to_contain_text("Granted $2.50")
    row = admin.locator(f'tr[data-account="{account_id}"]')
    row.get_by_label("Plan").select_option("pro")
    row.get_by_role("button", name="Change plan").click()
    expect(admin.get_by_role("status")).to_contain_text("updated")
    expect(admin.locator("#deployments")).to_contain_text(LOCAL_CHAT_MODEL)
    admin.screenshot(path=str(screenshots / "admin.png"), full_page=True)

    off_the_loop(console_stack.settled_balance, account_id)
    page.get_by_role("link", name="Credits", exact=True).click()
    expect(page.locator("#transactions")).to_contain_text("welcome credit")
    expect(page.locator("#transactions")).to_contain_text("Charges (1 requests)")
    page.get_by_role("link", name="Settings", exact=True).click()
    expect(page.get_by_text("Plan: pro")).to_be_visible()
    # The plan reached the gateway at once (cached verifications dropped): /v1/key says pro.
    key_view = httpx.get(f"{console_stack.base_url}/key", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert key_view.json()["data"]["plan"] == "pro"

    # Revoked from the Keys page: the key gets 401 from then on.
    page.get_by_role("link", name="Keys", exact=True).click()
    page.get_by_role("button", name="Revoke laptop").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    deadline = time.monotonic() + 5
    while True:
        try:
            client.models.list()
            client.chat.completions.create(
                model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
        except openai.AuthenticationError as refused:
            assert refused.status_code == 401
            break
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)

    # Readable on a phone: no page scrolls sideways.
    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state())
    small = phone.new_page()
    for path in ("/", "/keys", "/usage", "/credits", "/settings"):
        small.goto(root + path)
        assert fits_the_screen(small), f"{path} is wider than a phone's screen"
    small.goto(root + "/")
    small.screenshot(path=str(screenshots / "overview-phone.png"), full_page=True)
    for ctx in (context, admin_context, phone):
        ctx.close()


def test_forms_without_the_csrf_token_are_refused(console_stack: RunningStack, browser: Browser) -> None:
    root = root_of(console_stack)
    context = browser.new_context()
    page = sign_up(context, root, new_email("csrf"))
    # The session cookie rides along (same site), but the forged form has no token: refused.
    forged = page.request.post(f"{root}/keys", form={"name": "forged"})
    assert forged.status == 403
    api = page.request.post(f"{root}/v1/keys", data={"name": "forged"})
    assert api.status == 403
    assert api.json()["error"]["code"] == "forbidden"
    listed = page.request.get(f"{root}/v1/keys").json()["data"]
    assert listed == []
    context.close()


def test_sign_in_attempts_are_limited(console_stack: RunningStack, browser: Browser) -> None:
    root = root_of(console_stack)
    context = browser.new_context()
    email = new_email("limited")
    sign_up(context, root, email).close()
    statuses = [
        httpx.post(
            f"{root}/v1/auth/signin", json={"email": email, "password": "wrong password!"}, timeout=30
        ).status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    # Even the right password waits out the window now.
    right = httpx.post(f"{root}/v1/auth/signin", json={"email": email, "password": PASSWORD}, timeout=30)
    assert right.status_code == 429
    context.close()


def key_status(stack: RunningStack, api_key: str) -> int:
    return httpx.get(f"{stack.base_url}/key", headers={"Authorization": f"Bearer {api_key}"}, timeout=10).status_code


def create_key_on_the_page(page: Page, root: str, name: str) -> str:
    page.goto(f"{root}/keys")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()
    return page.get_by_label("API key").input_value()


def test_the_playground_streams_an_answer(console_stack: RunningStack, browser: Browser) -> None:
    root = root_of(console_stack)
    context = browser.new_context()
    page = sign_up(context, root, new_email("playground"))
    deliver_topup(console_stack, account_id_of(page, root), "credits_2000")
    page.get_by_role("link", name="Playground", exact=True).click()
    page.get_by_role("button", name="Create a playground key").click()
    expect(page.get_by_label("API key")).to_have_value(re.compile(r"^sk-lexora-"))
    page.get_by_label("Maximum tokens").fill("8")
    page.get_by_label("Message").fill("Say hello.")
    page.get_by_role("button", name="Send").click()
    # The answer streams in, and the final chunk's usage carries the cost.
    expect(page.locator("#pg-usage")).to_contain_text("cost $", timeout=120_000)
    assert page.locator("#pg-answer").inner_text().strip()
    keys = page.request.get(f"{root}/v1/keys").json()["data"]
    assert [k["name"] for k in keys] == ["Playground"]
    context.close()


def test_a_disabled_account_stops_at_once(
    console_stack: RunningStack, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = root_of(console_stack)
    user_email = new_email("disabled")
    context = browser.new_context()
    page = sign_up(context, root, user_email)
    account_id = account_id_of(page, root)
    api_key = create_key_on_the_page(page, root, "soon disabled")
    assert key_status(console_stack, api_key) == 200

    admin_email = new_email("admin")
    monkeypatch.setenv("LEXORA_USER_PASSWORD", PASSWORD)
    console_stack.admin_cli("create-user", "--email", admin_email, "--admin")
    admin_context = browser.new_context()
    admin = sign_in_with_keyboard(admin_context, root, admin_email)
    admin.goto(f"{root}/admin?q={user_email}")
    admin.locator(f'tr[data-account="{account_id}"]').get_by_role("button", name="Disable").click()
    expect(admin.locator(f'tr[data-account="{account_id}"]')).to_contain_text("disabled")

    # Its key and its session stop at once: auth refuses them and gateways dropped their cache.
    # (The cache is dropped by a NATS event: a moment, so asked again for up to five seconds.)
    deadline = time.monotonic() + 5
    while (status := key_status(console_stack, api_key)) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 401
    assert page.request.get(f"{root}/v1/me").status == 401
    page.goto(f"{root}/keys")
    expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    context.close()
    admin_context.close()
