PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

LEGACY_SJ := $(VENV)/sj-legacy

.PHONY: install demo test lint bench gpu-check clean

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

# On a CUDA machine (<= 8 minutes): GPU tests, benchmarks, AMP training and DDP smoke -> docs/gpu_report.md.
# Without CUDA it exits 2 before doing anything. See docs/gpu_check.md.
gpu-check:
	$(PY) -m experiments.gpu_check

clean:
	rm -rf $(VENV) runs .pytest_cache
