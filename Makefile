# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(VENV)/bin/pip
PORT ?= 8001

.PHONY: venv install install-test test demo demo-db clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# The demo needs no torch: vectors are shipped, the built-in image model is pure NumPy.
install: venv
	$(PIP) install --quiet -e .

# torch first, pinned, so llm-clip / sentence-transformers take the CPU build.
install-test: venv
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test]'

test: install-test
	$(VENV)/bin/pytest

# Rebuilt from the shipped Parquet every time, so the demo always matches demo/data/.
demo-db: install
	rm -f demo.db demo.db-wal demo.db-shm
	$(VENV)/bin/datasette-embeddings load demo.db demo/data
	$(VENV)/bin/datasette-embeddings links demo.db --from met --to brooklyn --model sentence-transformers/all-MiniLM-L6-v2 --k 5 --quiet
	$(VENV)/bin/datasette-embeddings judgements import demo.db demo/judgements.csv
	$(VENV)/bin/datasette-embeddings map demo.db

demo: demo-db
	$(VENV)/bin/datasette serve demo.db --metadata metadata.yml --template-dir templates \
		--static previews:demo/previews --host 127.0.0.1 --port $(PORT) \
		--setting sql_time_limit_ms 10000

clean:
	rm -rf $(VENV) build dist *.egg-info demo.db
