# The two fresh-machine commands (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install demo test test-fast lint bench clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch 2.13.0 is the CPU wheel on this machine's disk; other versions pull multi-GB CUDA builds.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	rm -f $(VENV)/.installed-* && touch $@

# The virtualenv with everything installed, nothing run (the README tour starts from here too).
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/onepixel demo

# Debian's Chromium for the report's browser tests; they skip with a reason where it cannot be had.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "chromium could not be installed: the browser tests of the report will skip"

test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=20

# Everything but the tests marked slow: about 2.5 minutes on 2 cores, for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/bench_predict.py --out bench/results/predict-cpu.md
	$(BIN)/python bench/bench_attack.py --out bench/results/attack-cpu.md
	$(BIN)/python bench/bench_analysis.py
	$(BIN)/python bench/bench_http.py --out bench/results/http-cpu.md
	$(BIN)/python bench/bench_http_v2.py --out bench/results/http-v2-cpu.md

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
