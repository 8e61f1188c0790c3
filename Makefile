# The README's two commands are `make demo` and `make test`; both set up .venv first.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
# Reinstall only when the package definition changed (or the venv is new).
STAMP      := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv export-check test demo lab export clean

venv: $(STAMP)

$(STAMP): settings.ini setup.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing $(TORCH_SPEC) first (so no other package pulls a different build)"
	$(PY) -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]" --config-settings editable_mode=compat
	$(PY) -m ipykernel install --sys-prefix --name factor_forecasting --display-name "Python (factor_forecasting)" >/dev/null
	@touch $(STAMP)
	@echo "environment ready: $(VENV) (kernel 'factor_forecasting' registered)"

# nbs/ is the source: fail when nbdev_export would change the committed package.
export-check: $(STAMP)
	@tmp=$$(mktemp -d) && cp -r settings.ini nbs factor_forecasting $$tmp/ && \
	  (cd $$tmp && $(CURDIR)/$(VENV)/bin/nbdev_export) && \
	  if diff -r -q -x __pycache__ factor_forecasting $$tmp/factor_forecasting; then rm -rf $$tmp; \
	  else echo "factor_forecasting/ is out of sync with nbs/: run '$(VENV)/bin/nbdev_export' and commit"; rm -rf $$tmp; exit 1; fi
	@echo "factor_forecasting/ is in sync with nbs/"

test: export-check
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/ff demo

# Jupyter refuses to run as root unless told (containers and CI machines often are root).
LAB_AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser --notebook-dir=nbs $(LAB_AS_ROOT)

export: $(STAMP)
	$(VENV)/bin/nbdev_export && $(VENV)/bin/nbdev_clean

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
