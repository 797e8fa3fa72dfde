# Every target sets up what it needs: a fresh clone needs only `make serve` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8001
PYTEST_ARGS ?=

.PHONY: venv compiled interpreted models serve test bench bench-peers bench-workers soak memrun proto lint format clean image

# The editable install is plain Python (its isolated build has no mypyc); `compiled` builds in place.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	ENGINE_COMPILE=0 $(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The hot path compiled to C in place by mypyc (setup.py lists the modules). Rebuilt when any
# source of the engine changes: a compiled module can inline another module's Final constants.
# ENGINE_COMPILE=0 runs every target on the interpreted sources instead.
ENGINE_COMPILE ?= 1
COMPILED_STAMP := $(VENV)/.compiled
ENGINE_SOURCES := $(shell find engine -name '*.py' -not -path '*/generated/*')
$(COMPILED_STAMP): $(STAMP) setup.py $(ENGINE_SOURCES)
	ENGINE_COMPILE=1 $(BIN)/python setup.py -q build_ext --inplace
	find engine -name '*.so' -exec touch {} +
	touch $@

compiled: $(COMPILED_STAMP)

interpreted:
	find engine -name '*.so' -delete
	rm -f $(COMPILED_STAMP)

CORE := $(if $(filter 0,$(ENGINE_COMPILE)),interpreted,compiled)

# Trains the example models on seeded synthetic data; only missing files are built.
models: $(STAMP)
	$(BIN)/python graphs/build_models.py

serve: models $(CORE)
	$(BIN)/engine serve graphs/ --host $(HOST) --port $(PORT)

# pytest exit code 5 means no tests ran: that is a failure.
test: models $(CORE)
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

bench: models $(CORE)
	$(BIN)/python -m bench.run

# The engine against Triton (nvidia-pytriton's tritonserver) and MLServer in one run (bench/peers.py).
# The peers get a venv of their own, so their pinned dependencies never touch the engine's.
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.installed:
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q 'nvidia-pytriton==0.7.0' 'mlserver==1.7.1' onnxruntime 'numpy<2'
	touch $@

bench-peers: models $(CORE) $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.peers

# --workers 1 and 2 driven by Triton's C++ perf_analyzer, with the client's CPU share (bench/workers.py).
bench-workers: models $(CORE)
	$(BIN)/python -m bench.workers

# 10 minutes at 70% of capacity with reloads, varied batches and request logging (SOAK_SECONDS to change).
soak: models $(CORE)
	$(BIN)/python -m bench.soak

# 5 minutes of the soak on the one-model graph with dynamic batching, requests of 1 to 100 rows:
# resident memory must not grow (bench/memrun.py).
memrun: models $(CORE)
	SOAK_SECONDS=$${SOAK_SECONDS:-300} SOAK_WORKLOAD=batched $(BIN)/python -m bench.soak

proto: $(STAMP)
	$(BIN)/python proto/generate.py

# Packages held to mypy --strict (configured in pyproject.toml).
TYPED ?= engine adapters loadtest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

image:
	docker build -t graph-engine:latest .

clean: interpreted
	rm -rf $(VENV) $(PEERS_VENV) .pytest_cache .ruff_cache build
