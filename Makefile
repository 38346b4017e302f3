# The two commands: `make test` and `make demo`. Everything else is a step they use.
SHELL := /bin/bash
PRESET ?= default
BUILD_DIR ?= build
SAFETUNE_HOME ?= $(HOME)/.cache/safetune
export SAFETUNE_HOME
JOBS ?= $(shell nproc)

.PHONY: all bootstrap configure build test demo install clean

all: build

bootstrap:
	@scripts/bootstrap.sh

$(BUILD_DIR)/build.ninja: CMakeLists.txt CMakePresets.json | bootstrap
	@cmake --preset $(PRESET) >/dev/null

configure: bootstrap
	@test -f $(BUILD_DIR)/build.ninja || cmake --preset $(PRESET)

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) --timeout 900

demo: build
	@scripts/demo.sh $(BUILD_DIR)

install: build
	@cmake --install $(BUILD_DIR) --prefix $(or $(PREFIX),$(BUILD_DIR)/_install)

clean:
	@rm -rf $(BUILD_DIR)
