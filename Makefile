# etun: one job per target. `make demo` and `make test` set up everything on a fresh Debian (root).

# Debian's own Python: its extension modules carry no RUNPATH, which the one-file binary needs.
PYTHON   ?= /usr/bin/python3.11
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
APT_PKGS := python3.11 python3.11-venv python3.11-dev gcc make libssl-dev pkg-config \
            iproute2 iputils-ping iperf3 nftables ethtool tcpdump procps patchelf util-linux systemd \
            debootstrap qemu-user-static binfmt-support rsync man-db lintian systemd-container \
            clang-14 libclang-rt-14-dev keepalived
MACHINE  := $(shell uname -m)
ARCH     ?= $(MACHINE)
# The aarch64 build root (Debian 12 arm64, run through qemu-user) lives outside the tree, so every
# clone on this machine (CI's too) reuses it; `make aarch64-root-clean` removes it.
AARCH64_ROOT ?= /var/cache/etun/aarch64-root
# A Debian 12 root with systemd that tests/packaging/test_deb.py boots to install the package in.
SYSTEMD_ROOT ?= /var/cache/etun/amd64-systemd-root
VERSION  := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' etun/__init__.py)
# staticx publishes wheels for x86_64 only; elsewhere pip builds its bootloader with SCons and musl-gcc.
STATICX_BUILD_DEPS := $(if $(filter x86_64,$(MACHINE)),,scons==4.11.1 wheel==0.48.0)

.PHONY: build demo test bench binary binary-aarch64 aarch64-root-clean man deb systemd-root lint clean debug deps \
        fuzz-build fuzz fuzz-repro fuzz-seeds soak

build: .stamp-venv
	$(PIP) install --no-build-isolation --no-deps -e . -q
	@$(PY) -c "from etun import _fast; print('built etun._fast against', _fast.openssl_version())"

# dist/etun bundles the host's libcrypto: as root, libssl3 and libssl-dev (and the openssl tool, if
# installed) are brought to Debian 12's newest when last checked more than a week ago, as
# build-aarch64.sh does in the arm64 root, so both binaries carry the same OpenSSL fixes. Offline or
# with apt busy: one warning, and the build goes on. Not inside that root (it has /.etun-root):
# build-aarch64.sh has just done it there, and apt under qemu is slow.
LIBSSL_CHECKED := /var/cache/etun/host-libssl-checked
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@if [ "$$(id -u)" = 0 ] && [ ! -e /.etun-root ] && [ -z "$$(find $(LIBSSL_CHECKED) -mtime -7 2>/dev/null)" ]; then \
	  have=$$(dpkg-query -W -f='$${Version}' libssl3); \
	  if apt-get update -qq && new=$$(apt-cache policy libssl3 | sed -n 's/^ *Candidate: //p') && \
	     { [ "$$new" = "$$have" ] || { echo "upgrading libssl3 libssl-dev: $$have -> $$new (dist/etun bundles libcrypto)"; \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --only-upgrade libssl3 libssl-dev openssl >/dev/null; }; }; \
	  then mkdir -p $(dir $(LIBSSL_CHECKED)) && touch $(LIBSSL_CHECKED); \
	  else echo "make deps: cannot bring libssl3 to Debian's newest (offline? apt busy?); dist/etun bundles $$have" >&2; fi; \
	fi

.stamp-venv: pyproject.toml requirements-dev.txt | deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip "setuptools>=74.1" "Cython>=3.0.10"
	$(PIP) install -q -r requirements-dev.txt
	touch $@

demo: build
	$(PY) -m tests.e2e.demo

test: binary binary-aarch64 deb systemd-root fuzz-build
	ETUN_REQUIRE_E2E=$${ETUN_REQUIRE_E2E:-1} ETUN_SYSTEMD_ROOT=$(SYSTEMD_ROOT) $(PY) -m pytest tests -q

bench: build
	$(PY) -m etun.cli bench
	$(PY) -m tests.e2e.bench

ifeq ($(ARCH),$(MACHINE))
binary: build
	$(if $(STATICX_BUILD_DEPS),$(PIP) install -q $(STATICX_BUILD_DEPS))
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PIP) install -q --no-build-isolation "pyinstaller==6.22.3" "staticx==0.14.2"
	rm -rf build/pyinstaller dist/etun dist/etun-dynamic dist/etun-dir
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist \
	    --workpath build/pyinstaller packaging/etun.spec
	@# Uncompressed: the start-up then needs no decompression (0.2 s instead of 0.5 s to --version).
	$(VENV)/bin/staticx --strip --no-compress dist/etun-dynamic dist/etun 2>&1 | grep -v RUNPATH || true
	chmod 755 dist/etun
	$(PY) packaging/build_info.py dist/etun-dynamic dist/etun dist/etun-dir > dist/etun.build-info
	@cat dist/etun.build-info
else ifeq ($(ARCH),aarch64)
binary: binary-aarch64
else
binary:
	@echo "make binary: ARCH=$(ARCH) is not built here (on $(MACHINE): $(MACHINE) or aarch64)" >&2; exit 2
endif

# dist/etun-aarch64: `make binary` inside $(AARCH64_ROOT) under qemu-user (packaging/build-aarch64.sh).
binary-aarch64: | deps
	packaging/build-aarch64.sh $(AARCH64_ROOT)

aarch64-root-clean:
	packaging/build-aarch64.sh $(AARCH64_ROOT) --clean

systemd-root: | deps
	tests/packaging/systemd-root.sh $(SYSTEMD_ROOT)

# etun(8) and etun.toml(5) from the Markdown manual in docs/.
man: | deps
	/usr/bin/python3 packaging/manpage.py docs/MANUAL.md build/man/etun.8
	/usr/bin/python3 packaging/manpage.py docs/CONFIG.md build/man/etun.toml.5

# dist/etun_$(VERSION)_amd64.deb and _arm64.deb from the two unpacked builds; dpkg-deb, no network.
# A binary missing or older than a source it is built from is rebuilt first, and only then: an
# up-to-date dist/etun-aarch64 is packaged as it is (`make test` builds both before this). The
# tool pins in `binary` are not among the sources: after changing one, run make binary binary-aarch64.
BINARY_SOURCES := pyproject.toml packaging/etun.spec packaging/etun_main.py \
                  $(wildcard etun/*.py etun/*.pyx etun/*.pxd etun/*.pxi etun/*.h)
$(if $(filter grouped-target,$(.FEATURES)),,$(error GNU make 4.3 or later is needed (grouped targets, &:)))
dist/etun dist/etun-dir/etun &: $(BINARY_SOURCES)
	$(MAKE) binary ARCH=$(MACHINE)
dist/etun-aarch64 dist/etun-aarch64-dir/etun &: $(BINARY_SOURCES) packaging/build-aarch64.sh
	$(MAKE) binary-aarch64
deb: man dist/etun-dir/etun dist/etun-aarch64-dir/etun
	/usr/bin/python3 packaging/deb.py amd64 dist/etun-dir build/man dist
	/usr/bin/python3 packaging/deb.py arm64 dist/etun-aarch64-dir build/man dist

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
	nice $(PY) fuzz/run.py full --runs=$${RUNS:-10000000} --max-minutes=$${MAX_MINUTES:-0} --workers=$${WORKERS:-1} $(TARGETS)

fuzz-repro: fuzz-build
	$(PY) fuzz/run.py repro $(TARGET) $(CRASH)

fuzz-seeds: build
	$(PY) fuzz/capture.py

# 30 minutes of traffic under loss, reordering, blackouts and restarts (docs/RELIABILITY.md).
soak: binary
	nice $(PY) -m tests.e2e.soak --minutes=$${MINUTES:-30}

clean:
	rm -rf build dist *.egg-info etun/_fast.c etun/*.so etun/_fast.html .stamp-* .pytest_cache .hypothesis
