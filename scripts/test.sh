#!/usr/bin/env bash
# The whole test suite, as README.md gives it and CI runs it: installs what
# the tests need (a real Prometheus server, from Debian's package), then runs
# every test target (unit, property, CRD/CEL, reconcile against the in-memory
# API, Prometheus, demo; the end-to-end tests run only when
# ROLLWISE_E2E_KUBECONFIG names a cluster, and say so when skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --locked "$@"
