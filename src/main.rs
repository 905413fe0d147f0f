//! The `rollwise` binary: `run` (the operator), `crd` (prints the CRD YAML),
//! `demo` (the whole operator against an in-memory cluster).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollwise::controller::{RunConfig, run_with};
use rollwise::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "rollwise",
    version,
    about = "Progressive delivery operator for Kubernetes"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "ROLLWISE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (RUST_LOG syntax); defaults to $RUST_LOG, then `info`.
    #[arg(long, global = true, env = "ROLLWISE_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once at startup: the size of the `Run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or
    /// the in-cluster service account).
    Run(RunConfig),
    /// Print the Rollout CRD as YAML (what crds/rollout.yaml holds).
    Crd,
    /// Replay a Rollout against simulated or recorded traffic with a
    /// virtual clock (the real engine) and show when it would promote or
    /// roll back: timeline, summary, JSON or an SVG chart.
    Simulate(rollwise::simulate::SimulateArgs),
    /// Run the real reconcile code against an in-memory cluster with
    /// simulated traffic: a healthy version is promoted, a faulty one rolled
    /// back. Exits non-zero if either outcome is not the expected one.
    #[cfg(feature = "demo")]
    Demo {
        /// Seed of the simulated traffic.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print only the summary.
        #[arg(long)]
        quiet: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    rollwise::install_crypto_provider();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(default_command);
    match command {
        Command::Crd => {
            print!("{}", rollwise::api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => rollwise::simulate::main(args),
        #[cfg(feature = "demo")]
        Command::Demo { seed, quiet } => {
            telemetry::init(cli.log_format, Some(cli.log.as_deref().unwrap_or("warn")));
            rollwise::demo::main(seed, quiet).await
        }
        Command::Run(config) => {
            telemetry::init(cli.log_format, cli.log.as_deref());
            let metrics = rollwise::metrics::Metrics::new();
            let client = match rollwise::controller::counted_client(metrics.kube_requests.clone())
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    eprintln!(
                        "rollwise: no cluster to talk to ({e}). Set KUBECONFIG, or try `rollwise demo`."
                    );
                    return ExitCode::from(2);
                }
            };
            match run_with(client, metrics, config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rollwise: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// With no subcommand: the operator when a cluster is configured, else the demo.
fn default_command() -> Command {
    let has_cluster = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::home_dir().is_some_and(|h| h.join(".kube/config").exists());
    #[cfg(feature = "demo")]
    if !has_cluster {
        return Command::Demo {
            seed: 7,
            quiet: false,
        };
    }
    let _ = has_cluster;
    Command::Run(RunConfig::from_env())
}
