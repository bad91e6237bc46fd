# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extra arguments for twistd gracesvc, e.g. make run ARGS="--ping-delay 1"
ARGS ?=

.PHONY: run check test smoke test-property floors docs clean

# editable_mode=compat puts the checkout on sys.path with a .pth file, so
# twistd finds twisted/plugins/ here; the default editable mode uses an
# import hook that Twisted's plugin discovery cannot see.
$(BIN)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/twistd --pidfile= -n gracesvc $(ARGS)

# The in-memory suite (no process, no port, no sleep) under both runners,
# with the linter, the formatter's check, the type checker and the API
# docs' check (every docstring rendered as make docs renders it, no page
# written: a broken L{} link or an epytext error fails it): seconds.  Two
# lanes at once, each one's output printed whole when it ends: the types and
# the API docs then trial, and pytest.
check: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(MAKE) --no-print-directory -j2 --output-sync=target check-types-trial check-pytest

.PHONY: check-types-trial check-pytest
check-types-trial:
	$(BIN)/mypy gracesvc tests bench docs
	$(BIN)/python -m pydoctor --quiet --warnings-as-errors \
		--html-writer=docs.apidocs.LinkCheckWriter --html-output=$(VENV)/apidocs-check gracesvc
	$(BIN)/trial --reporter=text tests.unit

check-pytest:
	$(BIN)/pytest -q tests/unit

# check, then the process-level suite (real twistd, real signals, real
# clients) once, under pytest, E2E_JOBS tests at a time (pytest-xdist).
# Most of its time is spent waiting on timers and other processes, so three
# at a time on two cores halves the wall clock; E2E_JOBS=0 runs them one by
# one in this process.
E2E_JOBS ?= 3
test: check
	$(BIN)/pytest -q -n $(E2E_JOBS) --dist loadgroup tests/e2e

# The benchmarks' --smoke runs (tests/bench), so that they cannot rot: each
# script at tiny sizes runs to its end and prints its table.  They measure
# nothing worth reading and load both cores for most of their two minutes,
# so they are not part of make test; .ci/run runs them after it.
smoke: $(BIN)/.installed
	$(BIN)/pytest -q -n $(E2E_JOBS) tests/bench

# The declared lower bounds: for each Python from python_requires' floor up
# that this machine has, a fresh venv under .venv-floors/ with every
# install_requires dependency at exactly its floor from setup.cfg, then mypy
# and tests/unit under trial and pytest.  About 30 s a Python.
# FLOORS_PYTHONS="3.12" picks the Pythons.
FLOORS_PYTHONS ?=
floors:
	$(PYTHON) .ci/floors $(FLOORS_PYTHONS)

# The API docs, in HTML, to apidocs/ (pydoctor; its settings are in
# pyproject.toml, its system in docs/apidocs.py).  Links to Twisted and the
# standard library are checked against the installed packages, with no
# network; PYDOCTOR_ARGS adds options, such as
# --intersphinx=https://docs.python.org/3/objects.inv.
PYDOCTOR_ARGS ?=
docs: $(BIN)/.installed
	rm -rf apidocs
	$(BIN)/python -m pydoctor --quiet --warnings-as-errors $(PYDOCTOR_ARGS) gracesvc
	@echo "API docs: apidocs/index.html"

clean:
	rm -rf apidocs $(VENV) .venv-floors .venv-autobahn .venv-autobahn-tool *.egg-info _trial_temp twisted/plugins/dropin.cache

# The Autobahn WebSocket test suite, which tests/e2e/test_websocket.py runs
# against /ws where it is installed (and skips, saying why, where not).
# autobahntestsuite is Python 2 only: a Python 2.7 virtualenv, made by a
# virtualenv old enough to make one (20.21, in a tool venv of its own).
# Nothing is installed into the Python 2.7 itself.  Without a Python 2.7,
# it says so and succeeds.
PYTHON2 ?=
.PHONY: autobahn
autobahn: .venv-autobahn/bin/wstest

.venv-autobahn/bin/wstest:
	@python2=""; \
	for p in $(PYTHON2) /root/.pyenv/versions/2.7.18/bin/python python2.7; do \
		if "$$p" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then python2=$$p; break; fi; \
	done; \
	if [ -z "$$python2" ]; then echo "make autobahn: no Python 2.7 here (set PYTHON2=...): the Autobahn test will be skipped"; exit 0; fi; \
	set -ex; \
	$(PYTHON) -m venv .venv-autobahn-tool; \
	.venv-autobahn-tool/bin/python -m pip install --quiet 'virtualenv<20.22'; \
	.venv-autobahn-tool/bin/virtualenv --quiet -p "$$python2" .venv-autobahn; \
	.venv-autobahn/bin/pip install --quiet --disable-pip-version-check 'autobahntestsuite==25.10.1'

# The benchmarks: make bench prints their tables and writes
# bench/out/shutdown-timeline.png.  Not part of make test (their --smoke runs
# are make smoke, in tests/bench).  The throughput figures need wrk
# (apt-get install wrk; without it a slower Python load generator is used),
# the instruction counts valgrind (apt-get install valgrind; skipped without).
# bench.asgi runs the ASGI servers of the bench extra beside gracesvc --asgi.
# BENCH_ARGS is passed to each script, e.g. make bench BENCH_ARGS=--smoke
BENCH_ARGS ?=

.PHONY: bench

$(BIN)/.bench-installed: $(BIN)/.installed setup.cfg
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[test,bench]'
	touch $@

bench: $(BIN)/.bench-installed
	@command -v wrk >/dev/null || echo "wrk not found: apt-get install wrk for the throughput figures"
	@command -v valgrind >/dev/null || echo "valgrind not found: apt-get install valgrind for the instruction counts"
	$(BIN)/python -m bench.shutdown $(BENCH_ARGS)
	$(BIN)/python -m bench.apps $(BENCH_ARGS)
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)
	$(BIN)/python -m bench.asgilayer $(BENCH_ARGS)
	$(BIN)/python -m bench.scale $(BENCH_ARGS)
	$(BIN)/python -m bench.instructions $(BENCH_ARGS)
	$(BIN)/python -m bench.layers $(BENCH_ARGS)
	@if command -v h2load >/dev/null; then $(BIN)/python -m bench.h2 $(BENCH_ARGS); else echo "h2load not found: apt-get install nghttp2-client for the HTTP/2 figures"; fi
	$(BIN)/python -m bench.asgi $(BENCH_ARGS)

# The property-based drain test with many random examples (make test runs a
# few seeded ones), about 1 s each; PROPERTY_SEED=n replays a run.
PROPERTY_EXAMPLES ?= 500
test-property: $(BIN)/.installed
	GRACESVC_PROPERTY_EXAMPLES=$(PROPERTY_EXAMPLES) \
	$(if $(PROPERTY_SEED),GRACESVC_PROPERTY_SEED=$(PROPERTY_SEED)) \
	$(BIN)/pytest -q tests/unit/core/test_drain_property.py tests/e2e/test_property.py --hypothesis-show-statistics
