from lexora_contracts.messages import Identity
from lexora_contracts.money import ceil_micro, request_cost_pico
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing
from lexora_gateway.admission.admit import JobSpec, job_header
from lexora_gateway.chat import jobs
from lexora_gateway.openai import translation
from lexora_gateway.openai.schemas import ChatCompletionRequest

MODEL = ModelRecord(
    id="m",
    triton_model="m",
    context_length=1000,
    pricing=Pricing(input_micro_per_mtok=40_000, output_micro_per_mtok=80_000),
    endpoints=[Endpoint(name="a", grpc_address="127.0.0.1:1")],
)
FREE = MODEL.model_copy(update={"pricing": Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0)})


def body(**kwargs: object) -> jobs.ChatJob:
    return translation.to_job(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "héllo"}], **kwargs}
        )
    )


def test_max_tokens_defaults_to_512_within_context() -> None:
    assert jobs.resolve_max_tokens(body(), MODEL) == 512
    small = MODEL.model_copy(update={"context_length": 100})
    assert jobs.resolve_max_tokens(body(), small) == 100


def test_max_tokens_past_the_context_is_clamped_to_it() -> None:
    assert jobs.resolve_max_tokens(body(max_tokens=1001), MODEL) == MODEL.context_length


def test_max_completion_tokens_is_honoured() -> None:
    assert jobs.resolve_max_tokens(body(max_completion_tokens=7), MODEL) == 7


def test_reservation_bounds_the_worst_case_cost_from_above() -> None:
    request = body()
    prompt_bound = jobs.prompt_token_bound(request, MODEL)
    assert prompt_bound >= len("héllo".encode())  # at least one byte of text per token
    reserved = jobs.reservation_micro(request, MODEL, MODEL.pricing, 50)
    assert reserved * 10**6 >= request_cost_pico(prompt_bound, 50, 40_000, 80_000) + 10**6 - 1
    assert reserved == ceil_micro(request_cost_pico(prompt_bound, 50, 40_000, 80_000)) + 1


def test_free_models_hold_nothing() -> None:
    assert jobs.reservation_micro(body(), FREE, FREE.pricing, 50) == 0


def test_generation_request_carries_price_deadline_and_text() -> None:
    identity = Identity(account_id="a", key_id="k", plan="free")
    request = body(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "x"},
        ],
        stop="END",
    )
    job = jobs.generation_request(
        request, MODEL, 10, job_header(JobSpec(identity, "r1", 1000.0, request), MODEL, MODEL.pricing, 5, 120)
    )
    assert job.deadline == 1120.0
    assert job.pricing == MODEL.pricing
    assert [(m.role, m.content) for m in job.messages] == [("system", "be brief"), ("user", "x")]
    assert job.stop == ["END"]


def test_usage_block_reports_cost_in_usd() -> None:
    usage = translation.usage_block(25, 10, 1_400_000)
    assert usage == {"prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35, "cost": 1.4e-06}


def test_scheduled_price_changes_apply_from_their_moment() -> None:
    from datetime import UTC, datetime

    from lexora_contracts.registry import ScheduledPrice

    raise_at = datetime(2026, 12, 1, tzinfo=UTC)
    cut_at = datetime(2027, 1, 1, tzinfo=UTC)
    model = MODEL.model_copy(
        update={
            "price_changes": [
                ScheduledPrice(effective_from=cut_at, pricing=Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0)),
                ScheduledPrice(
                    effective_from=raise_at, pricing=Pricing(input_micro_per_mtok=50_000, output_micro_per_mtok=90_000)
                ),
            ]
        }
    )
    assert model.pricing_at(datetime(2026, 11, 30, tzinfo=UTC)) == MODEL.pricing
    assert model.pricing_at(raise_at).output_micro_per_mtok == 90_000
    assert model.pricing_at(datetime(2027, 6, 1, tzinfo=UTC)).is_free
