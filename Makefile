# Tenure: the two commands are `make run` and `make test`; everything they need
# is installed here, from PyPI and Maven Central, into .venv and .stack/.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STACK := .stack
KAFKA_LIBS := $(STACK)/kafka/libs
PROMETHEUS := $(STACK)/prometheus
HELM_VERSION := v4.3.2
HELM_DIR := $(STACK)/helm
GO ?= $(firstword $(shell command -v go) /usr/local/go/bin/go)

.PHONY: run test test-unit test-cluster bench schemas dashboards lint typecheck deps kafka \
	prometheus helm chromium clean

deps: $(VENV)/.installed kafka prometheus

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

kafka: $(KAFKA_LIBS)/.fetched

$(KAFKA_LIBS)/.fetched: deploy/kafka/pom.xml
	@mkdir -p $(KAFKA_LIBS)
	mvn --batch-mode --quiet -f deploy/kafka/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_LIBS))
	@touch $@

# Debian's prometheus package, unpacked without installing it (no root needed):
# promtool checks deploy/prometheus in the tests, prometheus runs in `make run`.
# Without the package index or the network this only warns; the promtool test skips.
prometheus: $(PROMETHEUS)/.fetched

$(PROMETHEUS)/.fetched:
	@mkdir -p $(PROMETHEUS)
	@if (cd $(PROMETHEUS) && apt-get download --quiet prometheus >/dev/null 2>&1 \
	     && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb); then touch $@; \
	 else echo "warning: Debian's prometheus package could not be fetched"; fi

# Helm, built from its Go module once (a few minutes cold) and kept in .stack/ with the
# module and build caches: the tests lint deploy/helm/tenure and render it with it.
helm: $(HELM_DIR)/.$(HELM_VERSION)

$(HELM_DIR)/.$(HELM_VERSION):
	@mkdir -p $(HELM_DIR)
	GOPATH=$(abspath $(STACK)/go) GOCACHE=$(abspath $(STACK)/go/cache) GOFLAGS=-modcacherw \
	    GOBIN=$(abspath $(HELM_DIR)) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	@rm -f $(HELM_DIR)/.v* && touch $@

# Debian's chromium: the report test renders `tenure report`'s page in it, headless.
# Installed once as root: the package index is fetched first when it is missing, and
# again if the install fails on a stale one.
chromium: /usr/bin/chromium

/usr/bin/chromium:
	@if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then apt-get update --quiet; fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --quiet --no-install-recommends chromium \
	    || { apt-get update --quiet && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y --quiet --no-install-recommends chromium; }

run: deps
	$(PY) -m devstack run

test: deps helm chromium lint typecheck
	$(PY) -m pytest -q

# The unit tests alone: no Kafka, no PostgreSQL, no network (the loopback at most), so
# only the virtual environment is needed, not the broker jars.
test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

# The fault tests on a three-broker Kafka cluster of their own (tests/cluster, marker
# `cluster`): left out of `make test` (pyproject's addopts), run by .ci/run after it.
test-cluster: deps
	$(PY) -m pytest -q -m cluster tests/cluster

bench: deps
	$(PY) -m bench

schemas: $(VENV)/.installed
	$(PY) -m common.schemas docs/schemas

# The Grafana dashboards from libs/devstack/dashboards/ (tests/unit/test_dashboards.py
# fails when the committed JSON differs).
dashboards: $(VENV)/.installed
	$(PY) -m devstack.dashboards

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check --quiet libs services cli tests bench
	$(VENV)/bin/ruff format --quiet --check libs services cli tests bench

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy --strict --no-error-summary libs/common cli services/*/domain \
	    services/orchestrator/service_layer services/orchestrator/adapters \
	    services/orchestrator/entrypoints \
	    services/notifier/*.py services/notifier/service_layer services/notifier/adapters \
	    services/notifier/entrypoints

clean:
	rm -rf $(STACK)
