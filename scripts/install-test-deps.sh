#!/usr/bin/env bash
# Install the binaries the integration tests need: `prometheus` and `promtool`
# (tests/common/prometheus.rs starts a real Prometheus server).
#
# Idempotent: does nothing when both binaries are already on PATH.
# Debian/Ubuntu only (apt-get). Runs as root, or through sudo when available.
#
# The Debian package's maintainer scripts try to start a `prometheus` service.
# In a container without systemd/init that is pointless (and can fail), so
# while installing we put a policy-rc.d in place that denies service starts
# (exit 101), and remove it afterwards -- unless one already existed (Docker's
# Debian images ship one), which we leave untouched.
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*"; }

have_all() {
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1
}

if have_all; then
    log "prometheus and promtool already installed, nothing to do:"
    log "  $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"
    log "  $(command -v promtool)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: apt-get not found; install Prometheus (prometheus and promtool) by hand," >&2
    log "or point PROMETHEUS_BIN and PROMTOOL_BIN at the binaries." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
    log "not root: using sudo"
else
    log "ERROR: must run as root (or have sudo) to apt-get install prometheus" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
        log "removed temporary $POLICY"
    fi
}
trap cleanup EXIT

if [ -e "$POLICY" ]; then
    log "$POLICY already exists, leaving it as is"
else
    printf '#!/bin/sh\n# temporary: installed by rollwise scripts/install-test-deps.sh\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    created_policy=1
    log "created temporary $POLICY (no service starts during install)"
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
log "apt-get install -y --no-install-recommends prometheus"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus

if ! have_all; then
    log "ERROR: prometheus installed but prometheus/promtool still not on PATH" >&2
    exit 1
fi

# The package starts nothing when policy-rc.d denies it, but be explicit: the
# tests start their own servers on free ports, a system one is not wanted.
log "installed:"
log "  $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"
log "  $(command -v promtool)"
