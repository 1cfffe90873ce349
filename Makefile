# innet: `make demo` sets up a fresh Debian 12 machine (as root) and runs the demo;
# `make test` sets up the same and runs the tests.
VENV    ?= .venv
PY      := $(VENV)/bin/python
DEB     := clang llvm libbpf-dev libbpf1 bpftool iproute2 ethtool mininet bridge-utils iperf3 \
           iputils-ping tcpdump python3-venv python3-pip util-linux procps \
           nodejs chromium chromium-driver
STAMP   := $(VENV)/.installed
# the status page's third-party JS modules (controller/api/static/package-lock.json), from npm
PAGE    := controller/api/static

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(PAGE)/package-lock.json
	@echo "[setup] Debian packages: $(DEB)"
	@missing=$$(for p in $(DEB); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi
	@echo "[setup] Python virtual environment in $(VENV) (with Debian's mininet module)"
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@echo "[setup] the status page's JS modules into $(PAGE)/node_modules (npm registry)"
	npm ci --prefix $(PAGE) --no-audit --no-fund --loglevel=error
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/innet demo

test: setup
	$(PY) -m pytest -v

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/nfrouter.py
	$(PY) bench/tables.py
	$(PY) bench/priority.py
	$(PY) bench/heavy_hitters.py
	$(PY) bench/allocator.py
	$(PY) bench/chains.py
	$(PY) bench/prio_chain.py
	$(PY) bench/api.py

clean:
	-mn -c >/dev/null 2>&1
	rm -rf /sys/fs/bpf/innet /run/innet   # pins and run state of every scope (desired state stays in /var/lib/innet)
