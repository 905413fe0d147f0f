//! The operator talks HTTPS to a real API server: building a client for an
//! https kubeconfig must work (two rustls crypto backends are compiled in;
//! without an explicit process default the first TLS client panics).

use std::process::Command;

fn https_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:9\", insecure-skip-tls-verify: true}\n\
         users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    path
}

#[test]
fn rollwise_run_against_an_https_server_fails_cleanly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .args(["run", "--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", https_kubeconfig(dir.path()))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("CryptoProvider"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the API server at https://127.0.0.1:9"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_for_an_https_kubeconfig_can_be_built() {
    rollwise::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(https_kubeconfig(dir.path())).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert!(kube::Client::try_from(config).is_ok());
}
