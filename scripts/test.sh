#!/usr/bin/env bash
# The test command: installs what the tests need, builds once, runs every test.
# Lab and namespace tests need root; they fail loudly without it unless
# MESH_SKIP_NETNS=1 is set explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/as-root.sh

./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
python3 scripts/check-structure.py   # module circles and layers, file sizes, meshctl's tree (docs/architecture.md)
./scripts/check-deploy.sh            # deploy/ and the Containerfile: rendered, validated, held to their promises (docs/operations.md)
cargo test --workspace --locked -- --test-threads="${MESH_TEST_THREADS:-2}"
