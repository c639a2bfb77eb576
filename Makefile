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
TTY := $(shell test -t 0 && echo -it)
# Where Docker Hub is out of reach, .ci/setup-host.sh builds the same debian:trixie-slim into a
# local registry; use it when it is there and BASE_IMAGE is not set.
LOCAL_BASE := 127.0.0.1:5000/debian:trixie-slim
BASE := $${BASE_IMAGE:-$$(curl -fsS -o /dev/null http://127.0.0.1:5000/v2/debian/manifests/trixie-slim 2>/dev/null && echo $(LOCAL_BASE))}

.PHONY: venv test test-unit test-host build build-arm64 build-x86 push run example bench docs clean help docker-ready host-setup

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -e 's/:.*##/\t/'

$(VENV)/.installed: pyproject.toml deploy/pyproject.toml tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e . -e ./deploy -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed  ## .venv with the project and its test dependencies

host-setup:  ## root on Debian without Docker/Docker Hub: engine, buildx, qemu, local registry and base image
	bash .ci/setup-host.sh

# A fresh machine of the CI kind has only the docker client: set it up (root + apt only).
docker-ready:
	@docker info >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash .ci/setup-host.sh; \
	  else echo "make: no Docker engine answers; start Docker (or run 'make host-setup' as root on Debian)" >&2; exit 1; fi; }

# tests/unit runs in-process in a pytest of its own where `import tensorflow` fails, which is
# what proves those parts need no TensorFlow; the other folders start servers and images.
UNIT_TESTS := -p tests.unit.without_tensorflow tests/unit
test-unit: venv  ## in-process tests, TensorFlow made unimportable: codecs, app, settings, archives, deploy against moto
	$(PY) -m pytest $(UNIT_TESTS) $(PYTEST_ARGS)

test: venv docker-ready test-unit  ## every test: unit, host server, both images (arm64 under qemu), registry, deploy against moto
	BASE_IMAGE=$(BASE) $(PY) -m pytest tests/host tests/container tests/deploy $(PYTEST_ARGS)

test-host: venv test-unit  ## only the tests that need no Docker engine
	$(PY) -m pytest -m "not container" tests/host tests/deploy $(PYTEST_ARGS)

# the example's own needs (scikit-learn's digits data set), pinned, so `make example` works from
# `make venv` alone and does not lean on the test requirements
$(VENV)/.example-deps: examples/digits/requirements.txt | venv
	$(VENV)/bin/pip install -q -r examples/digits/requirements.txt
	touch $@

$(EXAMPLE_MODEL)/.built: examples/digits/train.py | venv $(VENV)/.example-deps
	$(PY) examples/digits/train.py --out examples/digits
	touch $@

example: $(EXAMPLE_MODEL)/.built  ## train the digits CNN and pack examples/digits/model.tar.gz (installs scikit-learn, pinned)

build: docker-ready  ## image for this host's architecture, loaded into the local engine
	BASE_IMAGE=$(BASE) ./build.sh --platform linux/$(ARCH) --tag $(IMAGE) --load

build-arm64: docker-ready  ## Graviton image (emulated on x86), loaded
	BASE_IMAGE=$(BASE) ./build.sh --platform linux/arm64 --tag $(IMAGE) --load

build-x86: docker-ready  ## x86-64 image, loaded
	BASE_IMAGE=$(BASE) ./build.sh --platform linux/amd64 --tag $(IMAGE) --load

push: docker-ready  ## multi-arch manifest list: IMAGE=REPO:TAG, or ECR=ACCOUNT.dkr.ecr.REGION.amazonaws.com
	BASE_IMAGE=$(BASE) ./build.sh --platform $(PLATFORMS) --tag $(IMAGE) --push $(if $(ECR),--ecr $(ECR))

run: build example  ## serve the example model from the image on port $(PORT), as SageMaker would
	docker run --rm $(TTY) -p $(PORT):8080 -v $(CURDIR)/$(EXAMPLE_MODEL):/opt/ml/model:ro $(IMAGE) serve

bench: venv  ## throughput/latency against the peer servers; writes bench/results/
	$(PY) -m bench.run

docs: venv  ## regenerate docs/configuration.md from serve/contract/settings.py
	$(PY) docs/generate_configuration.py

clean:
	rm -rf $(VENV) bench/results/tmp examples/digits/model examples/digits/model.tar.gz
