#!/usr/bin/env bash
# Prints the path of rotel-agent, a real OpenTelemetry collector (OTLP/gRPC)
# the observability tests send spans to. Installs it once from PyPI
# (`pip install rotel`) into a venv under target/rotel-venv. Fails loudly:
# the tests must not pass without a real collector.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/rotel-venv
find_agent() {
  compgen -G "$venv/lib/python3*/site-packages/rotel/rotel-agent" | head -n 1 || true
}

agent=$(find_agent)
if [ -z "$agent" ]; then
  mkdir -p target
  {
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check rotel
  } >&2 || {
    echo "probemesh: cannot install rotel into $venv (needs python3-venv and PyPI)" >&2
    exit 1
  }
  agent=$(find_agent)
fi
if [ -z "$agent" ] || [ ! -x "$agent" ]; then
  echo "probemesh: rotel installed but no executable rotel-agent under $venv" >&2
  exit 1
fi
realpath "$agent"
