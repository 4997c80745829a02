//! meshctl as the kubectl plugin: the built binary run through links named
//! `kubectl-mesh` and `kubectl_complete-mesh` in a temp dir, `meshctl
//! completion SHELL`, and a real kubectl (the pinned one of
//! scripts/kube-tools.sh) finding the plugin and its completion on PATH.

use std::path::Path;
use std::process::{Command, Output};

use probemesh_tests::{bin, kubectl, stderr, stdout};

/// A temp dir holding `kubectl-mesh` and `kubectl_complete-mesh`, both links
/// to the built meshctl.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["kubectl-mesh", "kubectl_complete-mesh"] {
        std::os::unix::fs::symlink(bin("meshctl"), dir.path().join(name)).expect("symlink");
    }
    dir
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

#[test]
fn as_kubectl_mesh_it_names_itself_kubectl_mesh() {
    let dir = plugin_dir();
    let plugin = dir.path().join("kubectl-mesh");

    let help = run(&plugin, &["--help"]);
    assert!(help.status.success(), "{}", stderr(&help));
    assert!(
        stdout(&help).contains("\nUsage: kubectl mesh [OPTIONS] <COMMAND>\n"),
        "{}",
        stdout(&help)
    );
    let probe = run(&plugin, &["probe", "--help"]);
    assert!(
        stdout(&probe).contains("Usage: kubectl mesh probe [OPTIONS] --from <PROBE> --to <TARGET>"),
        "{}",
        stdout(&probe)
    );
    let wrong = run(&plugin, &["no-such-command"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("Usage: kubectl mesh [OPTIONS] <COMMAND>"),
        "{}",
        stderr(&wrong)
    );

    let meshctl = run(&bin("meshctl"), &["--help"]);
    assert!(
        stdout(&meshctl).contains("\nUsage: meshctl [OPTIONS] <COMMAND>\n"),
        "{}",
        stdout(&meshctl)
    );
}

#[test]
fn completion_prints_a_script_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(&bin("meshctl"), &["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(
            script.contains("probe") && script.contains("meshctl"),
            "{shell}: the script names neither meshctl nor its probe command:\n{script}"
        );
    }
    let dir = plugin_dir();
    let out = run(&dir.path().join("kubectl-mesh"), &["completion", "bash"]);
    assert!(
        stdout(&out).contains("kubectl-mesh"),
        "run as kubectl-mesh, the script completes kubectl-mesh"
    );
    let bad = run(&bin("meshctl"), &["completion", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is bad usage");
}

#[test]
fn kubectl_complete_mesh_answers_in_cobras_protocol() {
    let dir = plugin_dir();
    let helper = dir.path().join("kubectl_complete-mesh");

    let top = stdout(&run(&helper, &[""]));
    let lines: Vec<&str> = top.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("probe\tDiagnose a path")),
        "{top}"
    );
    assert!(
        lines.contains(
            &"completion\tPrint a shell completion script: bash, zsh, fish, powershell or elvish"
        ),
        "{top}"
    );
    assert_eq!(lines.last(), Some(&":4"), "{top}");

    let flags = stdout(&run(&helper, &["probe", "--f"]));
    assert!(flags.starts_with("--from\t"), "{flags}");
    let values = stdout(&run(&helper, &["probe", "-o", ""]));
    assert_eq!(
        values
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["table", "json", ":4"]
    );
    let marked = stdout(&run(&helper, &["__complete", "pro"]));
    assert!(
        marked.contains("probe\t") && marked.contains("probes\t"),
        "{marked}"
    );
}

#[test]
fn kubectl_finds_the_plugin_and_its_completion_on_path() {
    let kubectl = kubectl();
    let dir = plugin_dir();
    let home = tempfile::tempdir().expect("temp dir");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl_run = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("none"))
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("kubectl runs")
    };

    let help = kubectl_run(&["mesh", "--help"]);
    assert!(help.status.success(), "{}", stderr(&help));
    assert!(
        stdout(&help).contains("Usage: kubectl mesh [OPTIONS] <COMMAND>"),
        "{}",
        stdout(&help)
    );
    let listed = kubectl_run(&["plugin", "list", "--name-only"]);
    assert!(
        stdout(&listed).lines().any(|l| l == "kubectl-mesh"),
        "kubectl plugin list: {}{}",
        stdout(&listed),
        stderr(&listed)
    );
    let plugin = kubectl_run(&["__complete", "me"]);
    assert!(
        stdout(&plugin).lines().any(|l| l.starts_with("mesh\t")),
        "{}",
        stdout(&plugin)
    );
    let flags = kubectl_run(&["__complete", "mesh", "probe", "--f"]);
    assert!(
        stdout(&flags).lines().any(|l| l.starts_with("--from\t")),
        "kubectl does not complete through kubectl_complete-mesh:\n{}{}",
        stdout(&flags),
        stderr(&flags)
    );
}
