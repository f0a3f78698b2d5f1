# Two commands for a new user: `make demo` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# The venv is rebuilt only when the pinned requirements change; the C++ extension when csrc changes.
REQ_STAMP := $(VENV)/.req-stamp
EXT_STAMP := $(VENV)/.ext-stamp
CSRC := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp csrc/cuda/*.h)
# Custom messages (bqnet_ros_interfaces) generated with rosidl from PyPI wheels into build/msgs.
MSG_STAMP := build/msgs/.stamp
MSG_SRC := requirements/msgs.txt tools/build_msgs.sh $(wildcard msg/*.msg) $(wildcard interfaces/bqnet_ros_interfaces/srv/*.srv interfaces/bqnet_ros_interfaces/*.xml interfaces/bqnet_ros_interfaces/*.txt interfaces/bqnet_ros_interfaces/cmake/*.cmake)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test demo bench bench-real clean

setup: $(EXT_STAMP) $(MSG_STAMP)

$(REQ_STAMP): requirements/base.txt
	@test -x $(PY) || { echo "[setup] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "[setup] installing pinned dependencies (first time: a few minutes)"
	$(PIP) install -r requirements/base.txt
	@touch $@

$(EXT_STAMP): $(REQ_STAMP) setup.py $(CSRC)
	@echo "[setup] building csrc and installing bqnet_ros in editable mode"
	$(PIP) install --no-build-isolation --no-deps -e .
	@touch $@

$(MSG_STAMP): $(REQ_STAMP) $(MSG_SRC)
	@echo "[setup] generating the ROS 2 messages (bqnet_ros_interfaces)"
	VENV=$(VENV) tools/build_msgs.sh
	@touch $@

test: setup
	$(PY) -m pytest -q test

demo: setup
	$(PY) -m bqnet_model.demo

bench: setup
	$(PY) bench/superpoints.py

# The shipped model on the real ScanNet scans beside the checkout (internal data: ../shared/real).
REAL ?= ../shared/real
bench-real: setup
	$(PY) -m bqnet_model.eval_real --checkpoint models/bqnet_tiny.pth --real-dir $(REAL)

clean:
	rm -rf build *.egg-info bqnet_model/_C*.so
