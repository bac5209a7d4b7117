PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

LEGACY_SJ := $(VENV)/sj-legacy

.PHONY: install demo test lint bench gpu-wheels gpu-offline-check gpu-check clean

# The tested environment: pyproject.toml's ranges, pinned by constraints.txt. Re-installs when either changes.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.train -c experiments/configs/demo_digits.yaml

# SpikingJelly 0.0.0.0.14 beside 2.x (pure Python, 5 MB), for the side-by-side compatibility test.
$(LEGACY_SJ): $(STAMP)
	$(PY) -m pip install -q --upgrade --no-deps --target $(LEGACY_SJ) spikingjelly==0.0.0.0.14 \
		|| echo "could not install spikingjelly 0.0.0.0.14: its test will skip"

# pytest-xdist: one worker per core (-n auto), each test process on one torch thread (tests/conftest.py);
# --dist loadgroup keeps the modules of tests/conftest.py's ONE_WORKER together, the rest goes where a core is
# free. `pytest tests/test_x.py` alone stays in one process.
test: $(STAMP) $(LEGACY_SJ)
	$(PY) -m pytest -q -n auto --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m experiments.bench_overhead

# The GPU machine (docs/gpu_check.md) has no network and no .venv; its python3 (3.12) lacks SpikingJelly and
# torch-pruning. Here, with PyPI: download their wheels (and their needs the image lacks) into .whl/, checked.
GPU_WHEELS := .whl
gpu-wheels: $(STAMP)
	$(PY) -m experiments.gpu_wheels --dest $(GPU_WHEELS)

# Here, no index: a fresh venv of torch from local wheels plus the carried ones; the plan's dry run, the no-CUDA
# exit, the offline install and a smoke run of the library on them. TORCH_LINKS: folders holding a torch wheel.
TORCH_LINKS ?= /opt/wheels /opt/pypi/files
gpu-offline-check: $(STAMP)
	$(PY) -m experiments.gpu_offline_check --wheels $(GPU_WHEELS) $(addprefix --find-links ,$(TORCH_LINKS))

# On the GPU machine, with its python3 (one device call of at most 10 minutes; the command and `carry` are in
# docs/gpu_check.md): installs .whl offline, then GPU tests, benchmarks, AMP training and DDP smoke ->
# docs/gpu_report.md (and $(OUT) if set). Without CUDA it exits 2 before doing anything.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) -m experiments.gpu_check --wheels $(GPU_WHEELS) $(if $(OUT),--out $(OUT))

clean:
	rm -rf $(VENV) runs .pytest_cache
