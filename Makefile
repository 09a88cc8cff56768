# Every target that needs the environment depends on `setup`, which builds .venv from nothing
# (torch==2.13.0 CPU wheel first, when no torch is importable) and is a no-op when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.twinbench-installed
SUITE ?= smoke

.PHONY: setup browser docs test data bench bench-smoke bench-data bench-harness gpu-kit nightly report lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Any torch spec but an exact local version pulls a multi-GB CUDA build onto a CPU machine.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray,lca]'
	@touch $(STAMP)

# The report test opens report.html in a real headless browser: Debian's chromium package.
browser:
	@command -v chromium >/dev/null || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium >/dev/null; }

# The docs/ pages, built strictly: a broken link or anchor, or a page missing from nav (mkdocs.yml),
# fails. The README's links into docs/ are checked here too (mkdocs does not read the README).
docs: setup
	@missing=$$(grep -o '](docs/[^)#]*' README.md | cut -c3- | sort -u | while read -r f; do \
	  test -e "$$f" || echo "$$f"; done); \
	test -z "$$missing" || { echo "README.md links to missing files: $$missing"; exit 1; }
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .cache/site

test: setup browser docs
	$(PY) -m pytest

data: setup
	$(VENV)/bin/twinbench data --suite $(SUITE)

# The main job: the `gpu` suite on a CUDA machine (~32 min on one GPU by its estimate, training
# included), the CPU-sized `default` suite elsewhere; any other suite explicitly (make bench
# SUITE=full: hours on one GPU). Its plan and estimate (1 and 8 workers) are printed first.
# BENCH_ARGS go to `twinbench run`, e.g. BENCH_ARGS="--executor ray --ray-address auto".
bench: setup
	@suite=$(if $(filter command line environment,$(origin SUITE)),$(SUITE),$$($(PY) -c \
	  "import torch; print('gpu' if torch.cuda.is_available() else 'default')")); \
	echo "bench suite: $$suite"; \
	$(VENV)/bin/twinbench run --suite $$suite --dry-run $(BENCH_ARGS) && \
	$(VENV)/bin/twinbench data --suite $$suite && $(VENV)/bin/twinbench train --suite $$suite && \
	$(VENV)/bin/twinbench run --suite $$suite $(BENCH_ARGS)

bench-smoke: setup
	$(VENV)/bin/twinbench data --suite smoke && $(VENV)/bin/twinbench train --suite smoke && \
	$(VENV)/bin/twinbench run --suite smoke

# Cold build, warm load and size of the smoke cache (prints numbers; not a timed test).
bench-data: setup
	$(PY) tests/benchmarks/data_cache.py

# Performance numbers to read (harness overhead, nightly latency, Ray scheduling); BENCH=FILE for one.
BENCH ?= tests/benchmarks
bench-harness: setup
	$(PY) -m pytest -o addopts="" -p no:cacheprovider -s $(BENCH) --benchmark-enable

# The GPU kit (bench/run/gpu_kit.py): builds what a lent GPU machine runs from, with nothing to fetch
# there: the gpu-first suite's grid data and checkpoints, trained here (the first time ~20 min on 2
# cores), packed into .cache/gpu-kit/, and the missing wheels for CPython 3.12 in .whl/. Prints the
# carry's size (64 MiB limit, working tree included) and the suite's estimated H100 time, then
# rehearses: bench/run/gpu_run.sh with device=cpu on one cell in a fresh venv holding only the GPU
# machine's packages plus the carried wheels (pip --no-index). Not part of `make test`.
gpu-kit: setup
	$(PY) bench/run/gpu_kit.py all

# Nightly gate: the suite against this device's committed baseline (results/baselines/), then the
# pytest-benchmark latency suite against the last saved nightly. Fails if either regressed.
# Without CUDA the gate runs the CPU smoke suite (against a CPU baseline), so the path is exercised.
nightly: setup
	@suite=$${NIGHTLY_SUITE:-$$($(PY) -c "import torch; print('nightly' if torch.cuda.is_available() else 'smoke')")}; \
	$(VENV)/bin/twinbench nightly --suite $$suite; gate=$$?; \
	compare=$$(ls results/benchmarks/*/*.json >/dev/null 2>&1 && \
	  echo "--benchmark-compare --benchmark-compare-fail=median:10%"); \
	$(PY) -m pytest -o addopts="" -p no:cacheprovider -rs tests/benchmarks/test_nightly.py --benchmark-enable \
	  --benchmark-autosave --benchmark-storage=results/benchmarks $$compare; bench=$$?; \
	exit $$(( gate || bench ))

# (Re)write summary.md and report.html of a run: make report RUN=results/runs/<id>
report: setup
	$(VENV)/bin/twinbench report $(RUN)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .benchmarks results/runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
