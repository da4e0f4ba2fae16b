# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv and installs the pinned dependencies (constraints.txt) when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-deps email-tools eval bench bench-large bench-profile container-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Debian packages the tests use: postfix (its smtp-sink is a real misbehaving SMTP server),
# chromium (a real browser for the pages and the email) and postgresql (the tests start a
# throw-away cluster of their own with initdb and pg_ctl; no service is enabled or used),
# faketime (a sender whose host clock is wrong) and dovecot-imapd (an IMAP mailbox of bounces,
# started by the tests in the foreground with a config of their own); spamassassin and tidy score
# and validate the rendered email, npm (with nodejs) installs the email tools below. Thunderbird runs under
# xvfb (screenshots with imagemagick's import, windows sized with xdotool) and Roundcube (PHP's own web
# server, SQLite) shows the issue as a webmail does: tests/test_thunderbird.py, tests/test_webmail.py.
# nsd serves made-up DNS zones on loopback for `newsletter doctor`'s SPF, DKIM and DMARC checks;
# systemd-analyze verifies the units in deploy/ (nothing is started or enabled); nginx runs in front of
# `serve` with deploy/'s config, prometheus scrapes it and promtool checks deploy/'s alert rules.
SYSTEM_PACKAGES := $(if $(wildcard /usr/sbin/smtp-sink),,postfix) $(if $(wildcard /usr/bin/chromium),,chromium) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql) $(if $(wildcard /usr/bin/faketime),,faketime) \
	$(if $(wildcard /usr/sbin/dovecot),,dovecot-imapd) $(if $(wildcard /usr/bin/spamassassin),,spamassassin) \
	$(if $(wildcard /usr/bin/tidy),,tidy) $(if $(wildcard /usr/bin/npm),,npm) \
	$(if $(wildcard /usr/bin/thunderbird),,thunderbird) $(if $(wildcard /usr/bin/Xvfb),,xvfb) \
	$(if $(wildcard /usr/bin/xdotool),,xdotool) $(if $(wildcard /usr/bin/import-im6.q16),,imagemagick x11-utils) \
	$(if $(wildcard /usr/sbin/nsd),,nsd) $(if $(wildcard /usr/bin/systemd-analyze),,systemd) \
	$(if $(wildcard /usr/sbin/nginx),,nginx-light) $(if $(wildcard /usr/bin/promtool),,prometheus)
# Without its recommends: Roundcube recommends apache2, which the tests do not use.
WEBMAIL_PACKAGES := $(if $(wildcard /usr/share/roundcube/index.php),,roundcube-core roundcube-sqlite3 php8.2-cli php8.2-cgi php8.2-sqlite3)

system-deps:
	@if [ -n "$(strip $(SYSTEM_PACKAGES) $(WEBMAIL_PACKAGES))" ]; then \
	  echo "installing $(strip $(SYSTEM_PACKAGES) $(WEBMAIL_PACKAGES))"; \
	  apt-get update -qq; \
	  if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null || exit 1; fi; \
	  if [ -n "$(strip $(WEBMAIL_PACKAGES))" ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(WEBMAIL_PACKAGES) >/dev/null || exit 1; fi; \
	fi

demo: $(STAMP)
	$(BIN)/python -m newsletter.demo

# axe-core, html-validate and doiuse-email (caniemail.com's data), pinned by the lock file;
# tests/test_email_tools.py runs them over the rendered email.
EMAIL_TOOLS := tests/email-tools
$(EMAIL_TOOLS)/node_modules/.installed: $(EMAIL_TOOLS)/package.json $(EMAIL_TOOLS)/package-lock.json | system-deps
	npm ci --prefix $(EMAIL_TOOLS) --no-audit --no-fund --loglevel=error
	touch $@

email-tools: $(EMAIL_TOOLS)/node_modules/.installed

test: $(STAMP) system-deps email-tools
	$(BIN)/python -m pytest -q --durations=15 -n 3 --dist loadfile

# The container (deploy/Containerfile, deploy/compose.yaml) built and run on this machine: a Debian 12
# base made from Debian's packages, buildah, then --help, a non-root user, the pins, db upgrade on a
# volume, send to a sink, serve, and compose with PostgreSQL. As root; installs buildah, podman,
# mmdebstrap and runc when missing; 6 to 10 min the first time, 1.5 to 3 min after (deploy/README.md).
# CONTAINER_CHECK_ARGS=--no-cache rebuilds every layer, =--clean removes its images and cache.
container-check: $(STAMP)
	PYTHON=$(BIN)/python deploy/container-check.sh --compose $(CONTAINER_CHECK_ARGS)

# How well the selection clusters and ranks, on the labelled corpus in benchmarks/corpus, and how fast
# it is over 3,000 items; writes the table into docs/selection.md. Exit 1: a target missed.
eval: $(STAMP)
	$(BIN)/python -m benchmarks.selection_eval --write-docs $(EVAL_ARGS)

# Speed and memory of `newsletter send` against postfix's smtp-sink, next to smtp-source (C) and a
# stdlib loop: see benchmarks/README.md; results in benchmarks/results/. The harness installs postfix
# itself when smtp-sink is missing (as root). Options: make bench BENCH_ARGS="-n 5000 --skip memory"
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-large: $(STAMP)
	$(BIN)/python -m benchmarks.run --large $(BENCH_ARGS)

bench-profile: $(STAMP)
	$(BIN)/python -m benchmarks.profile_send $(BENCH_ARGS)

clean:
	rm -rf $(VENV) outbox test-artifacts $(EMAIL_TOOLS)/node_modules benchmarks/results/tmp subscribers/*.sqlite3*
