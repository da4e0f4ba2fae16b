# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv and installs the pinned dependencies (constraints.txt) when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-deps bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Debian packages the tests use: postfix's smtp-sink (a real misbehaving SMTP server).
system-deps:
	@command -v smtp-sink >/dev/null 2>&1 || test -x /usr/sbin/smtp-sink || { \
	  echo "installing postfix (for smtp-sink)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null; }

demo: $(STAMP)
	$(BIN)/python -m newsletter.demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outbox subscribers/*.sqlite3*
