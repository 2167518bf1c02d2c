# Open-AutoGLM: the three entry points (setup, tune, test) and the rest.
# Everything runs from the project's own virtual environment (.venv).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
MODEL  ?= bert
SIZE   ?= base
SEQ    ?= 128
TARGET ?= cpu
OPT    ?= 3
OUT    ?= out
TRIALS ?=
PYTEST_ARGS ?=

.PHONY: help setup test test-all compile tune bench zoo clean

help:
	@echo "make setup                 create .venv and install tvm_autoglm with the extras the tests need"
	@echo "make tune MODEL=bert       build the zoo model, tune it, compile, print latency vs onnxruntime"
	@echo "make test                  the test suite (no slow or GPU tests)"
	@echo "make compile MODEL=bert TARGET=cpu   untuned compile of a zoo model to $(OUT)/"
	@echo "make bench                 benchmark suite -> benchmarks/RESULTS.md"
	@echo "make zoo MODEL=bert SIZE=base        export a zoo model to $(OUT)/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[zoo,plots,serve,peers]'
	$(PY) -c "import tvm, tvm_autoglm; print('tvm', tvm.__version__, '- tvm_autoglm ready')"

test:
	$(BIN)/pytest -m "not slow and not gpu" -q $(PYTEST_ARGS)

test-all:
	$(BIN)/pytest -q $(PYTEST_ARGS)

$(OUT):
	mkdir -p $(OUT)

zoo: | $(OUT)
	$(BIN)/auto-glm zoo $(MODEL) --size $(SIZE) --seq $(SEQ) --output $(OUT)/$(MODEL)-$(SIZE).onnx

compile: zoo
	$(BIN)/auto-glm compile --model $(OUT)/$(MODEL)-$(SIZE).onnx --target $(TARGET) --optimize-level $(OPT) --output $(OUT)/$(MODEL)-$(SIZE)-$(TARGET).so

tune: | $(OUT)
	$(PY) benchmarks/tune_model.py --model $(MODEL) --size $(SIZE) --seq $(SEQ) --target $(TARGET) --out $(OUT) $(if $(TRIALS),--trials $(TRIALS),)

bench:
	$(PY) benchmarks/run_benchmarks.py

clean:
	rm -rf $(OUT) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
