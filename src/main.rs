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
    about = "Progressive delivery operator for Kubernetes",
    long_about = "Progressive delivery operator for Kubernetes.\n\n\
        `rollwise` without a command runs the operator (`rollwise run`) when a cluster is \
        configured ($KUBECONFIG, ~/.kube/config or in-cluster), and otherwise the embedded \
        demo (`rollwise demo`): the real reconcile code against an in-memory cluster."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The log flags of the commands that log (`run`, `demo`, and a bare
/// `rollwise`); `crd` and `simulate` print and log nothing.
#[derive(clap::Args, Clone, Default)]
struct LogArgs {
    /// Log format: text (default) or json.
    #[arg(long, env = "ROLLWISE_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter (RUST_LOG syntax, e.g. `rollwise=debug,kube=warn`);
    /// defaults to $RUST_LOG, then `info`.
    #[arg(long, env = "ROLLWISE_LOG", value_name = "FILTER")]
    log: Option<String>,
}

impl LogArgs {
    /// These flags, else those given before the command.
    fn or(self, outer: &LogArgs) -> LogArgs {
        LogArgs {
            log_format: self.log_format.or(outer.log_format),
            log: self.log.or_else(|| outer.log.clone()),
        }
    }
    fn format(&self) -> LogFormat {
        self.log_format.unwrap_or(LogFormat::Text)
    }
}

// Parsed once at startup: the size of the `Run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or
    /// the in-cluster service account).
    Run {
        #[command(flatten)]
        config: RunConfig,
        #[command(flatten)]
        log: LogArgs,
    },
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
        #[command(flatten)]
        log: LogArgs,
    },
}

fn main() -> ExitCode {
    // Before any thread starts (see `memory::limit_arenas`).
    rollwise::controller::memory::limit_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("rollwise: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
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
        Command::Demo { seed, quiet, log } => {
            let log = log.or(&cli.log);
            telemetry::init(log.format(), Some(log.log.as_deref().unwrap_or("warn")));
            rollwise::demo::main(seed, quiet).await
        }
        Command::Run { mut config, log } => {
            let log = log.or(&cli.log);
            telemetry::init(log.format(), log.log.as_deref());
            if let Ok(k) = kube::Config::infer().await {
                config.api_server =
                    Some(k.cluster_url.to_string().trim_end_matches('/').to_string());
            }
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
            log: LogArgs::default(),
        };
    }
    let _ = has_cluster;
    Command::Run {
        config: RunConfig::from_env(),
        log: LogArgs::default(),
    }
}
