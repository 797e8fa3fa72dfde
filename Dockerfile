# syntax=docker/dockerfile:1
# graph-engine production image. Build: `make image` (docker build -t graph-engine:latest .).
# Runs `engine serve /graphs` as uid 10001 on 0.0.0.0:8001 (gRPC), :8000 (HTTP/REST) and :8002 (/metrics);
# SIGTERM drains (health NOT_SERVING -> drain delay -> in-flight calls finish within grace -> exit 0).
# Deployment guide: docs/deploy.md.

# One pinned base for every stage; bump the tag (or pin a digest, python:3.11.13-slim-bookworm@sha256:…)
# deliberately, not by accident of a rebuild.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ── build: the engine and its runtime dependencies into a self-contained venv ─────────────────
# [parquet]: the Parquet request-log sink and `engine logs to-parquet` (docs/request-log.md). The
# load tool's extra ([loadtest]: matplotlib, hdrhistogram) stays out of the server image.
# The hot path is compiled to C by mypyc (setup.py lists the modules). A throwaway venv holds what
# compiling needs (a C compiler, mypy and the type stubs it compiles with, the dependencies whose
# types it reads) and builds the wheel with ENGINE_COMPILE=1; the engine's own venv installs only
# that wheel and its runtime dependencies. The extension modules need nothing beyond the Python
# they were built for, which is the runtime stage's too.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY engine ./engine
COPY adapters ./adapters
COPY loadtest ./loadtest
RUN python -m venv /opt/compile \
 && /opt/compile/bin/pip install --no-compile "setuptools>=68" ".[compile]" \
 && ENGINE_COMPILE=1 /opt/compile/bin/pip wheel --no-build-isolation --no-deps -w /wheels . \
 && python -m venv /opt/engine \
 && /opt/engine/bin/pip install --no-compile "$(ls /wheels/graph_engine-*.whl)[parquet]" \
 && /opt/engine/bin/python -c "import engine.serving.core as m; assert m.__file__.endswith('.so'), m.__file__" \
 && /opt/engine/bin/python -m compileall -q /opt/engine/lib \
 && rm -rf /opt/compile /wheels

# ── models: train the example graphs' ONNX files (scikit-learn stays in this stage) ──────────
FROM build AS models
COPY graphs ./graphs
# The versions of [models] in pyproject.toml, exactly: the example models' sha256 stay the same.
RUN /opt/engine/bin/pip install "scikit-learn==1.9.1" "skl2onnx==1.20.0" \
 && /opt/engine/bin/python graphs/build_models.py \
 && /opt/engine/bin/engine validate graphs/

# ── runtime: slim, non-root, only the venv, the example graphs and the default engine.yaml ────
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent engine
COPY --from=build /opt/engine /opt/engine
# Example graphs baked at /graphs; mount a volume there (read-only) to serve your own.
COPY --from=models --chown=10001:0 /src/graphs /graphs
COPY deploy/engine.yaml /etc/engine/engine.yaml
# The container's contract lives in ENV (it beats engine.yaml); tunables live in engine.yaml,
# which Kubernetes replaces by mounting a ConfigMap at /etc/engine. GLIBC_TUNABLES: malloc on
# transparent huge pages, so freeing a replaced model's weights holds the event loop ~1 ms per
# 200 MB instead of ~45 (engine/fleet/malloc.py; --workers N workers get it anyway).
ENV PATH=/opt/engine/bin:$PATH \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENGINE_CONFIG=/etc/engine/engine.yaml \
    ENGINE_HOST=0.0.0.0 \
    ENGINE_PORT=8001 \
    ENGINE_HTTP_PORT=8000 \
    ENGINE_METRICS_PORT=8002
USER 10001:0
EXPOSE 8000 8001 8002
# The engine handles SIGTERM itself (PID 1 with its own handlers; the --workers supervisor forwards it
# and reaps its workers), so no init shim is needed. No HEALTHCHECK: Kubernetes ignores it and probes
# grpc.health.v1 natively; see docs/deploy.md for docker/compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["engine", "serve"]
CMD ["/graphs"]
