# Crossroads: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: demo test test-fast test-ha test-deploy fuzz protos lint lint-protos bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossroads demo

test: $(STAMP)
	bash tests/install-postgres.sh
	bash tests/install-monitoring.sh
	$(BIN)/python -m pytest -m "not deploy and not ha" -q

test-fast: $(STAMP)
	bash tests/install-postgres.sh
	bash tests/install-monitoring.sh
	$(BIN)/python -m pytest -m "not deploy and not slow and not ha" -q

# The hub tier under failure (tests/ha/): replicas killed, cut off from PostgreSQL (network
# namespaces: needs root and iproute2), consultations and directory across replicas, the
# hub through PostgreSQL failovers (Patroni on etcd, Debian's packages: tests/install-patroni.sh).
test-ha: $(STAMP)
	bash tests/install-patroni.sh
	command -v ip >/dev/null || (apt-get update -qq && apt-get install -y -qq iproute2)
	$(BIN)/python -m pytest -m ha -q -s tests/ha

test-deploy: $(STAMP)
	bash tests/deploy/prepare-host.sh
	CROSSROADS_DEPLOY_ARTIFACTS=build/deploy-artifacts $(BIN)/python -m pytest -m deploy -q tests/deploy

# The long fuzzing campaign (tests/fuzz/README.md): FUZZ_EXAMPLES generated inputs per RPC.
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	CROSSROADS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) nice -n 10 $(BIN)/python -m pytest -m fuzz -q -s tests/fuzz

protos: $(STAMP)
	$(BIN)/python -m node.wire.codegen

# The guards (docs/ARCHITECTURE.md, "Guards"): ruff (with complexity), mypy, the import
# contracts of pyproject.toml, buf on the protos.
lint: $(STAMP) lint-protos
	$(BIN)/ruff check node pki tests benchmarks
	$(BIN)/python -m mypy
	$(BIN)/lint-imports --no-logo --no-cache

# buf, pinned in tools/buf/package-lock.json (npm ci); lint, and breaking changes against
# the previous commit (BUF_AGAINST=main: against main).
BUF := tools/buf/node_modules/.bin/buf
BUF_AGAINST ?= HEAD~1
$(BUF): tools/buf/package.json tools/buf/package-lock.json
	cd tools/buf && npm ci --no-audit --no-fund
	touch $@

lint-protos: $(BUF)
	tools/buf/check.sh $(BUF_AGAINST)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.e2e

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tools/buf/node_modules
