# Image to Mesh — developer commands. From a fresh clone:
#   make demo      set up .venv, then image -> mesh in headless Blender: out/<name>.blend/.png/.glb
#   make test      set up .venv, then the whole test suite
#   make package   the installable extension zip(s) in dist/
#   make blender-matrix   install each Linux zip into each Blender line's bpy and generate (scripts/blender_matrix.py)
#   make train-demo   train (or continue training) the demo model; make export-demo copies it to models/demo
#   make gpu-check on a CUDA machine: parity with the CPU, the float16 bound, image -> mesh timings and memory
# Variables: MODEL=folder (demo: a local model), IMAGE=file (demo input),
#   PLATFORMS="linux-x64 windows-x64 macos-arm64", BLENDER_LINES="4.2 4.5-5.0 5.2" (package),
#   PYTHON313=python3.13, MATRIX_DIR=folder (blender-matrix: Python 3.13 for Blender 5.2, where its environments live),
#   TORCH_SOURCE=folder-or-index-url (package: where the CPU torch wheels come from),
#   PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" (venv: e.g. the small CPU torch),
#   TRAIN_DIR=folder (train-demo/export-demo: the run's checkpoints; default ~/.cache/image_to_mesh/training/demo),
#   TRAIN_ARGS="--threads 1" (train-demo: more options for python -m training.train).
#   GPU_PYTHON=python (gpu-check: one whose torch is a CUDA build; .venv's is the CPU one).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
PIP_ARGS ?=

PLATFORMS ?= linux-x64
BLENDER_LINES ?= 4.2 4.5-5.0 5.2
TORCH_SOURCE ?=
PYTHON313 ?= python3.13
MATRIX_DIR ?= $(HOME)/.cache/image_to_mesh/blender-matrix

# What the bpy wheel needs on a bare Debian/Ubuntu machine (docs/architecture.md, Tests).
SYSTEM_LIBS := libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri libx11-6 libxi6 libxrender1 \
	libxfixes3 libxext6 libsm6 libice6 libxkbcommon0

.PHONY: test demo package blender-matrix venv system-libs examples gpu-check clean train-demo export-demo

test: system-libs venv
	$(PY) -m pytest -q

demo: system-libs venv
	$(PY) scripts/demo.py $(if $(IMAGE),--image "$(IMAGE)") $(if $(MODEL),--model "$(MODEL)")

package: venv
	$(PY) scripts/package.py --platforms $(PLATFORMS) --blender-lines $(BLENDER_LINES) \
		$(if $(TORCH_SOURCE),--torch-source "$(TORCH_SOURCE)")

blender-matrix: system-libs venv
	$(PY) scripts/blender_matrix.py --work-dir "$(MATRIX_DIR)" --python3.11 "$(PYTHON)" --python3.13 "$(PYTHON313)" \
		$(if $(TORCH_SOURCE),--torch-source "$(TORCH_SOURCE)")

TRAIN_DIR ?= $(HOME)/.cache/image_to_mesh/training/demo

# Resumes from TRAIN_DIR; with no run there yet, continues from the committed models/demo (or starts afresh).
train-demo: venv
	$(PY) -m training.train --preset demo --out "$(TRAIN_DIR)" $(if $(wildcard models/demo/model.ckpt),--init models/demo) $(TRAIN_ARGS)

export-demo: venv
	$(PY) -m training.export --run "$(TRAIN_DIR)" --to models/demo

gpu-check: venv
	$(or $(GPU_PYTHON),$(PY)) benchmarks/gpu_check.py $(if $(MODEL),--model "$(MODEL)")

examples: system-libs venv
	$(PY) scripts/make_examples.py

venv: $(STAMP)

$(STAMP): requirements/core.txt requirements/dev.txt requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found): install it, or run make PYTHON=/path/to/python3.11"; exit 1; }
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
		echo "$(VENV) is not Python 3.11: remove it and run make again"; exit 1; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check $(PIP_ARGS) -r requirements/dev.txt -c requirements/constraints.txt
	touch $(STAMP)

system-libs:
	@command -v dpkg >/dev/null || exit 0; \
	missing=""; for lib in $(SYSTEM_LIBS); do dpkg -s $$lib >/dev/null 2>&1 || missing="$$missing $$lib"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing the system libraries the bpy module needs:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1 || \
		{ apt-get update -q && apt-get install -y --no-install-recommends $$missing; }; \
	else \
		echo "The bpy module needs these system libraries:$$missing"; \
		echo "Install them with:  sudo apt-get install -y$$missing"; \
		exit 1; \
	fi

clean:
	rm -rf build dist out
