# Two commands do all the set-up on a fresh machine:
#   make app    - install into .venv (once) and launch the app on the bundled weights
#   make test   - install into .venv (once) and run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: app test install browser

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(VENV)/bin/python app.py $(ARGS)

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q $(ARGS)

# Debian's chromium for the one real-browser test (playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: the browser test will be skipped"; }
