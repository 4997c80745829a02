#!/usr/bin/env bash
# The main job: builds probemesh, brings the lab up (a simulated cluster in
# network namespaces), injects reference incident 2 (MTU black hole between a
# cloud VM and a NodePort) and diagnoses it. Needs root: run as root, or as a
# user with sudo (it asks for it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/as-root.sh

./scripts/deps.sh
cargo build --release --locked --bins
exec ./target/release/meshctl lab demo "$@"
