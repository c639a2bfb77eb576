# One entry point for building, serving, testing and benchmarking.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
IMAGE ?= sagemaker-tf-graviton:latest
PORT ?= 8080
PLATFORMS ?= linux/arm64,linux/amd64
EXAMPLE_MODEL := examples/digits/model
PYTEST_ARGS ?=

.PHONY: venv test test-host test-container build build-arm64 build-x86 push run example bench clean help

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -e 's/:.*##/\t/'

$(VENV)/.installed: pyproject.toml tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e . -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed  ## .venv with the project and its test dependencies

test: venv  ## every test: host server, both images (arm64 under qemu), registry, deploy against moto
	$(PY) -m pytest $(PYTEST_ARGS)

test-host: venv  ## only the tests that need no Docker engine
	$(PY) -m pytest -m "not container" $(PYTEST_ARGS)

$(EXAMPLE_MODEL)/.built: examples/digits/train.py | venv
	$(PY) examples/digits/train.py --out examples/digits
	touch $@

example: $(EXAMPLE_MODEL)/.built  ## train the digits CNN and pack examples/digits/model.tar.gz

build:  ## image for this host's architecture, loaded into the local engine
	./build.sh --platform linux/$(ARCH) --tag $(IMAGE) --load

build-arm64:  ## Graviton image (emulated on x86), loaded
	./build.sh --platform linux/arm64 --tag $(IMAGE) --load

build-x86:  ## x86-64 image, loaded
	./build.sh --platform linux/amd64 --tag $(IMAGE) --load

push:  ## multi-arch manifest list to REGISTRY (or ECR=ACCOUNT.dkr.ecr.REGION.amazonaws.com)
	./build.sh --platform $(PLATFORMS) --tag $(IMAGE) --push $(if $(ECR),--ecr $(ECR))

run: build example  ## serve the example model from the image on port $(PORT), as SageMaker would
	docker run --rm -it -p $(PORT):8080 -v $(CURDIR)/$(EXAMPLE_MODEL):/opt/ml/model:ro $(IMAGE) serve

bench: venv  ## throughput/latency against the peer servers; writes bench/results/
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) bench/results/tmp examples/digits/model examples/digits/model.tar.gz
