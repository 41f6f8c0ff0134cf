# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch and torchvision are pinned here; a bare `torch` would pull a multi-GB build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test,dev,data,train,reduce,classifier,tokenize,eval,fid,vlm]"
	touch $(STAMP)

install: $(STAMP)

# the main job: fetches the default photos and LPIPS weights into the cache (the only step that
# downloads), codes the photos with every shipped tokenizer and with JPEG/WebP/AVIF, prints the
# table and writes demo/report.html
demo: $(STAMP)
	$(VENV)/bin/vtok data prepare
	$(VENV)/bin/vtok demo --out demo

# the tests read the LPIPS weights from the cache (fetched once, a no-op when present); they
# need no photos from it
test: $(STAMP)
	$(VENV)/bin/vtok data prepare --lpips
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/quant_vs_vqpt.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
