# The two commands the README promises, and their parts.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: demo demo-quick test setup services-up services-down

# All set-up, then the main job on the embedded default (no servers): a pip
# cache following a build to a fresh worker (examples/demo/run.sh; the python
# base comes from debootstrap on first use).
demo: setup
	cargo build --release -p rbk
	rbk="$${CARGO_TARGET_DIR:-target}/release/rbk"; \
	"$$rbk" --version; \
	examples/demo/run.sh "$$rbk"

# The same mechanism in seconds, for machines where debootstrap cannot run:
# a busybox base and a 29-byte cache (examples/demo-quick/run.sh).
demo-quick: setup
	cargo build --release -p rbk
	rbk="$${CARGO_TARGET_DIR:-target}/release/rbk"; \
	"$$rbk" --version; \
	"$$rbk" store selftest --dir "$${RBK_DEMO_DIR:-$$(mktemp -d)}/selftest"; \
	examples/demo-quick/run.sh "$$rbk"

# All set-up, then every test against real services on 127.0.0.1. The
# services' environment is captured first: `eval "$$(...)"` alone would
# hide a failing `services.sh up` (eval of an empty string succeeds) and
# run every test against services that are not there.
test: setup
	services_env="$$(deploy/dev/services.sh up)"; \
	eval "$$services_env"; \
	cargo nextest run --workspace --no-fail-fast --profile ci; \
	venv=$$(deploy/dev/helm-tools.sh); \
	RBK_BIN="$${RBK_BIN:-$$(realpath $${CARGO_TARGET_DIR:-target})/debug/rbk}" "$$venv/bin/pytest" -q -p no:cacheprovider helm/tests deploy/tests

setup:
	deploy/dev/setup.sh

services-up:
	deploy/dev/services.sh up

services-down:
	deploy/dev/services.sh down
