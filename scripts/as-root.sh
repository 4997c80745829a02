# Sourced by the scripts that need root (the lab's namespaces, packages):
# re-runs the calling script through sudo unless it already runs as root
# (or MESH_SKIP_NETNS=1 asks for no namespaces), keeping the caller's PATH,
# Rust toolchain and MESH_* settings so `cargo` is the user's.
if [ "$(id -u)" -ne 0 ] && [ "${MESH_SKIP_NETNS:-}" != 1 ]; then
    if ! command -v sudo >/dev/null; then
        echo "probemesh: $0 needs root and sudo is not installed: run it as root" >&2
        exit 2
    fi
    mesh_settings=()
    while IFS= read -r setting; do
        mesh_settings+=("$setting")
    done < <(env | grep '^MESH_' || true)
    exec sudo env "PATH=$PATH" \
        "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" \
        "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" \
        "${mesh_settings[@]}" \
        "$0" "$@"
fi
