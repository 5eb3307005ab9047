# patchkit: two commands on a fresh machine (Python >= 3.10): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall (and rebuild the C copy kernel) when the build files change.
$(VENV)/.installed-dev: pyproject.toml setup.py patchkit/core/backends/_copy.c | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-demo: pyproject.toml setup.py patchkit/core/backends/_copy.c | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[geo,notebook]"
	touch $@

# The extraction template, headless through papermill, on the bundled synthetic GeoTIFF scene.
demo: $(VENV)/.installed-demo
	$(BIN)/patchkit run extract_patches --output-dir outputs
	@echo "outputs/extract_patches.ipynb   the executed notebook"
	@echo "outputs/patches.zarr            the patches (Zarr v3, coordinates and CRS): patchkit.open_patches('outputs/patches.zarr')"
	@echo "outputs/stitched.tif            the patches stitched back onto the map (GeoTIFF)"
	@echo "outputs/preview.png             the scene with its patch grid; outputs/patches.png: a mosaic of patches"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis
