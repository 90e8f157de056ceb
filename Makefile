# mmext: install, demo, test.  `make demo` and `make test` install first.
#   make test                 torch 2.13.0 in .venv
#   make accuracy             demo-trained RTMDet-tiny + SHViT-S1, + EfficientFormerV2-S0 and
#                             + EdgeViT-XXS exported in every format keep their AP (fails outside
#                             0.002 fp32 / 0.01 bf16 / 0.02 int8); ACC_CONFIGS=... picks
#                             configs/rtmdet/ files
#   make test TORCH=2.1.2     torch 2.1.2 (the mmdet 3.3 users' stack) in .venv-torch2.1.2
# WHEELHOUSE: a folder with a prebuilt mmcv 2.1.0 wheel for torch 2.13.0; its subfolder
# torch-<TORCH>/ holds the one for another torch (mmcv's C++ ops are built against one torch).
PYTHON      ?= python3.11
TORCH       ?= 2.13.0
DEFAULT_TORCH := 2.13.0
VENV        ?= $(if $(filter $(DEFAULT_TORCH),$(TORCH)),.venv,.venv-torch$(TORCH))
WHEELHOUSE  ?=
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
MMCV_WHEELS := $(if $(WHEELHOUSE),$(if $(filter $(DEFAULT_TORCH),$(TORCH)),$(WHEELHOUSE),$(WHEELHOUSE)/torch-$(TORCH)))
FIND_LINKS  := $(if $(wildcard $(MMCV_WHEELS)),--find-links $(abspath $(MMCV_WHEELS)),)
STAMP       := $(VENV)/.mmext-installed

.PHONY: install demo test test-quick accuracy clean

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip<26" "setuptools<81" wheel
	$(PIP) install --quiet torch==$(TORCH)
	$(PIP) install --quiet -r requirements/build.txt
	@$(PY) -c "import mmcv" 2>/dev/null || { \
	  echo "==> installing mmcv 2.1.0 for torch $(TORCH) with its C++ ops: from a prebuilt wheel in '$(MMCV_WHEELS)' if there is one,"; \
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

# issue #20's accuracy check, per config: train RTMDet-tiny + the backbone on the generated data
# (100-300 s on 2 cores), then every format (torch, ONNX Runtime, OpenVINO; fp32, bf16, int8) on
# its validation set (about 8 minutes for the three). SHViT-S1: convolutions and single-head
# attention; EfficientFormerV2-S0: multi-head attention with talking heads (MatMuls);
# EdgeViT-XXS: sparse global attention (OpenVINO's ScaledDotProductAttention). NNCF's transformer
# mode makes their attention int8.
ACC_DIR     := work_dirs/accuracy
ACC_CONFIGS := shvit_s1_rtmdet_tiny_4xb32-100e_coco.py \
               efficientformerv2_s0_rtmdet_tiny_4xb32-100e_coco.py \
               edgevit_xxs_rtmdet_tiny_4xb32-100e_coco.py
accuracy: install
	@set -e; for cfg in $(ACC_CONFIGS); do \
	  dir=$(ACC_DIR)/$${cfg%%_rtmdet*}; \
	  echo "==> accuracy: $$cfg in $$dir"; \
	  $(PY) tools/demo.py --config configs/rtmdet/$$cfg --work-dir $$dir/train; \
	  $(PY) tools/benchmark_formats.py $$dir/train/$$cfg "$$(cat $$dir/train/last_checkpoint)" \
	    --data data/demo/coco --shape 128 --anchor-configs --check-ap --work-dir $$dir/files \
	    --out $$dir/detector_formats.json; \
	done

clean:
	rm -rf $(VENV) work_dirs data/demo
