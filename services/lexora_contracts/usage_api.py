"""Queries about past usage and money: what /v1/usage, /v1/key and /v1/credits are built from."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

USAGE_REPORT_GET = "usage.v1.report.get"
BILLING_CREDITS_SUMMARY = "billing.v1.credits.summary"
BILLING_KEY_SPEND_GET = "billing.v1.keyspend.get"

DAILY_DAYS = 30


# The deepest page of recent activity one may ask for: its offset (page x limit) must fit the
# database's 64-bit integers, which a page number from a query string need not.
MAX_USAGE_PAGE = 1_000_000


class UsageReportRequest(BaseModel):
    account_id: str
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    model: str | None = None
    limit: int = Field(default=50, ge=1, le=100)
    page: int = Field(default=1, ge=1, le=MAX_USAGE_PAGE)
    today: date  # the caller's today (UTC): the daily series is the 30 days ending today


class Totals(BaseModel):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pico: int = 0
    avg_latency_ms: int = 0


class DailyTotals(BaseModel):
    date: date
    requests: int
    tokens: int
    cost_pico: int


class ModelTotals(BaseModel):
    model: str
    requests: int
    tokens: int
    cost_pico: int


class Activity(BaseModel):
    request_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_pico: int
    latency_ms: int
    status_code: int
    thinking_used: bool
    created_at: datetime


class UsageReport(BaseModel):
    summary: Totals
    daily: list[DailyTotals]
    by_model: list[ModelTotals]
    recent: list[Activity]
    total_recent: int


class CreditsSummaryRequest(BaseModel):
    account_id: str


class CreditsSummary(BaseModel):
    credited_micro: int  # everything ever added: top-ups and adjustments
    charged_micro: int  # everything ever charged
    balance_micro: int


class KeySpendRequest(BaseModel):
    key_id: str


class KeySpend(BaseModel):
    key_id: str
    spent_micro: int
    held_micro: int


BILLING_TRANSACTIONS_LIST = "billing.v1.transactions.list"
USAGE_KEY_SPEND_LIST = "usage.v1.keyspend.list"


class TransactionsRequest(BaseModel):
    account_id: str
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    timezone: str = "UTC"  # charges are summed per day in this zone
    limit: int = Field(default=100, ge=1, le=1000)


class Transaction(BaseModel):
    """One credit (a top-up or an adjustment, which includes admin grants) or one day's charges."""

    kind: str  # topup | adjustment | charges
    amount_micro: int  # signed: credits positive, charges negative
    created_at: datetime | None = None  # a credit's time
    day: date | None = None  # a day of charges
    count: int = 1  # how many charges that day
    reason: str | None = None
    actor: str | None = None


class TransactionList(BaseModel):
    transactions: list[Transaction]  # newest first


class KeySpendListRequest(BaseModel):
    account_id: str


class KeySpendList(BaseModel):
    cost_pico: dict[str, int]  # key id -> what its requests cost, in total
