# syntax=docker/dockerfile:1
# The platform's images from one Dockerfile (one Python package):
#   docker build --target service  -t ghcr.io/lexora/lexora:0.1.0 .     # gateway, auth, billing, usage, router, `lexora migrate`
#   docker build --target operator -t ghcr.io/lexora/operator:0.1.0 .   # the kopf ModelDeployment operator
# `service` is the last stage, so a plain `docker build .` builds it. Neither image carries the
# `local` extra (tritonserver, llama-cpp): Triton runs in its own pods, made by the operator, from
# images/triton-python (or NVIDIA's TensorRT-LLM image), with images/model-fetcher as init container.
# skaffold.yaml builds all four (module lexora: these two; module runtimes: the other two).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: a virtualenv with the package and its dependencies --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/lexora
ENV PATH=/opt/lexora/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY services ./services
COPY operator ./operator

FROM build AS build-service
RUN pip install --no-cache-dir .

FROM build AS build-operator
RUN pip install --no-cache-dir ".[operator]"

# --- runtime: the interpreter, the virtualenv, and an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/lexora/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 lexora \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin lexora
WORKDIR /tmp
USER 10001:10001

FROM runtime AS operator
COPY --from=build-operator /opt/lexora /opt/lexora
ENTRYPOINT ["lexora-operator"]

FROM runtime AS service
COPY --from=build-service /opt/lexora /opt/lexora
# The chart sets the command per component (lexora-gateway, lexora-auth, ... or `lexora migrate`).
CMD ["lexora-gateway"]
