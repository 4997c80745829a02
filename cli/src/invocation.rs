//! Who meshctl was started as: itself, the kubectl plugin `kubectl-mesh`, or
//! that plugin's completion helper `kubectl_complete-mesh`. One binary plays
//! all three; install the other two as symlinks (or copies) on `PATH`.
//!
//! kubectl runs `kubectl-mesh ARGS...` for `kubectl mesh ARGS...`, and for
//! `kubectl mesh ARGS... WORD<TAB>` runs `kubectl_complete-mesh ARGS... WORD`
//! (kubectl 1.26 and later; `WORD` is empty when nothing is typed yet), reading
//! one candidate per line and an optional last line `:DIRECTIVE` (Cobra's
//! shell-completion protocol). It is not where the candidates are worked out:
//! that is the `completion` module.

use std::ffi::OsStr;
use std::path::Path;

/// The plugin's executable name: kubectl finds `kubectl mesh` by it.
pub const PLUGIN_EXECUTABLE: &str = "kubectl-mesh";
/// The plugin's completion helper, looked up by kubectl on `PATH`.
pub const PLUGIN_COMPLETION_EXECUTABLE: &str = "kubectl_complete-mesh";
/// How help and usage name the plugin.
pub const PLUGIN_USAGE_NAME: &str = "kubectl mesh";

/// What the executable's name (argv\[0\]) asks meshctl to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// `meshctl`, or any name not below.
    Meshctl,
    /// `kubectl-mesh`: run as usual, named `kubectl mesh` in help and usage.
    KubectlPlugin,
    /// `kubectl_complete-mesh`: print completion candidates for the words
    /// given and exit.
    KubectlCompletion,
}

impl Invocation {
    /// Reads the executable name, the base name of `argv0` (kubectl runs a
    /// plugin by its full path); a missing argv\[0\] is meshctl.
    pub fn from_argv0(argv0: Option<&OsStr>) -> Self {
        let name = argv0
            .and_then(|a| Path::new(a).file_name())
            .and_then(OsStr::to_str);
        match name {
            Some(PLUGIN_EXECUTABLE) => Self::KubectlPlugin,
            Some(PLUGIN_COMPLETION_EXECUTABLE) => Self::KubectlCompletion,
            _ => Self::Meshctl,
        }
    }

    /// The name help and usage show: `meshctl` or `kubectl mesh`.
    pub fn usage_name(self) -> &'static str {
        match self {
            Self::Meshctl => "meshctl",
            Self::KubectlPlugin | Self::KubectlCompletion => PLUGIN_USAGE_NAME,
        }
    }

    /// The command a generated shell completion script completes: the
    /// executable the shell sees (`meshctl` or `kubectl-mesh`).
    pub fn script_name(self) -> &'static str {
        match self {
            Self::Meshctl => "meshctl",
            Self::KubectlPlugin | Self::KubectlCompletion => PLUGIN_EXECUTABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test_case(Some("meshctl"), Invocation::Meshctl ; "plain")]
    #[test_case(Some("/usr/local/bin/meshctl"), Invocation::Meshctl ; "full path")]
    #[test_case(Some("/home/me/.krew/bin/kubectl-mesh"), Invocation::KubectlPlugin ; "plugin by path")]
    #[test_case(Some("kubectl-mesh"), Invocation::KubectlPlugin ; "plugin")]
    #[test_case(Some("kubectl_complete-mesh"), Invocation::KubectlCompletion ; "completion helper")]
    #[test_case(Some("kubectl-mesh-extra"), Invocation::Meshctl ; "another plugin name")]
    #[test_case(None, Invocation::Meshctl ; "no argv0")]
    fn reads_the_executable_name(argv0: Option<&str>, want: Invocation) {
        assert_eq!(Invocation::from_argv0(argv0.map(OsStr::new)), want);
    }
}
