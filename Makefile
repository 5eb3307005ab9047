# patchkit: two commands on a fresh machine (Python >= 3.10): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench docs clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall (and rebuild the C copy kernel) when the build files change.
$(VENV)/.installed-dev: pyproject.toml setup.py patchkit/core/backends/_copy.c patchkit/stitch/_kernel.c | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml setup.py patchkit/core/backends/_copy.c patchkit/stitch/_kernel.c | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[docs,tensorflow,geo,notebook]"
	touch $@

$(VENV)/.installed-demo: pyproject.toml setup.py patchkit/core/backends/_copy.c patchkit/stitch/_kernel.c | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[geo,notebook,tensorflow]"
	touch $@

# The extraction and prediction templates, headless through papermill, on the bundled synthetic GeoTIFF scene.
demo: $(VENV)/.installed-demo
	$(BIN)/patchkit run extract_patches --output-dir outputs
	$(BIN)/patchkit run predict_scene --output-dir outputs
	@echo "outputs/extract_patches.ipynb   the executed extraction notebook"
	@echo "outputs/patches.zarr            the patches (Zarr v3, coordinates and CRS): patchkit.open_patches('outputs/patches.zarr')"
	@echo "outputs/stitched.tif            the patches stitched back onto the map (GeoTIFF)"
	@echo "outputs/preview.png             the scene with its patch grid; outputs/patches.png: a mosaic of patches"
	@echo "outputs/predict_scene.ipynb     the executed prediction notebook: a small Keras model run over the scene"
	@echo "outputs/prediction.tif          its prediction on the scene's grid (GeoTIFF, CRS and transform of the scene)"
	@echo "outputs/prediction_preview.png  scene and prediction side by side; outputs/prediction_summary.json: the summary"
	@echo "outputs/demo_model.keras        the model it trained and saved: patchkit.load_model('outputs/demo_model.keras')"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# This site, into docs/_build/html, warnings as errors. A notebook of notebooks/ whose cells changed since its
# executed copy in docs/user_guide/ was made is executed again (papermill) and the copy replaced: commit it.
docs: $(VENV)/.installed-docs
	$(BIN)/python -m sphinx -b html -W --keep-going -D patchkit_execute_notebooks=1 docs docs/_build/html
	@echo "docs/_build/html/index.html"

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis docs/_build docs/api/generated
