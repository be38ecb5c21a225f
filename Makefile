# The two commands of the README:
#   make notebooks  -> set up .venv, execute every notebook top to bottom (full profile, embedded model)
#   make test       -> set up .venv, run pytest (unit tests + nbmake on every notebook, quick profile)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= full
NB_OUT ?= notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup notebooks test clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The profile goes in through the T2I_PROFILE variable only: a papermill `-p PROFILE` would write an
# injected `PROFILE = "full"` cell into the committed notebooks, and nbmake (CI, quick profile)
# would then run them in the full profile.
notebooks: setup
	mkdir -p $(NB_OUT) results
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb ($(PROFILE) profile)"; \
		HF_HUB_OFFLINE=1 T2I_PROFILE=$(PROFILE) $(PY) -m papermill --cwd notebooks \
			$$nb $(NB_OUT)/$$(basename $$nb) || exit 1; \
	done

test: setup
	HF_HUB_OFFLINE=1 T2I_PROFILE=quick $(PY) -m pytest tests --nbmake notebooks --nbmake-timeout=1200 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
