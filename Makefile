# etun: one job per target. `make demo` and `make test` set up everything on a fresh Debian (root).

# Debian's own Python: its extension modules carry no RUNPATH, which the one-file binary needs.
PYTHON   ?= /usr/bin/python3.11
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
APT_PKGS := python3.11 python3.11-venv python3.11-dev gcc make libssl-dev pkg-config \
            iproute2 iputils-ping iperf3 nftables ethtool tcpdump procps patchelf util-linux systemd \
            clang-14 libclang-rt-14-dev

.PHONY: build demo test bench binary lint clean debug deps fuzz-build fuzz fuzz-repro fuzz-seeds soak

build: .stamp-venv
	$(PIP) install --no-build-isolation --no-deps -e . -q
	@$(PY) -c "from etun import _fast; print('built etun._fast against', _fast.openssl_version())"

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

.stamp-venv: pyproject.toml requirements-dev.txt | deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip "setuptools>=74.1" "Cython>=3.0.10"
	$(PIP) install -q -r requirements-dev.txt
	touch $@

demo: build
	$(PY) -m tests.e2e.demo

test: binary fuzz-build
	ETUN_REQUIRE_E2E=$${ETUN_REQUIRE_E2E:-1} $(PY) -m pytest tests -q

bench: build
	$(PY) -m etun.cli bench
	$(PY) -m tests.e2e.bench

binary: build
	$(PIP) install -q "pyinstaller==6.22.3" "staticx==0.14.2"
	rm -rf build/pyinstaller dist/etun dist/etun-dynamic
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist \
	    --workpath build/pyinstaller packaging/etun.spec
	@# Uncompressed: the start-up then needs no decompression (0.2 s instead of 0.5 s to --version).
	$(VENV)/bin/staticx --strip --no-compress dist/etun-dynamic dist/etun 2>&1 | grep -v RUNPATH || true
	chmod 755 dist/etun
	$(PY) packaging/build_info.py dist/etun-dynamic dist/etun > dist/etun.build-info
	@cat dist/etun.build-info

lint: build
	$(VENV)/bin/ruff check etun tests packaging fuzz
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/cython-lint etun/*.pyx etun/*.pxi etun/*.pxd
	mkdir -p build && $(PY) -m cython -3 --annotate etun/_fast.pyx -o build/_fast_annotated.c >/dev/null
	@echo "lint clean; where the datapath touches Python: build/_fast_annotated.html"

debug: .stamp-venv
	CFLAGS="-O0 -g -DCYTHON_TRACE_NOGIL=1" $(PIP) install --no-build-isolation --no-deps -e . -q

# Fuzzing (docs/RELIABILITY.md): a sanitizer build in build/fuzz, then each target of fuzz/.
fuzz-build: .stamp-fuzz
.stamp-fuzz: .stamp-venv requirements-fuzz.txt fuzz/build.sh etun/*.pyx etun/*.pxi etun/*.pxd etun/*.h
	$(PIP) install -q -r requirements-fuzz.txt
	PY=$(PY) sh fuzz/build.sh
	touch $@

fuzz: fuzz-build
	nice $(PY) fuzz/run.py full --runs=$${RUNS:-10000000} --max-minutes=$${MAX_MINUTES:-0} $(TARGETS)

fuzz-repro: fuzz-build
	$(PY) fuzz/run.py repro $(TARGET) $(CRASH)

fuzz-seeds: build
	$(PY) fuzz/capture.py

# 30 minutes of traffic under loss, reordering, blackouts and restarts (docs/RELIABILITY.md).
soak: binary
	nice $(PY) -m tests.e2e.soak --minutes=$${MINUTES:-30}

clean:
	rm -rf build dist *.egg-info etun/_fast.c etun/*.so etun/_fast.html .stamp-* .pytest_cache .hypothesis
