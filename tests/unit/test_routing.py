from lexora_contracts.registry import Endpoint
from lexora_router.routing import LeastInFlight

A = Endpoint(name="a", grpc_address="10.0.0.1:8001")
B = Endpoint(name="b", grpc_address="10.0.0.2:8001")
DOWN = Endpoint(name="c", grpc_address="10.0.0.3:8001", ready=False)


def test_picks_the_endpoint_with_fewest_requests_in_flight() -> None:
    policy = LeastInFlight()
    assert policy.choose([A, B], {A.grpc_address: 3, B.grpc_address: 1}, set()) == B


def test_spreads_ties_across_endpoints() -> None:
    policy = LeastInFlight()
    picks = {policy.choose([A, B], {}, set()).name for _ in range(4)}
    assert picks == {"a", "b"}


def test_skips_unready_and_already_tried_endpoints() -> None:
    policy = LeastInFlight()
    assert policy.choose([A, DOWN], {}, {A.grpc_address}) is None
    assert policy.choose([DOWN, B], {}, set()) == B
