#!/usr/bin/env bash
# The deploy checks (scripts/check-deploy.py): kustomize renderings validated
# against Kubernetes' schemas and held to their security promises, the
# Containerfile checked statically, the systemd unit verified. Uses the
# pinned kubectl and kubernetes-validate of scripts/kube-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/kube-tools.sh)
exec "$bin/python" scripts/check-deploy.py "$bin/kubectl"
