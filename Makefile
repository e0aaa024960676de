# The two commands a new user needs (README): `make demo` and `make test`. Both set up everything.
SHELL := /bin/bash
export DAGSTER_HOME ?= $(CURDIR)/.local/dagster_home
export MOSAIC_STAC_API_URL ?= http://127.0.0.1:8082
PY := .venv/bin/python

.PHONY: setup stac-start stac-stop demo test lint dev clean bench bench-cases

setup:
	@scripts/setup.sh

stac-start:
	@scripts/stac_server.sh start

stac-stop:
	@scripts/stac_server.sh stop

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $@

demo: setup stac-start $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m mosaic_assets.run demo-data
	$(PY) -m mosaic_assets.run build

dev: setup stac-start $(DAGSTER_HOME)/dagster.yaml
	MOSAIC_SENSORS=running .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	scripts/stac_server.sh reset || true
	rm -rf .local

# Benchmark harness (benchmarks/README.md): quick size by default, BENCH_SIZE=large for the real
# measurement. Its own STAC API instance (port, database, data dir), so it never touches the demo's.
BENCH_SIZE ?= quick
BENCH_STAC_PORT ?= 8095
BENCH_STAC_PG_PORT ?= 5455

bench: setup
	$(PY) -m pip install --quiet -r requirements/bench.txt
	STAC_PORT=$(BENCH_STAC_PORT) STAC_PG_PORT=$(BENCH_STAC_PG_PORT) STAC_DATA_DIR=$(CURDIR)/.local/bench-stac \
	  scripts/stac_server.sh start
	$(PY) -m benchmarks.run --size $(BENCH_SIZE) --api http://127.0.0.1:$(BENCH_STAC_PORT) \
	  --postgres "host=127.0.0.1 port=$(BENCH_STAC_PG_PORT) user=postgres password=$${STAC_PG_PASSWORD:-stac}"
	$(MAKE) bench-cases

# The composites (masked median against odc-stac) and cube (against its sources alone) benchmarks: no STAC
# API, ~8 and ~5 min; 2 GB per writer, as every round of the composites figures (benchmarks/README.md).
bench-cases: setup
	$(PY) -m pip install --quiet -r requirements/bench.txt
	MOSAIC_WORKER_MEMORY_GB=$${MOSAIC_WORKER_MEMORY_GB:-4} $(PY) -m benchmarks.composites
	$(PY) -m benchmarks.cube
