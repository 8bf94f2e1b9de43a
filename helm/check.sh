#!/usr/bin/env bash
# Offline check of the Helm chart: `bash helm/check.sh` from anywhere in the repository.
#
#   1. helm (built from the Go module proxy with `go install`, pinned, cached in
#      ~/.cache/fleet-backend/helm/<version>/bin; only the first run needs the network),
#   2. `helm lint --strict` and `helm template | kubernetes-validate --strict` for the
#      default values and every values file in helm/ci/, against the oldest Kubernetes the
#      chart supports and the newest kubernetes-validate knows. kubernetes-validate only
#      warns about a kind it has no schema for; here that fails, except for Strimzi kinds,
#      which step 3 checks,
#   3. the Strimzi resources against Strimzi's CRD schema (helm/check_crds.py; its CRD is
#      generated and cached on the first run, see there),
#   4. every value documented and the README's values table current (helm/values_table.py).
#
# Environment: HELM (a helm binary to use instead), PYTHON (default .venv/bin/python),
# FLEET_HELM_CACHE (default ~/.cache/fleet-backend/helm).
set -euo pipefail

HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37  # helm v3.22.0 builds with k8s.io/client-go v0.37
KUBE_VERSIONS=(1.29.0 1.37.0)  # Chart.yaml kubeVersion's floor, and kubernetes-validate's newest
RELEASE=fleet
NAMESPACE=fleet

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$REPO_ROOT/helm/fleet-backend"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
VALIDATE="$(dirname "$PYTHON")/kubernetes-validate"
HELM_CACHE="${FLEET_HELM_CACHE:-$HOME/.cache/fleet-backend/helm}"
work=""

ensure_helm() {
    if [[ -n "${HELM:-}" ]]; then
        return
    fi
    local bin="$HELM_CACHE/$HELM_VERSION/bin"
    HELM="$bin/helm"
    if [[ ! -x "$HELM" ]]; then
        # The Go toolchain's default install location, for shells that do not have it on PATH.
        command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
        command -v go >/dev/null || { echo "go is needed to build helm $HELM_VERSION" >&2; return 1; }
        echo "Building helm $HELM_VERSION with go install (cached in $bin)"
        mkdir -p "$bin"
        # The flags of Helm's own release build (its Makefile): static, trimmed, the version,
        # and the Kubernetes version that `helm template` and `helm lint` assume by default
        # (k8s.io/client-go v0.X -> 1.X; without them helm falls back to 1.20).
        local pkg=helm.sh/helm/v3
        CGO_ENABLED=0 GOBIN="$bin" GOFLAGS=-trimpath go install -ldflags "-s -w \
            -X $pkg/internal/version.version=$HELM_VERSION \
            -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR \
            -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR" \
            "$pkg/cmd/helm@$HELM_VERSION"
    fi
}

# kubernetes-validate on rendered files (one process: loading its schemas is the slow part).
# Any WARN (no schema for a kind) outside the Strimzi group fails, because a typo in an
# apiVersion would otherwise pass unchecked.
validate() {
    local kube_version="$1" output status=0 unexpected
    shift
    output="$("$VALIDATE" --strict --quiet -k "$kube_version" "$@" 2>&1)" || status=$?
    unexpected="$(grep -v -E "^WARN .*kind KafkaTopic with api version kafka\.strimzi\.io/" \
        <<<"$output" || true)"
    if [[ -n "$unexpected" ]]; then
        echo "$unexpected"
        status=1
    fi
    return "$status"
}

main() {
    [[ -x "$PYTHON" ]] || { echo "$PYTHON not found: run 'make install' first" >&2; return 1; }
    [[ -x "$VALIDATE" ]] || { echo "kubernetes-validate not in $(dirname "$PYTHON")" >&2; return 1; }
    ensure_helm
    echo "helm $("$HELM" version --short), kubernetes-validate $("$VALIDATE" --version 2>&1)"

    # Home, cache and config of helm in a temp dir: no repositories, no plugins, no network.
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    export HELM_CACHE_HOME="$work/cache" HELM_CONFIG_HOME="$work/config" HELM_DATA_HOME="$work/data"

    local cases=("defaults") values_files=("") failed=0 file
    for file in "$REPO_ROOT"/helm/ci/*.yaml; do
        [[ -e "$file" ]] || continue
        cases+=("$(basename "$file" .yaml)")
        values_files+=("$file")
    done

    local i name args rendered version
    for i in "${!cases[@]}"; do
        name="${cases[$i]}"
        args=()
        [[ -n "${values_files[$i]}" ]] && args=(--values "${values_files[$i]}")
        rendered="$work/$name.yaml"
        if ! "$HELM" lint --strict --quiet "$CHART" "${args[@]}" >"$work/lint.log" 2>&1; then
            cat "$work/lint.log"
            echo "FAIL $name: helm lint"
            failed=1
            continue
        fi
        if ! "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" \
            >"$rendered" 2>"$work/template.log"; then
            cat "$work/template.log"
            rm -f "$rendered"
            echo "FAIL $name: helm template"
            failed=1
            continue
        fi
        echo "ok   $name: helm lint --strict; helm template: $(grep -c '^kind: ' "$rendered") resources"
    done

    for version in "${KUBE_VERSIONS[@]}"; do
        if validate "$version" "$work"/*.yaml; then
            echo "ok   kubernetes-validate --strict -k $version: every rendered values set"
        else
            echo "FAIL kubernetes-validate --strict -k $version"
            failed=1
        fi
    done

    "$PYTHON" "$REPO_ROOT/helm/check_crds.py" "$work"/*.yaml || failed=1
    "$PYTHON" "$REPO_ROOT/helm/values_table.py" --check || failed=1

    if ((failed)); then
        echo "helm chart check FAILED"
        return 1
    fi
    echo "helm chart check passed: ${#cases[@]} values sets"
}

main "$@"
