# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch lies on local disk; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo demo-512 test docs lab lint clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[all,dev]'
	$(VENV)/bin/jupyter server extension enable --sys-prefix jupyter_server_proxy
	$(VENV)/bin/jupyter server extension enable --sys-prefix dask_labextension
	touch $@

demo: $(VENV)/.base
	$(PY) -m mgtoolkit demo --out runs/demo

# 512³ end to end on one machine: generate → FEM solve → tiled predict → summary (about 10 GiB).
demo-512: $(VENV)/.base
	bash examples/megavoxel_512.sh runs/demo512

test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

# The documentation site (docs/, mkdocs.yml) into site/; warnings are errors.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# JupyterLab with the dask dashboard reachable through it (jupyter-server-proxy at
# <lab>/proxy/<port>/status, where the notebooks point every cluster's dashboard link) and the
# Dask sidebar (dask-labextension).
$(VENV)/.lab: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[lab]'
	$(VENV)/bin/jupyter server extension enable --sys-prefix jupyter_server_proxy
	$(VENV)/bin/jupyter server extension enable --sys-prefix dask_labextension
	touch $@

lab: $(VENV)/.lab
	$(VENV)/bin/jupyter lab notebooks

lint: $(VENV)/.dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache site
