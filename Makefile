# gpupool: `make run` runs the main job, `make test` runs every test. Both set themselves up on a
# fresh Debian 12 machine (installing packages when missing, configuring, building).
BUILD   ?= build
TRACES  ?= ../shared/traces
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all bootstrap configure build test run bench clean format

all: build

bootstrap:
	@scripts/bootstrap

$(BUILD)/build.ninja: | bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: bootstrap $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && GPUPOOL_TRACES=$(abspath $(TRACES)) ctest --output-on-failure -j $(JOBS) --timeout 600

# The main job, for now: replay the Philly trace on 2,048 V100s, then the seed article's
# four-node example through `place --explain`.
run: build
	$(BUILD)/gpupool sim --fleet 256x8xV100 --trace $(TRACES)/pollux-philly/philly.csv --policy fifo
	@echo
	$(BUILD)/gpupool place --fleet examples/fleets/seed-4-nodes.toml --policy least-loaded --explain

bench: build
	GPUPOOL_TRACES=$(abspath $(TRACES)) $(BUILD)/bench/gpupool_bench $(BENCH_ARGS)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD)
