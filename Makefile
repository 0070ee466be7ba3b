# Two set-up commands on a fresh machine: `make run` and `make test`.
# The interpreter: Debian's /usr/bin/python3.11 when present, because children started
# as other users (root mode) must be able to execute it (a pyenv under /root is 0700).
PYTHON ?= $(shell test -x /usr/bin/python3.11 && /usr/bin/python3.11 -c 'import venv, ensurepip' 2>/dev/null && echo /usr/bin/python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-fast bench typecheck lint clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Runs the service on embedded defaults (embedded PostgreSQL, SQLite token store),
# web on http://127.0.0.1:8080. Creates the vault's keys on first run.
run: $(STAMP)
	$(BIN)/inboxlens keys init --if-missing
	$(BIN)/inboxlens serve

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

typecheck: $(STAMP)
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
