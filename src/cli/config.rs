//! kubeconfig handling with kubectl's conventions: `--kubeconfig`, then
//! `$KUBECONFIG` (a list of files, merged), then `~/.kube/config`, then the
//! in-cluster service account; `--context` picks a context; the namespace
//! defaults to the context's namespace, else `default`.

use std::path::{Path, PathBuf};

use kube::config::{Config, KubeConfigOptions, Kubeconfig, KubeconfigError};

use super::{EXIT_USAGE, Failure, KubeArgs};

fn usage(message: String) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message,
    }
}

fn read_error(path: &Path, e: KubeconfigError) -> Failure {
    match e {
        KubeconfigError::ReadConfig(io, _) => {
            usage(format!("cannot read kubeconfig {}: {io}", path.display()))
        }
        other => usage(format!("invalid kubeconfig {}: {other}", path.display())),
    }
}

/// Where the kubeconfig comes from, for messages.
fn default_path() -> Option<PathBuf> {
    std::env::home_dir().map(|h| h.join(".kube").join("config"))
}

/// Load the kubeconfig the way kubectl does (see the module docs).
/// `Ok(None)`: there is none at all (the caller may try in-cluster).
pub fn load_kubeconfig(args: &KubeArgs) -> Result<Option<Kubeconfig>, Failure> {
    if let Some(path) = &args.kubeconfig {
        return Kubeconfig::read_from(path)
            .map(Some)
            .map_err(|e| read_error(path, e));
    }
    if let Some(value) = std::env::var_os("KUBECONFIG")
        && !value.is_empty()
    {
        let mut merged = Kubeconfig::default();
        for path in std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()) {
            let kc = Kubeconfig::read_from(&path).map_err(|e| {
                let f = read_error(&path, e);
                usage(format!("{} (from KUBECONFIG)", f.message))
            })?;
            merged = merged
                .merge(kc)
                .map_err(|e| usage(format!("cannot merge the KUBECONFIG files: {e}")))?;
        }
        return Ok(Some(merged));
    }
    match default_path() {
        Some(path) if path.exists() => Kubeconfig::read_from(&path)
            .map(Some)
            .map_err(|e| read_error(&path, e)),
        _ => Ok(None),
    }
}

/// The client for the chosen kubeconfig and context. Its default namespace is
/// the context's namespace (or `default`).
pub async fn client(args: &KubeArgs) -> Result<kube::Client, Failure> {
    // Two rustls backends are linked in: choose one before any TLS client.
    crate::install_crypto_provider();
    let config = match load_kubeconfig(args)? {
        Some(kc) => {
            if let Some(ctx) = &args.context
                && !kc.contexts.iter().any(|c| &c.name == ctx)
            {
                let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(usage(format!(
                    "no context named {ctx:?} in the kubeconfig (contexts: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            if args.context.is_none() && kc.current_context.as_deref().unwrap_or("").is_empty() {
                return Err(usage(
                    "the kubeconfig has no current-context: pass --context NAME".into(),
                ));
            }
            let options = KubeConfigOptions {
                context: args.context.clone(),
                cluster: None,
                user: None,
            };
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| usage(format!("cannot use the kubeconfig: {e}")))?
        }
        None => match Config::incluster() {
            Ok(c) => c,
            Err(_) => {
                return Err(usage(format!(
                    "no kubeconfig: pass --kubeconfig PATH, set KUBECONFIG, or create {}",
                    default_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "~/.kube/config".into())
                )));
            }
        },
    };
    kube::Client::try_from(config)
        .map_err(|e| usage(format!("cannot build a client from the kubeconfig: {e}")))
}
