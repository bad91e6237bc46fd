# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extra arguments for twistd gracesvc, e.g. make run ARGS="--ping-delay 1"
ARGS ?=

.PHONY: run test clean

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

test: $(BIN)/.installed
	$(BIN)/mypy gracesvc
	$(BIN)/pytest -q
	$(BIN)/trial tests

clean:
	rm -rf $(VENV) *.egg-info _trial_temp twisted/plugins/dropin.cache
