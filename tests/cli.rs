//! What `rollwise` tells a person at first contact: its help, and its
//! errors when the cluster is not there. The real binary, as users run it.

use std::net::TcpListener;
use std::process::{Command, Output};

fn rollwise(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rollwise"));
    c.args(args).env_remove("NO_COLOR").env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the rollwise binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_says_what_a_bare_rollwise_does() {
    let out = rollwise(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains(
            "without a command runs the operator (`rollwise run`) when a cluster is configured"
        ) && help.contains("otherwise the embedded demo (`rollwise demo`)"),
        "{help}"
    );
}

#[test]
fn crd_help_shows_no_option_that_does_nothing() {
    let out = rollwise(&["crd", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(!help.contains("--log"), "{help}");
    // The log flags still work where they do something, before or after run.
    let out = rollwise(&["run", "--help"], &[]);
    assert!(text(&out.stdout).contains("--log-format"));
}

/// An API server that is not there is named with its address; it is not
/// mistaken for a missing CRD; and the log on a pipe has no colour codes.
#[test]
fn run_against_an_unreachable_server_says_it_cannot_reach_it() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: u, user: {{token: x}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .expect("write the kubeconfig");
    let out = rollwise(
        &["run", "--http-addr", "127.0.0.1:0"],
        &[("KUBECONFIG", kubeconfig.to_str().expect("UTF-8"))],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let want = format!("cannot reach the API server at https://127.0.0.1:{port}");
    assert!(err.contains(&want), "no {want:?} in:\n{err}");
    assert!(!err.contains("CRD"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape codes on a pipe:\n{err:?}"
    );
}
