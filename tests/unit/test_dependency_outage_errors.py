"""A dependency that cannot be reached is a 503 with Retry-After in each protocol's envelope, and
the failures that mean "cannot be reached" are told apart from a statement's own failure."""

from __future__ import annotations

import json

import asyncpg
import nats
import pytest
import sqlalchemy.exc

from lexora_contracts.errors import ErrorInfo, ServiceUnavailable, error_from_info
from lexora_contracts.messages import HealthProbe, HealthReply
from lexora_db.engine import database_unreachable
from lexora_gateway.errors import error_response
from lexora_runtime.bus import call


def test_service_unavailable_crosses_nats_as_itself() -> None:
    sent = ServiceUnavailable("auth is down").info().model_dump_json()
    rebuilt = error_from_info(ErrorInfo.model_validate_json(sent))
    assert type(rebuilt) is ServiceUnavailable
    assert rebuilt.status == 503 and rebuilt.retry_after == 5


@pytest.mark.parametrize("anthropic", [False, True])
def test_service_unavailable_renders_503_with_retry_after_in_either_envelope(anthropic: bool) -> None:
    response = error_response(ServiceUnavailable("The auth service is not running"), anthropic=anthropic)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = json.loads(response.body)
    if anthropic:
        message = "The auth service is not running"
        assert body == {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    else:
        assert body["error"]["type"] == "service_unavailable" and body["error"]["code"] == "service_unavailable"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("too many clients"),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionResetError("reset")),
        sqlalchemy.exc.DBAPIError("SELECT 1", {}, RuntimeError("closed"), connection_invalidated=True),
    ],
)
def test_a_database_that_cannot_be_reached_is_recognised(error: BaseException) -> None:
    assert database_unreachable(error)


def test_a_cause_chain_is_followed() -> None:
    try:
        try:
            raise ConnectionResetError("reset by peer")
        except ConnectionResetError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert database_unreachable(outer)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.DivisionByZeroError("division by zero"),
        sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError("duplicate")),
        ValueError("a bug"),
    ],
)
def test_a_statements_own_failure_is_not_an_outage(error: BaseException) -> None:
    assert not database_unreachable(error)


async def test_a_request_nobody_answers_is_service_unavailable(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        with pytest.raises(ServiceUnavailable, match="auth service is not running"):
            await call(nc, "auth.v1.health.get", HealthProbe(), HealthReply, timeout=1)
    finally:
        await nc.drain()


async def test_a_request_on_a_closed_connection_is_service_unavailable(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    await nc.close()
    with pytest.raises(ServiceUnavailable, match="message bus"):
        await call(nc, "auth.v1.health.get", HealthProbe(), HealthReply, timeout=1)
