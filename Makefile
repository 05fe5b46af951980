# camserve: every command the README names. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
IMAGE ?= camserve
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TORCH_INDEX_URL ?=

.PHONY: help venv demo test test-fast lint format protos bench image image-gpu image-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[server,test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install camserve with its server and test extras

demo: venv ## start the server, explain the samples, write figures and an HTML report under out/
	$(PY) -m camserve_server.demo.run --out out

test: venv lint ## lint, type-check and run the whole test suite
	@bash scripts/ensure_chromium.sh
	@bash scripts/ensure_redis.sh
	@bash scripts/ensure_podman.sh
	$(PY) -m pytest

test-fast: venv ## the test suite without the slow tests
	$(PY) -m pytest -m "not slow"

lint: venv ## ruff lint + format check, mypy, and the generated stubs match the .proto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/gen_protos.py --check
	$(PY) scripts/gen_option_docs.py --check

format: venv ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

protos: venv ## regenerate the gRPC stubs from protos/
	$(PY) scripts/gen_protos.py

bench: venv ## the benchmark harness: camserve against same-run baselines (a few minutes)
	$(PY) -m bench.run

image: ## build the CPU image camserve:<version>-cpu (needs a Docker engine; deploy/README.md)
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile --build-arg VARIANT=cpu \
		--build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) -t $(IMAGE):$(VERSION)-cpu .

image-gpu: ## build the GPU image camserve:<version>-gpu from the same Dockerfile
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile --build-arg VARIANT=gpu \
		-t $(IMAGE):$(VERSION)-gpu .

image-test: venv ## build both images with podman, run the CPU one as Kubernetes does (about 20 min)
	@bash scripts/ensure_podman.sh
	$(PY) -m pytest -m image tests/deploy/test_image.py

clean: ## remove build outputs (keeps .venv)
	rm -rf out build dist .pytest_cache .mypy_cache .ruff_cache
