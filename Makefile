# The two commands of the README:
#   make notebooks  -> set up .venv, execute every notebook top to bottom (full profile, embedded model)
#   make test       -> set up .venv, run pytest (unit tests + nbmake on every notebook, quick profile)
#
# A real model: T2I_MODEL_ID=stable-diffusion-v1-5/stable-diffusion-v1-5 make notebooks
#   leaves the Hugging Face hub online (HF_HUB_OFFLINE=1 is set only for the embedded model and the
#   tests) and writes the executed notebooks to outputs/<model-slug>/notebooks/ (override with
#   NB_OUT=...; never notebooks/, whose committed copies carry the embedded model's outputs).
# Compute nodes without network (clusters): download once on a node with network, into the cache
# the compute nodes share (HF_HOME), then run offline:
#   .venv/bin/hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --exclude "*.ckpt"
#   HF_HUB_OFFLINE=1 T2I_MODEL_ID=stable-diffusion-v1-5/stable-diffusion-v1-5 make notebooks
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= full
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

# The model: empty, "embedded", "default" or the embedded model's folder mean the embedded model.
REAL_MODEL := $(filter-out embedded default %tiny-shapes-sd %tiny-shapes-sd/,$(strip $(T2I_MODEL_ID)))
ifeq ($(REAL_MODEL),)
HUB_ENV := HF_HUB_OFFLINE=1
NB_OUT ?= notebooks
else
HUB_ENV :=
NB_OUT ?= outputs/$(subst /,--,$(REAL_MODEL))/notebooks
ifneq ($(filter notebooks,$(MAKECMDGOALS)),)
ifeq ($(abspath $(NB_OUT)),$(abspath notebooks))
$(error NB_OUT=$(NB_OUT) would overwrite the committed notebooks with $(REAL_MODEL)'s outputs: choose another folder)
endif
endif
endif

.PHONY: setup notebooks test clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps open_clip_torch==3.3.0  # CLIP's BPE merges only (requirements.txt says why)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The profile goes in through the T2I_PROFILE variable only: a papermill `-p PROFILE` would write an
# injected `PROFILE = "full"` cell into the committed notebooks, and nbmake (CI, quick profile)
# would then run them in the full profile. The model goes in the same way (T2I_MODEL_ID).
notebooks: setup
	mkdir -p $(NB_OUT) results
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb ($(PROFILE) profile, model: $(or $(REAL_MODEL),embedded))"; \
		$(HUB_ENV) T2I_MODEL_ID='$(REAL_MODEL)' T2I_PROFILE=$(PROFILE) $(PY) -m papermill --cwd notebooks \
			$$nb $(NB_OUT)/$$(basename $$nb) || exit 1; \
	done
	$(PY) scripts/shrink_figures.py  # inline figures re-encoded small (the tree-size rule)

test: setup
	HF_HUB_OFFLINE=1 T2I_MODEL_ID= T2I_PROFILE=quick $(PY) -m pytest tests --nbmake notebooks --nbmake-timeout=1200 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
