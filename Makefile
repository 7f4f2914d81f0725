# keyledger — the README's commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint test bench demo clean soak

# Creates the virtualenv when missing and installs the project with its test extras,
# every package pinned (pyproject pins direct deps, constraints.txt the rest).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The fault suite's long form: KEYLEDGER_SOAK_SEEDS seeds (default 300) on SQLite, every tenth on
# PostgreSQL when KEYLEDGER_TEST_POSTGRES_URL is set; the last line prints the figures.
soak: install
	KEYLEDGER_SOAK_SEEDS=$${KEYLEDGER_SOAK_SEEDS:-300} $(BIN)/pytest tests/reliability/test_fault_seeds.py -q -k seeded

bench: install
	@for b in bench/*.py; do echo "# $$b" >&2; $(BIN)/python $$b || exit 1; done

demo: install
	$(BIN)/keyledger demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
