#!/usr/bin/env bash
# The whole test suite, as README.md gives it and CI runs it:
#  1. installs what the tests need (a real Prometheus from Debian's package,
#     Helm, kubernetes-validate: scripts/install-test-deps.sh);
#  2. starts a real Kubernetes API server (kube-apiserver and
#     kube-controller-manager v1.28.7 with etcd, from ../shared/realk8s) in a
#     temporary directory, applies the router CRDs it carries (Istio, Traefik,
#     SMI), and points the cluster tests at it (ROLLWISE_E2E_KUBECONFIG);
#     it is stopped and its directory deleted when the run ends, also on
#     failure. When ../shared/realk8s is not there (a laptop), the cluster
#     tests skip with one line each; when it is there and does not come up,
#     the run fails;
#  3. runs every test target (cargo test; extra arguments are passed on).
#
# Set ROLLWISE_E2E_KUBECONFIG yourself to run the cluster tests against a
# cluster you already have (then no kit is started), and ROLLWISE_REALK8S to
# use a kit somewhere else. The kit's ports can be moved with REALK8S_*_PORT
# (see ../shared/realk8s/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh

kit=${ROLLWISE_REALK8S:-../shared/realk8s}
if [ -n "${ROLLWISE_E2E_KUBECONFIG:-}" ]; then
    echo "test.sh: cluster tests against ROLLWISE_E2E_KUBECONFIG=$ROLLWISE_E2E_KUBECONFIG"
elif [ -f "$kit/up.sh" ]; then
    kit=$(cd "$kit" && pwd)
    state=$(mktemp -d "${TMPDIR:-/tmp}/rollwise-realk8s.XXXXXX")
    stop_kit() { bash "$kit/down.sh" --purge "$state" >/dev/null 2>&1 || true; }
    trap stop_kit EXIT
    echo "test.sh: starting the real API server ($kit/up.sh $state)"
    bash "$kit/up.sh" "$state" >/dev/null
    kubectl_kit=("$state/bin/kubectl" --kubeconfig "$state/kubeconfig")
    if [ -d "$kit/router-crds" ]; then
        "${kubectl_kit[@]}" apply --server-side --force-conflicts --field-manager=rollwise-test \
            -f "$kit/router-crds/" >/dev/null
        crds=$("${kubectl_kit[@]}" get crd -o name | grep -E 'istio.io|traefik.io|smi-spec.io')
        # shellcheck disable=SC2086 # one argument per CRD
        "${kubectl_kit[@]}" wait --for=condition=Established --timeout=60s $crds >/dev/null
    fi
    export ROLLWISE_E2E_KUBECONFIG="$state/kubeconfig"
    # The kit's kubectl (same version as the API server) for the tests that
    # use kubectl and Helm.
    export PATH="$state/bin:$PATH"
    echo "test.sh: real API server up: ROLLWISE_E2E_KUBECONFIG=$ROLLWISE_E2E_KUBECONFIG"
else
    echo "test.sh: no real API server ($kit not found): the cluster tests will be SKIPPED"
fi

cargo test --locked "$@"
