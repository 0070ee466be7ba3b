# Two set-up commands on a fresh machine: `make run` and `make test`.
# The interpreter: Debian's /usr/bin/python3.11 when present, because children started
# as other users (root mode) must be able to execute it (a pyenv under /root is 0700).
PYTHON ?= $(shell test -x /usr/bin/python3.11 && /usr/bin/python3.11 -c 'import venv, ensurepip' 2>/dev/null && echo /usr/bin/python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cksum pyproject.toml | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on

.PHONY: run demo test test-heavy test-fast test-extension test-cluster extension bench typecheck lint clean install

$(BIN)/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# What running needs, and only that (make test adds the test tools).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing what InboxLens needs to run into $(VENV) (first time: about a minute)"
	$(PIP) -e .
	rm -f $(VENV)/.installed-run-* && touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	@echo "==> installing the test tools into $(VENV)"
	$(PIP) -e '.[test]'
	rm -f $(VENV)/.installed-test-* && touch $(TEST_STAMP)

install: $(TEST_STAMP)

# Runs the service on embedded defaults (embedded PostgreSQL, SQLite token store),
# web on http://127.0.0.1:8080. Creates the vault's keys on first run.
run: $(RUN_STAMP)
	$(BIN)/inboxlens keys init --if-missing
	$(BIN)/inboxlens serve

# The dashboard and API over a generated mailbox, in a state of its own (no provider, no mail
# server); prints the sign-in link. `inboxlens demo --remove` deletes it all.
demo: $(RUN_STAMP)
	$(BIN)/inboxlens demo

# Everything but the heavy suites (whole services killed, several nodes, a real Cassandra node: a
# few minutes more), so that it stays well under 10 minutes on 2 cores; .ci/run runs make test,
# then make test-heavy.
test: $(TEST_STAMP) test-extension
	$(BIN)/python -m pytest -m "not heavy"

# The fault suite (tests/faults), two whole nodes (tests/multinode) and the metrics store's cases
# against a real Cassandra node (tests/metrics): run by CI after make test.
test-heavy: $(TEST_STAMP)
	$(BIN)/python -m pytest -m heavy

# The browser extension's logic, with Node's own test runner (no npm install).
test-extension:
	node --test extension/test/

# Three Cassandra nodes on 127.0.0.1-3, one killed mid-fold (docs/scaling.md): minutes, so not in make test.
test-cluster: $(TEST_STAMP)
	INBOXLENS_TEST_CLUSTER=1 $(BIN)/python -m pytest tests/cluster -q

# A zip of extension/ for the Chrome Web Store or an enterprise policy (reproducible: sorted, fixed times).
extension:
	python3 extension/build.py

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(TEST_STAMP)
	$(BIN)/python -m bench

typecheck: $(TEST_STAMP)
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
