# gpupool: `make run` runs the main job, `make test` runs every test. Both set themselves up on a
# fresh Debian 12 machine (installing packages when missing, configuring, building).
BUILD   ?= build
TRACES  ?= ../shared/traces
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: deb bench-scale all bootstrap configure build npm web test run sim-demo bench soak fuzz clean format

all: build

bootstrap:
	@scripts/bootstrap

$(BUILD)/build.ninja: | bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: bootstrap $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# npm packages the tests use, installed from their committed lock files (tests/kafka: Apache
# Kafka for the real-broker test; web/: the dashboard's toolchain).
NPM_DIRS := tests/kafka web
npm: bootstrap
	@for d in $(NPM_DIRS); do \
	  [ -d $$d/node_modules ] && [ $$d/node_modules -nt $$d/package-lock.json ] || \
	    (cd $$d && npm ci --no-audit --no-fund --loglevel=error) || exit 1; \
	done

# The dashboard: built with Vite into web/dist, which `gpupool server` serves at /.
web: npm
	cd web && npm run build --silent

# Every test: ctest (unit, property, CLI and end-to-end tests), then each libFuzzer harness
# briefly on its seed corpus (a clang build of its own in build-fuzz).
FUZZ_SECONDS ?= 10
test: build web
	cd $(BUILD) && GPUPOOL_TRACES=$(abspath $(TRACES)) ctest --output-on-failure -j $(JOBS) --timeout 600
	scripts/fuzz brief $(FUZZ_SECONDS)

# The harnesses at length: FUZZ_RUNS executions each (docs/reliability.md has a long run's figures).
FUZZ_RUNS ?= 10000000
fuzz: bootstrap
	scripts/fuzz long $(FUZZ_RUNS)

# The Debian package: build/gpupool_VERSION_ARCH.deb (CPack), with the dashboard, systemd units,
# their configuration in /etc/gpupool, the man page and bash completion.
deb: build web
	cd $(BUILD) && cpack -G DEB
	@ls $(BUILD)/gpupool_*.deb

# The main job: first the scheduler on its own (a 1-second replay of the Philly trace and the
# seed article's example), then a whole pool on this machine (server + agents with simulated
# GPUs, real processes), which prints the commands to submit a job; Ctrl-C stops it.
run: sim-demo web
	@echo
	$(BUILD)/gpupool dev --fleet examples/fleets/mixed.toml --data-dir $(DEV_DIR)

DEV_DIR ?= /tmp/gpupool-dev

# The scheduler without a pool: replay the Philly trace on 2,048 V100s, then the seed article's
# four-node example through `place --explain`.
sim-demo: build
	$(BUILD)/gpupool sim --fleet 256x8xV100 --trace $(TRACES)/pollux-philly/philly.csv --policy fifo
	@echo
	$(BUILD)/gpupool place --fleet examples/fleets/seed-4-nodes.toml --policy least-loaded --explain

bench: build
	GPUPOOL_TRACES=$(abspath $(TRACES)) $(BUILD)/bench/gpupool_bench $(BENCH_ARGS)
	python3 bench/pool_bench.py $(BUILD)/gpupool 2000
	python3 bench/sim_scale.py $(BUILD)/gpupool --traces $(abspath $(TRACES))
	python3 bench/driver_start.py $(BUILD)/gpupool 20

# The live pool at fleet scale: a server and 10,000 hollow nodes on this machine, 100,000 jobs
# as arrays (bench/scale.py; figures in docs/benchmarks.md). SCALE_ARGS to change the sizes.
SCALE_ARGS ?= --nodes 10000 --jobs 100000 --arrays 10 --duration 60
bench-scale: build
	python3 bench/scale.py $(BUILD)/gpupool $(SCALE_ARGS) --out $(BUILD)/bench-scale.json

# The long fault-injection run: the fault, crash and hostile-input tests, SOAK_ROUNDS times over.
SOAK_ROUNDS ?= 20
soak: build
	@for i in $$(seq 1 $(SOAK_ROUNDS)); do \
	  echo "== soak round $$i of $(SOAK_ROUNDS)"; \
	  python3 tests/e2e/fault_test.py $(BUILD)/gpupool || exit 1; \
	  python3 tests/e2e/crash_test.py $(BUILD)/gpupool || exit 1; \
	  python3 tests/e2e/hostile_test.py $(BUILD)/gpupool || exit 1; \
	done

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD) build-fuzz
