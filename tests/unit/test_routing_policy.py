"""The router's policies (lexora_router.routing): the weighted split among a model's deployments,
least outstanding requests weighed by the engine's own load, prefix affinity, and the round-robin
baseline."""

from __future__ import annotations

from collections import Counter

from lexora_contracts.messages import ChatTurn
from lexora_contracts.registry import DeploymentRef, Endpoint
from lexora_router.engine_load import EngineLoad
from lexora_router.prefix_affinity import BLOCK_CHARS, AffinityMap, prefix_keys
from lexora_router.routing import AFFINITY_SLACK, Load, PolicyName, Route, make_policy


def _endpoint(name: str, deployment: str | None = None, ready: bool = True) -> Endpoint:
    n = sum(map(ord, name)) % 250
    return Endpoint(
        name=name,
        grpc_address=f"10.0.0.{n}:8001",
        deployment=deployment,
        metrics_address=f"10.0.0.{n}:8002",
        ready=ready,
    )


A, B, C = _endpoint("a"), _endpoint("b"), _endpoint("c")
STABLE = DeploymentRef(namespace="models", name="stable", weight=90)
CANARY = DeploymentRef(namespace="models", name="canary", weight=10)
ROUTE = Route("org/model")
LONG_PROMPT = "You are a careful assistant. " * 20


def least_outstanding():  # noqa: ANN201
    return make_policy(PolicyName.LEAST_OUTSTANDING)


def test_a_90_10_split_holds_within_5_points_over_200_requests() -> None:
    policy = least_outstanding()
    stable = [_endpoint(f"s{i}", STABLE.key) for i in range(2)]
    canary = [_endpoint("c0", CANARY.key)]
    route = Route("org/model", (STABLE, CANARY))
    counts = Counter(policy.choose(route, [*stable, *canary], Load(), set()).deployment for _ in range(200))
    assert abs(counts[CANARY.key] / 200 - 0.10) <= 0.05
    assert counts[STABLE.key] + counts[CANARY.key] == 200
    # spread out, not in runs: the canary's requests are never next to each other
    picks = [policy.choose(route, [*stable, *canary], Load(), set()).deployment for _ in range(50)]
    assert not any(a == b == CANARY.key for a, b in zip(picks, picks[1:], strict=False))


def test_the_split_counts_only_deployments_with_an_endpoint_to_offer() -> None:
    policy = least_outstanding()
    route = Route("org/model", (STABLE, CANARY))
    canary = _endpoint("c0", CANARY.key)
    stable_down = _endpoint("s0", STABLE.key, ready=False)
    assert {policy.choose(route, [stable_down, canary], Load(), set()).name for _ in range(10)} == {"c0"}
    stable = _endpoint("s1", STABLE.key)
    assert policy.choose(route, [stable, canary], Load(), {stable.grpc_address}) == canary


def test_a_deployment_at_weight_0_serves_only_while_no_other_can() -> None:
    policy = least_outstanding()
    drained = DeploymentRef(namespace="models", name="old", weight=0)
    route = Route("org/model", (drained, CANARY))
    old, new = _endpoint("old", drained.key), _endpoint("new", CANARY.key)
    assert {policy.choose(route, [old, new], Load(), set()).name for _ in range(20)} == {"new"}
    assert policy.choose(route, [old, new], Load(), {new.grpc_address}) == old


def test_picks_the_endpoint_with_the_fewest_outstanding_requests() -> None:
    load = Load(outstanding={A.grpc_address: 3, B.grpc_address: 1, C.grpc_address: 2})
    assert least_outstanding().choose(ROUTE, [A, B, C], load, set()) == B


def test_the_engines_own_queue_and_kv_cache_use_weigh_in() -> None:
    policy = least_outstanding()
    # the same outstanding here, but B's engine has requests of other routers waiting
    queued = Load(engines={B.metrics_address: EngineLoad(waiting=4)})
    assert {policy.choose(ROUTE, [A, B], queued, set()).name for _ in range(4)} == {"a"}
    # one more request here, but A's KV cache is nearly full
    full = Load(
        outstanding={B.grpc_address: 1},
        engines={A.metrics_address: EngineLoad(kv_cache_use=0.95), B.metrics_address: EngineLoad(kv_cache_use=0.1)},
    )
    assert policy.choose(ROUTE, [A, B], full, set()) == B


def test_ties_go_round_robin() -> None:
    policy = least_outstanding()
    picks = [policy.choose(ROUTE, [A, B, C], Load(), set()).name for _ in range(6)]
    assert Counter(picks) == {"a": 2, "b": 2, "c": 2}


def test_skips_unready_and_already_tried_endpoints() -> None:
    policy = least_outstanding()
    down = _endpoint("down", ready=False)
    assert policy.choose(ROUTE, [A, down], Load(), {A.grpc_address}) is None
    assert policy.choose(ROUTE, [down, B], Load(), set()) == B


def test_a_shared_prefix_sticks_to_the_replica_that_served_it() -> None:
    policy = least_outstanding()
    route = Route("org/model", prefixes=prefix_keys([ChatTurn(role="system", content=LONG_PROMPT)]))
    outstanding: Counter[str] = Counter()
    first = policy.choose(route, [A, B, C], Load(outstanding), set())
    outstanding[first.grpc_address] += 1  # it is still serving the first one
    for _ in range(AFFINITY_SLACK):
        again = policy.choose(route, [A, B, C], Load(outstanding), set())
        assert again == first
        outstanding[again.grpc_address] += 1
    # other prompts spread as before
    others = {policy.choose(ROUTE, [A, B, C], Load(outstanding), set()).name for _ in range(3)}
    assert first.name not in others


def test_affinity_breaks_when_its_replica_is_overloaded_and_follows_the_new_one() -> None:
    policy = least_outstanding()
    route = Route("org/model", prefixes=("k1",))
    first = policy.choose(route, [A, B], Load(), set())
    other = B if first == A else A
    busy = Load(outstanding={first.grpc_address: AFFINITY_SLACK + 1})
    assert policy.choose(route, [A, B], busy, set()) == other
    # the prefix now lives on the other replica
    assert policy.choose(route, [A, B], Load(), set()) == other
    # the engine's own queue counts as overload too
    queued = Load(engines={other.metrics_address: EngineLoad(waiting=AFFINITY_SLACK + 1)})
    assert policy.choose(route, [A, B], queued, set()) == first
    # and a KV cache nearly full while the other has room
    full = Load(engines={first.metrics_address: EngineLoad(kv_cache_use=0.97)})
    assert policy.choose(route, [A, B], full, set()) == other


def test_affinity_gives_way_on_a_retry() -> None:
    policy = least_outstanding()
    route = Route("org/model", prefixes=("k2",))
    first = policy.choose(route, [A, B], Load(), set())
    assert policy.choose(route, [A, B], Load(), {first.grpc_address}) != first


def test_affinity_keeps_to_the_split() -> None:
    """A prefix shared by every request (one system prompt) does not pull a canary's share."""
    policy = least_outstanding()
    route = Route("org/model", (STABLE, CANARY), prefixes=("shared-system-prompt",))
    endpoints = [_endpoint("s0", STABLE.key), _endpoint("s1", STABLE.key), _endpoint("c0", CANARY.key)]
    picks = [policy.choose(route, endpoints, Load(), set()) for _ in range(100)]
    assert Counter(e.deployment for e in picks)[CANARY.key] == 10
    assert len({e.name for e in picks if e.deployment == STABLE.key}) == 1  # sticky within the deployment


def test_round_robin_takes_each_replica_in_turn_whatever_its_load() -> None:
    policy = make_policy(PolicyName.ROUND_ROBIN)
    load = Load(outstanding={A.grpc_address: 50}, engines={A.metrics_address: EngineLoad(waiting=9)})
    picks = [policy.choose(Route("org/model", prefixes=("k",)), [A, B, C], load, set()).name for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_keeps_the_weighted_split() -> None:
    policy = make_policy(PolicyName.ROUND_ROBIN)
    route = Route("org/model", (STABLE, CANARY))
    endpoints = [_endpoint("s0", STABLE.key), _endpoint("c0", CANARY.key)]
    assert Counter(policy.choose(route, endpoints, Load(), set()).name for _ in range(100)) == {"s0": 90, "c0": 10}


def test_prefix_keys_need_a_long_prompt_and_follow_its_opening() -> None:
    assert prefix_keys([ChatTurn(role="user", content="Hi")]) == ()
    assert len(prefix_keys([ChatTurn(role="user", content="x" * BLOCK_CHARS)])) == 1
    system = ChatTurn(role="system", content=LONG_PROMPT)
    one = prefix_keys([system, ChatTurn(role="user", content="What is 2+2? " * 30)])
    two = prefix_keys([system, ChatTurn(role="user", content="Name a colour. " * 30)])
    shared = len(LONG_PROMPT) // BLOCK_CHARS
    assert one[:shared] == two[:shared]  # the same long system prompt: the same blocks
    assert one[shared:] and set(one[shared:]).isdisjoint(two[shared:])
    assert prefix_keys([ChatTurn(role="system", content=LONG_PROMPT.upper())])[0] != one[0]
    assert prefix_keys([], raw_prompt=LONG_PROMPT)[:1] == prefix_keys([], raw_prompt=LONG_PROMPT + "more")[:1]
    assert prefix_keys([], raw_prompt="short") == ()


def test_the_longest_shared_prefix_decides() -> None:
    """Two conversations on one system prompt each stick to their own replica, and a third on the
    same system prompt goes where that prompt went last."""
    policy = least_outstanding()
    system = ChatTurn(role="system", content=LONG_PROMPT)
    first = [system, ChatTurn(role="user", content="Tell me about dragons. " * 20)]
    second = [system, ChatTurn(role="user", content="Tell me about knights. " * 20)]
    outstanding: Counter[str] = Counter()
    a = policy.choose(Route("m", prefixes=prefix_keys(first)), [A, B], Load(outstanding), set())
    outstanding[a.grpc_address] += 1
    b = policy.choose(Route("m", prefixes=prefix_keys(second)), [A, B], Load(outstanding), set())
    # the second shares only the system prompt with the first: it follows it while not overloaded
    assert b == a
    outstanding[a.grpc_address] += AFFINITY_SLACK  # now it is
    c = policy.choose(Route("m", prefixes=prefix_keys(second)), [A, B], Load(outstanding), set())
    assert c != a
    outstanding.clear()
    assert policy.choose(Route("m", prefixes=prefix_keys(first)), [A, B], Load(outstanding), set()) == a
    assert policy.choose(Route("m", prefixes=prefix_keys(second)), [A, B], Load(outstanding), set()) == c


def test_the_affinity_map_is_bounded_least_recently_used_first() -> None:
    remembered = AffinityMap(capacity=2)
    remembered.remember("m", "k1", "a")
    remembered.remember("m", "k2", "b")
    assert remembered.get("m", "k1") == "a"  # k1 is now the most recent
    remembered.remember("m", "k3", "c")
    assert len(remembered) == 2
    assert remembered.get("m", "k2") is None
    assert remembered.get("m", "k1") == "a" and remembered.get("m", "k3") == "c"
