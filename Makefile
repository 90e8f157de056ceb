# mmext: install, demo, test.  `make demo` and `make test` install first.
PYTHON      ?= python3.11
VENV        ?= .venv
WHEELHOUSE  ?=
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
FIND_LINKS  := $(if $(WHEELHOUSE),--find-links $(abspath $(WHEELHOUSE)),)
STAMP       := $(VENV)/.mmext-installed

.PHONY: install demo test test-quick clean

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip<26" "setuptools<81" wheel
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements/build.txt
	@$(PY) -c "import mmcv" 2>/dev/null || { \
	  echo "==> installing mmcv 2.1.0 with its C++ ops: from a prebuilt wheel if WHEELHOUSE has one,"; \
	  echo "    otherwise built from source (20-40 minutes on 2 cores the first time; pip caches the wheel)"; \
	  MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation $(FIND_LINKS) mmcv==2.1.0; }
	$(PIP) install --quiet $(FIND_LINKS) -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	@touch $(STAMP)

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q tests

# everything but the tests marked slow (end-to-end runs, wheel builds)
test-quick: install
	$(PY) -m pytest -q -m 'not slow' tests

clean:
	rm -rf $(VENV) work_dirs data/demo
