# etld: build, test and install as a systemd service.
#
#   make                      build bin/etld
#   make test                 the CI checks (.ci/run)
#   sudo make install         binary, unit, sysusers/tmpfiles, example pipeline
#   make install DESTDIR=/tmp/pkg   stage into a directory (packaging)
#   sudo make uninstall       remove what install put in place (not /etc/etld, not state)
#
# The unit's ExecStart= follows BINDIR. After `sudo make install`:
#   sudo systemd-sysusers && sudo systemd-tmpfiles --create etld.conf
#   sudo systemctl daemon-reload && sudo systemctl enable --now etld

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR ?= /etc
DESTDIR    ?=
GO         ?= go
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build test install uninstall verify-unit clean

all: build

# CGO_ENABLED=0: a static binary, with no dynamic loader, libc or
# pthread start-up: every run starts about 8 ms of CPU sooner (see
# docs/benchmarks.md, W1's fixed cost). etld uses no C code; only the
# name resolver would otherwise go through libc.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X main.version=$(VERSION)' -o bin/etld ./cmd/etld

test:
	.ci/run

install: build
	install -D -m 0755 bin/etld '$(DESTDIR)$(BINDIR)/etld'
	install -d '$(DESTDIR)$(UNITDIR)'
	sed 's|/usr/local/bin/etld|$(BINDIR)/etld|' systemd/etld.service > '$(DESTDIR)$(UNITDIR)/etld.service'
	chmod 0644 '$(DESTDIR)$(UNITDIR)/etld.service'
	install -D -m 0644 systemd/etld.sysusers '$(DESTDIR)$(SYSUSERSDIR)/etld.conf'
	install -D -m 0644 systemd/etld.tmpfiles '$(DESTDIR)$(TMPFILESDIR)/etld.conf'
	install -d -m 0755 '$(DESTDIR)$(SYSCONFDIR)/etld/pipelines'
	@if [ -e '$(DESTDIR)$(SYSCONFDIR)/etld/pipelines/example.yaml' ]; then \
		echo 'kept the existing $(SYSCONFDIR)/etld/pipelines/example.yaml'; \
	else \
		install -m 0644 systemd/example.yaml '$(DESTDIR)$(SYSCONFDIR)/etld/pipelines/example.yaml'; \
	fi
	@echo
	@echo 'Installed. To run etld as a service:'
	@echo '  sudo systemd-sysusers            # creates the etld user'
	@echo '  sudo systemd-tmpfiles --create etld.conf'
	@echo '  sudo systemctl daemon-reload'
	@echo '  sudo systemctl enable --now etld'
	@echo '  etld status                      # or: systemctl status etld'

uninstall:
	rm -f '$(DESTDIR)$(BINDIR)/etld' '$(DESTDIR)$(UNITDIR)/etld.service' \
		'$(DESTDIR)$(SYSUSERSDIR)/etld.conf' '$(DESTDIR)$(TMPFILESDIR)/etld.conf'

# The check CI runs on the unit (needs systemd-analyze).
verify-unit:
	.ci/verify-unit

clean:
	rm -rf bin
