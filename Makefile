# ublk-ts — see README.md. Every target builds what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := build

DEPS := node_modules/.deps-stamp
BUILD := dist/.build-stamp
LAYERS := sys aio target ublk tools
SOURCES := index.ts $(shell find $(LAYERS) tests bench examples -name '*.ts' 2>/dev/null) tsconfig.json

$(DEPS): package.json package-lock.json .taprc
	npm ci --no-audit --no-fund --loglevel=error
	# tap builds its runner for the plugins .taprc names (no TypeScript loader)
	npx tap build >/dev/null
	@touch $@

$(BUILD): $(DEPS) $(SOURCES)
	npx tsc -p .
	@touch $@

.PHONY: build test test-host test-vm test-ceph demo bench bench-aio bench-ublk bench-cpu bench-ceph clean

build: $(BUILD)

# Unit and host tests here, ublk tests in the VM (or natively with ublk_drv);
# ends with one "N passed, N failed, N skipped" line for the whole suite.
test: build
	tests/run-all

test-host: build
	tests/run-all --host-only

test-vm: build
	tests/run-all --vm-only

# The rbd target on a single-node Ceph cluster (tests/ceph/cluster): librbd IO
# on the host, devices in the VM. Not in `make test`: the suite has to stay
# well under 30 min on CI's 2 cores, and the device tests take ~3.5 min there.
test-ceph: build
	tests/run-all --ceph-only

demo: build
	tests/vm/ublk-env run -- demo/demo.sh

bench: bench-aio bench-ublk

bench-aio: build
	bench/aio/run

# ublksrv, the C reference server, is built once on the host (the VM sees its
# root read-only), and nbd-client installed there (bench/ublk/setup); when
# either fails the bench says why and runs without its lines.
# Single-threaded TCG: the bench's per-IO guest time assumes one host thread.
# The scratch disk's IO through QEMU's thread pool (aio=threads, QEMU's own
# default): with aio=native the last two whole runs stalled (and one of three
# shorter ones), fio waiting on the guest's disk while QEMU had nothing in
# flight on the host and nothing in its aio ring; with threads it ran through.
bench-ublk: build
	@bench/ublk/setup || true; \
	ublksrv=$$(bench/ublksrv/build) || ublksrv=''; \
	UBLK_UBLKSRV=$$ublksrv UBLK_VM_TCG_THREAD=$${UBLK_VM_TCG_THREAD:-single} UBLK_VM_DISK_AIO=$${UBLK_VM_DISK_AIO:-threads} \
	  tests/vm/ublk-env run --disk 3072 --timeout 5400 -- bench/ublk/run

# Guest instructions per request (bench/ublk/cpu boots the VM under TCG with
# -icount, whose clock counts instructions).
bench-cpu: build
	@ublksrv=$$(bench/ublksrv/build) || ublksrv=''; \
	UBLK_UBLKSRV=$$ublksrv bench/ublk/cpu

# The rbd target against the kernel rbd client on one image of a cluster
# started in the VM (tests/ceph/cluster); Ceph is installed by tests/host-setup.
bench-ceph: build
	@tests/host-setup
	tests/vm/ublk-env run --disk 3072 --timeout 3600 -- bench/ceph/run

clean:
	rm -rf dist .tap
