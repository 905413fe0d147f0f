//! The `kubectl rollwise` plugin: list Rollouts, show one (once or live),
//! and ask the operator for a manual action.
//!
//! Everything here takes a [`kube::Client`], the parsed arguments and
//! writers, and returns an exit code, so it runs the same against a real
//! cluster and against the in-memory API of [`crate::demo::cluster`]. The
//! status view is the pure function [`render_status`].
//!
//! Exit codes: [`EXIT_OK`] 0, [`EXIT_FAILED`] 1 (not found, action not valid
//! in this phase, other API errors, or `--until-done` ended without success),
//! [`EXIT_USAGE`] 2 (usage or kubeconfig errors), [`EXIT_FORBIDDEN`] 3
//! (HTTP 403).

pub mod config;
pub mod group;
pub mod render;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::api::{ACTION_ANNOTATION, Phase, Rollout};
use crate::plan::ManualAction;
use crate::plan::validate;
pub use render::{render_list, render_status};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Not found, action not valid in this phase, another API error, or a
/// watched rollout that ended rolled back or aborted.
pub const EXIT_FAILED: u8 = 1;
/// Usage or configuration error (bad flags, no kubeconfig, unknown context).
pub const EXIT_USAGE: u8 = 2;
/// The API server answered 403: the identity may not do this.
pub const EXIT_FORBIDDEN: u8 = 3;

/// The field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-rollwise";

/// The Rollout resource, as RBAC and error messages name it.
const RESOURCE: &str = "rollouts.rollwise.io";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kubectl-rollwise",
    bin_name = "kubectl rollwise",
    version,
    about = "Watch and steer rollwise Rollouts (progressive delivery)",
    after_help = "Exit codes: 0 ok; 1 not found, action not valid in this phase, or another API error; \
                  2 usage or kubeconfig error; 3 permission denied (HTTP 403)."
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The usual kubectl connection flags.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// The resource kind in `get rollout NAME`, `list rollouts` (the forms of
/// `kubectl argo rollouts`): Rollouts are the only kind.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    #[value(alias = "rollouts", alias = "ro")]
    Rollout,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// List Rollouts: phase, step, canary weight, verdict, message.
    #[command(visible_alias = "ls")]
    List {
        /// `rollouts` (optional: the only kind), as in `list rollouts`.
        #[arg(value_enum, value_name = "KIND")]
        kind: Option<Kind>,
        /// List Rollouts in all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show one Rollout (`get rollout NAME`, live with -w), or list them
    /// (`get rollouts`).
    Get {
        /// `rollout` (also `rollouts`, `ro`).
        #[arg(value_enum, value_name = "KIND")]
        kind: Kind,
        /// The Rollout's name; without it, every Rollout is listed.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Redraw every 2 seconds until Ctrl-C (with a NAME).
        #[arg(short = 'w', long)]
        watch: bool,
        /// List Rollouts in all namespaces (without a NAME).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Wait until the rollout is done, printing each change: exit 0 when
    /// it succeeded, 1 when it was rolled back, aborted or is invalid.
    Status {
        /// The Rollout's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Show the whole view instead, redrawn every 2 seconds until
        /// Ctrl-C (or, with --until-done, until the rollout is done).
        #[arg(short = 'w', long)]
        watch: bool,
        /// With --watch: stop when the rollout is done (exit 0 when it
        /// Succeeded, 1 when it was rolled back or aborted).
        #[arg(long, requires = "watch")]
        until_done: bool,
        /// Give up waiting after this long (e.g. 10m; exit 1).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Option<Duration>,
    },
    /// Skip the current step (ends a pause); --full: 100% canary now.
    Promote {
        /// The Rollout's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Skip all remaining steps: send 100% of traffic to the canary.
        #[arg(long)]
        full: bool,
        /// Also promote every Rollout NAME depends on (spec.dependsOn,
        /// transitively), dependencies first.
        #[arg(long)]
        group: bool,
    },
    /// Send all traffic back to stable (phase Aborted).
    Abort {
        /// The Rollout's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Also abort every Rollout that depends on NAME (spec.dependsOn,
        /// transitively), dependents first.
        #[arg(long)]
        group: bool,
    },
    /// After a rollback or abort: start the rollout again from step 1.
    Retry {
        /// The Rollout's name (`retry rollout NAME` works too).
        #[arg(value_name = "NAME", num_args = 1..=2, required = true, value_parser = retry_arg)]
        name: Vec<String>,
    },
    /// Hold the rollout at its current step (spec.paused=true); analysis
    /// keeps running, so a failing canary is still rolled back.
    Pause {
        /// The Rollout's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Let a paused rollout go on (spec.paused=false).
    Resume {
        /// The Rollout's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `retry NAME` or `retry rollout NAME`: the kind is checked when the
/// command runs (see [`retry_name`]).
fn retry_arg(s: &str) -> Result<String, String> {
    Ok(s.to_string())
}

/// The name in `retry NAME` / `retry rollout NAME`.
fn retry_name(args: &[String]) -> Result<&str, Failure> {
    match args {
        [name] => Ok(name),
        [kind, name] if matches!(kind.as_str(), "rollout" | "rollouts" | "ro") => Ok(name),
        _ => Err(Failure {
            code: EXIT_USAGE,
            message: format!("retry takes NAME or `rollout NAME`, not {args:?}"),
        }),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::plan::compile::parse_duration(s)
}

/// What the commands need besides the client and the arguments.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Terminal width for the views.
    pub width: usize,
    /// "Now" for ages in the views; `None`: the system clock.
    pub now: Option<Timestamp>,
    /// Redraw interval of `status --watch`.
    pub interval: Duration,
    /// Clear the screen between watch frames (ANSI).
    pub clear: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            width: 100,
            now: None,
            interval: Duration::from_secs(2),
            clear: true,
        }
    }
}

impl Settings {
    /// Defaults, with the width from `$COLUMNS` when set.
    pub fn from_env() -> Self {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|w| *w >= 40)
            .unwrap_or(100);
        Settings {
            width,
            ..Settings::default()
        }
    }

    fn now(&self) -> Timestamp {
        self.now.unwrap_or_else(Timestamp::now)
    }
}

/// A command that did not succeed: the exit code and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }
}

/// What a request was about, for error messages.
struct Target<'a> {
    verb: &'a str,
    resource: &'a str,
    name: Option<&'a str>,
    namespace: Option<&'a str>,
}

impl Target<'_> {
    fn describe(&self) -> String {
        let mut s = self.resource.to_string();
        if let Some(n) = self.name {
            s.push_str(&format!(" {n:?}"));
        }
        match self.namespace {
            Some(ns) => s.push_str(&format!(" in namespace {ns:?}")),
            None => s.push_str(" in all namespaces"),
        }
        s
    }
}

/// Turn a kube error into a message and exit code.
fn api_failure(e: kube::Error, t: &Target<'_>) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 403 => Failure {
            code: EXIT_FORBIDDEN,
            message: format!(
                "permission denied (HTTP 403): you may not {} {}. Ask for RBAC verb {:?} on {:?}{}. The API server said: {}",
                t.verb,
                t.describe(),
                t.verb,
                t.resource,
                t.namespace
                    .map(|ns| format!(" in namespace {ns:?}"))
                    .unwrap_or_else(|| " cluster-wide".into()),
                s.message
            ),
        },
        kube::Error::Api(s) if s.code == 401 => Failure {
            code: EXIT_USAGE,
            message: format!(
                "unauthorized (HTTP 401): the credentials of the kubeconfig were rejected: {}",
                s.message
            ),
        },
        kube::Error::Api(s)
            if s.code == 404 && s.message.contains("could not find the requested resource") =>
        {
            Failure::failed(format!(
                "the cluster does not serve {}: is the Rollout CRD installed? (kubectl apply -f crds/)",
                t.resource
            ))
        }
        kube::Error::Api(s) if s.code == 404 => match (t.name, t.namespace) {
            (Some(name), Some(ns)) => {
                Failure::failed(format!("rollout {name:?} not found in namespace {ns:?}"))
            }
            _ => Failure::failed(format!("not found: {}", s.message)),
        },
        kube::Error::Api(s) => Failure::failed(format!(
            "cannot {} {}: {} (HTTP {}, {})",
            t.verb,
            t.describe(),
            s.message,
            s.code,
            s.reason
        )),
        kube::Error::Auth(e) => Failure {
            code: EXIT_USAGE,
            message: format!("cannot authenticate with the kubeconfig's credentials: {e}"),
        },
        other => Failure::failed(format!("cannot {} {}: {other}", t.verb, t.describe())),
    }
}

/// Build the client from the flags and run the command on the process's
/// stdout and stderr. This is the whole `kubectl-rollwise` binary after
/// argument parsing.
pub async fn main(cli: Cli) -> u8 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let client = match config::client(&cli.kube).await {
        Ok(c) => c,
        Err(f) => {
            let _ = writeln!(err, "error: {}", f.message);
            return f.code;
        }
    };
    run(client, &cli, &Settings::from_env(), &mut out, &mut err).await
}

/// Run `cli.command` with `client`. Results go to `out`, errors (prefixed
/// `error: `) and notices to `err`. Returns the exit code.
pub async fn run(
    client: kube::Client,
    cli: &Cli,
    settings: &Settings,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let ns = cli
        .kube
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let result = match &cli.command {
        Command::List { all_namespaces, .. }
        | Command::Get {
            name: None,
            all_namespaces,
            ..
        } => list(client, &ns, *all_namespaces, settings, out, err).await,
        Command::Get {
            name: Some(name),
            watch: false,
            ..
        } => status(client, &ns, name, settings, out).await,
        Command::Get {
            name: Some(name),
            watch: true,
            ..
        } => watch(client, &ns, name, false, settings, out).await,
        Command::Status {
            name,
            watch: false,
            timeout,
            ..
        } => wait(client, &ns, name, *timeout, settings, out).await,
        Command::Status {
            name,
            watch: true,
            until_done,
            ..
        } => watch(client, &ns, name, *until_done, settings, out).await,
        Command::Promote { name, full, group } => {
            let action = if *full {
                ManualAction::PromoteFull
            } else {
                ManualAction::Promote
            };
            if *group {
                group::act_group(client, &ns, name, action, out).await
            } else {
                act(client, &ns, name, action, out).await
            }
        }
        Command::Abort { name, group: true } => {
            group::act_group(client, &ns, name, ManualAction::Abort, out).await
        }
        Command::Abort { name, .. } => act(client, &ns, name, ManualAction::Abort, out).await,
        Command::Retry { name } => match retry_name(name) {
            Ok(name) => act(client, &ns, name, ManualAction::Retry, out).await,
            Err(f) => Err(f),
        },
        Command::Pause { name } => set_paused(client, &ns, name, true, out).await,
        Command::Resume { name } => set_paused(client, &ns, name, false, out).await,
    };
    let _ = out.flush();
    match result {
        Ok(code) => code,
        Err(f) => {
            let _ = writeln!(err, "error: {}", f.message);
            let _ = err.flush();
            f.code
        }
    }
}

async fn list(
    client: kube::Client,
    ns: &str,
    all: bool,
    settings: &Settings,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Failure> {
    let api: Api<Rollout> = if all {
        Api::all(client)
    } else {
        Api::namespaced(client, ns)
    };
    let target = Target {
        verb: "list",
        resource: RESOURCE,
        name: None,
        namespace: (!all).then_some(ns),
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_failure(e, &target))?
        .items;
    if items.is_empty() {
        if all {
            let _ = writeln!(err, "No rollouts found.");
        } else {
            let _ = writeln!(err, "No rollouts found in namespace {ns}.");
        }
        return Ok(EXIT_OK);
    }
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let _ = write!(out, "{}", render_list(&items, all, settings.width));
    Ok(EXIT_OK)
}

async fn get_rollout(client: &kube::Client, ns: &str, name: &str) -> Result<Rollout, Failure> {
    let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
    api.get(name).await.map_err(|e| {
        api_failure(
            e,
            &Target {
                verb: "get",
                resource: RESOURCE,
                name: Some(name),
                namespace: Some(ns),
            },
        )
    })
}

/// Events listed when the server cannot select by `regarding.*`.
const EVENTS_FALLBACK_LIMIT: u32 = 500;

/// The Events about `r` (events.k8s.io/v1, `regarding` = the Rollout), in
/// any order. Asks the server to select by `regarding.kind/name`; when that
/// yields nothing or is refused (400: a server that cannot select by these
/// fields), the namespace's events (at most 500) are filtered here instead.
pub async fn rollout_events(client: &kube::Client, r: &Rollout) -> Result<Vec<Event>, Failure> {
    let ns = r.metadata.namespace.as_deref().unwrap_or("default");
    let name = r.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let target = Target {
        verb: "list",
        resource: "events.events.k8s.io",
        name: None,
        namespace: Some(ns),
    };
    let selected =
        ListParams::default().fields(&format!("regarding.kind=Rollout,regarding.name={name}"));
    match api.list(&selected).await {
        Ok(l) if !l.items.is_empty() => return Ok(only_about(l.items, r)),
        // None selected, or the server cannot select by these fields.
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 400 => {}
        Err(e) => return Err(api_failure(e, &target)),
    }
    let items = api
        .list(&ListParams::default().limit(EVENTS_FALLBACK_LIMIT))
        .await
        .map_err(|e| api_failure(e, &target))?
        .items;
    Ok(only_about(items, r))
}

fn only_about(items: Vec<Event>, r: &Rollout) -> Vec<Event> {
    items
        .into_iter()
        .filter(|e| render::is_about(e, r))
        .collect()
}

/// One status frame: the view, plus a note when the events could not be read.
async fn frame(
    client: &kube::Client,
    ns: &str,
    name: &str,
    settings: &Settings,
) -> Result<(Rollout, String), Failure> {
    let r = get_rollout(client, ns, name).await?;
    let (events, note) = match rollout_events(client, &r).await {
        Ok(evs) => (evs, None),
        Err(f) => (Vec::new(), Some(f.message)),
    };
    let mut text = render_status(&r, &events, settings.now(), settings.width);
    // The dependency tree, when the Rollout is part of one.
    let all = group::list_all(client, ns).await;
    let tree = group::render_tree(&r, &all);
    if !tree.is_empty() {
        text.push('\n');
        text.push_str(&tree);
    }
    if let Some(note) = note {
        text.push_str(&format!(
            "  (events not shown: {})\n",
            render::shorten(&note, settings.width.saturating_sub(22))
        ));
    }
    Ok((r, text))
}

async fn status(
    client: kube::Client,
    ns: &str,
    name: &str,
    settings: &Settings,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let (_, text) = frame(&client, ns, name, settings).await?;
    let _ = write!(out, "{text}");
    Ok(EXIT_OK)
}

/// `status NAME`: wait until the rollout is done, one line per change
/// (phase, step, weight, reason); exit 0 when it succeeded, 1 when it was
/// rolled back, aborted or is invalid, or the timeout passed.
async fn wait(
    client: kube::Client,
    ns: &str,
    name: &str,
    timeout: Option<Duration>,
    settings: &Settings,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let started = tokio::time::Instant::now();
    let mut last: Option<String> = None;
    // The release it is part of (spec.dependsOn, both ways), once.
    if let Ok(r) = get_rollout(&client, ns, name).await {
        let tree = group::render_tree(&r, &group::list_all(&client, ns).await);
        if !tree.is_empty() {
            let _ = writeln!(out, "{tree}");
        }
    }
    loop {
        let r = match get_rollout(&client, ns, name).await {
            Ok(r) => r,
            Err(f)
                if last.is_none() || f.code != EXIT_FAILED || f.message.contains("not found") =>
            {
                return Err(f);
            }
            // A network blip while waiting: try again.
            Err(_) => {
                tokio::time::sleep(settings.interval).await;
                continue;
            }
        };
        let st = r.status.clone().unwrap_or_default();
        let reason = st
            .last_decision
            .as_ref()
            .map(|d| d.reason.clone())
            .unwrap_or_default();
        let line = format!(
            "{} step {} weight {}%{}: {}",
            st.phase.as_str(),
            if st.step.is_empty() { "-" } else { &st.step },
            st.canary_weight,
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            },
            if st.message.is_empty() {
                "waiting for the operator"
            } else {
                &st.message
            }
        );
        if last.as_deref() != Some(line.as_str()) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            last = Some(line);
        }
        match st.phase {
            Phase::Succeeded => return Ok(EXIT_OK),
            Phase::RolledBack | Phase::Aborted | Phase::Invalid => {
                return Err(Failure::failed(format!(
                    "rollout {name:?} is {}",
                    st.phase.as_str()
                )));
            }
            _ => {}
        }
        if let Some(t) = timeout
            && started.elapsed() >= t
        {
            return Err(Failure::failed(format!(
                "rollout {name:?} not done after {}: it is {}",
                crate::plan::human(t),
                st.phase.as_str()
            )));
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// The watch interval in words (`2s`, `500ms`).
fn every(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        crate::plan::human(d)
    }
}

/// ANSI: clear the screen and move the cursor home.
pub const CLEAR: &str = "\x1b[2J\x1b[H";

async fn watch(
    client: kube::Client,
    ns: &str,
    name: &str,
    until_done: bool,
    settings: &Settings,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // The latest good frame, shown again (with the error) when a refresh fails.
    let mut last = String::new();
    loop {
        let header = format!(
            "Every {}: kubectl rollwise status {name} -n {ns} --watch{}   (Ctrl-C to stop)\n\n",
            every(settings.interval),
            if until_done { " --until-done" } else { "" },
        );
        let (text, done) = match frame(&client, ns, name, settings).await {
            Ok((r, text)) => {
                let done = r
                    .status
                    .as_ref()
                    .map(|s| s.phase)
                    .filter(|p| until_done && p.is_terminal());
                last = text.clone();
                (text, done)
            }
            // The first read failed, or the Rollout is gone or forbidden:
            // nothing to watch.
            Err(f)
                if last.is_empty() || f.code != EXIT_FAILED || f.message.contains("not found") =>
            {
                return Err(f);
            }
            // Anything else later on (a network blip) is shown and retried.
            Err(f) => (
                format!("{last}\n  (refresh failed, retrying: {})\n", f.message),
                None,
            ),
        };
        if settings.clear {
            let _ = write!(out, "{CLEAR}");
        }
        let _ = write!(out, "{header}{text}");
        let _ = out.flush();
        if let Some(phase) = done {
            return Ok(if phase == Phase::Succeeded {
                EXIT_OK
            } else {
                EXIT_FAILED
            });
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                let _ = writeln!(out);
                return Ok(EXIT_OK);
            }
            _ = tokio::time::sleep(settings.interval) => {}
        }
    }
}

/// Whether `action` is valid for `r` now (the engine's rules). `Ok`: what
/// the operator will do; `Err`: why not.
pub fn check_action(r: &Rollout, action: ManualAction) -> Result<String, String> {
    let name = r.metadata.name.as_deref().unwrap_or("NAME");
    let st = r.status.clone().unwrap_or_default();
    let phase = st.phase;
    let plan = validate(&r.spec).ok();
    let total = plan.as_ref().map(|p| p.steps.len()).unwrap_or(0);
    let current = st.current_step_index.max(0) as usize;
    let step = |i: usize| -> String {
        match plan.as_ref().and_then(|p| p.steps.get(i)) {
            Some(s) => format!("step {}/{total} ({})", i + 1, render::describe_step(s)),
            None => format!("step {}", i + 1),
        }
    };
    match action {
        ManualAction::Abort if phase.is_terminal() => Err(format!(
            "nothing to abort: the rollout is {}",
            phase.as_str()
        )),
        ManualAction::Abort => Ok(format!(
            "abort requested: the operator will send all traffic back to stable ({}) and set the phase to Aborted",
            r.spec.stable.service
        )),
        ManualAction::Retry if matches!(phase, Phase::RolledBack | Phase::Aborted) => Ok(format!(
            "retry requested: the operator will start {} again from {} with all traffic on stable first",
            r.spec.canary.service,
            step(0)
        )),
        ManualAction::Retry => Err(format!(
            "retry applies after a rollback or abort; the rollout is {}",
            phase.as_str()
        )),
        ManualAction::Promote | ManualAction::PromoteFull if phase.is_terminal() => {
            let hint = if phase == Phase::Succeeded {
                "nothing left to promote"
            } else {
                "use `retry` to start it again"
            };
            Err(format!("the rollout is {} ({hint})", phase.as_str()))
        }
        ManualAction::Promote | ManualAction::PromoteFull if r.spec.paused => Err(format!(
            "spec.paused is true: resume it first (kubectl rollwise resume {name})"
        )),
        ManualAction::PromoteFull => Ok(format!(
            "promote-full requested: the operator will skip the remaining steps ({}-{total}) and send 100% of traffic to the canary ({})",
            current + 1,
            r.spec.canary.service
        )),
        ManualAction::Promote => {
            let then = if total > 0 && current + 1 >= total {
                "complete the rollout (100% canary)".to_string()
            } else {
                format!("go on with {}", step(current + 1))
            };
            Ok(format!(
                "promote requested: the operator will skip {} and {then}",
                step(current)
            ))
        }
    }
}

/// Attempts of a check-then-write that lost a race with the operator.
const CONFLICT_RETRIES: usize = 5;

async fn act(
    client: kube::Client,
    ns: &str,
    name: &str,
    action: ManualAction,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        let r = get_rollout(&client, ns, name).await?;
        let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
        let what = check_action(&r, action).map_err(|why| {
            Failure::failed(format!(
                "{} is not valid in phase {}: {why}",
                action.as_str(),
                phase.as_str()
            ))
        })?;
        let pending = r
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ACTION_ANNOTATION))
            .cloned();
        // The resourceVersion makes the write conditional on the phase we
        // checked: if the operator moved on meanwhile, check again.
        let patch = json!({"metadata": {
            "resourceVersion": r.metadata.resource_version,
            "annotations": {ACTION_ANNOTATION: action.as_str()}
        }});
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                if let Some(p) = pending.filter(|p| p != action.as_str()) {
                    let _ = writeln!(
                        out,
                        "note: replaced the pending action {p:?}, which the operator had not carried out yet"
                    );
                }
                let _ = writeln!(out, "{what}");
                let _ = writeln!(
                    out,
                    "The operator carries it out on its next reconcile (or refuses it, e.g. if the canary is unavailable) and records it in status.lastAction. Follow it: kubectl rollwise status {name} -n {ns} --watch"
                );
                return Ok(EXIT_OK);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(api_failure(
                    e,
                    &Target {
                        verb: "patch",
                        resource: RESOURCE,
                        name: Some(name),
                        namespace: Some(ns),
                    },
                ));
            }
        }
    }
    Err(Failure::failed(format!(
        "rollout {name:?} kept changing while requesting {}; try again",
        action.as_str()
    )))
}

async fn set_paused(
    client: kube::Client,
    ns: &str,
    name: &str,
    paused: bool,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let r = get_rollout(&client, ns, name).await?;
    let verb = if paused { "paused" } else { "resumed" };
    if r.spec.paused == paused {
        let _ = writeln!(
            out,
            "rollout {ns}/{name} is already {} (spec.paused={paused}): nothing to do",
            if paused { "paused" } else { "not paused" }
        );
        return Ok(EXIT_OK);
    }
    let api: Api<Rollout> = Api::namespaced(client, ns);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(
        name,
        &params,
        &Patch::Merge(&json!({"spec": {"paused": paused}})),
    )
    .await
    .map_err(|e| {
        api_failure(
            e,
            &Target {
                verb: "patch",
                resource: RESOURCE,
                name: Some(name),
                namespace: Some(ns),
            },
        )
    })?;
    let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let _ = writeln!(out, "rollout {ns}/{name} {verb} (spec.paused={paused})");
    if paused {
        let _ = writeln!(
            out,
            "No step advances until `kubectl rollwise resume {name}`; analysis keeps running, so a failing canary is still rolled back."
        );
    } else {
        let _ = writeln!(out, "The rollout goes on from its current step.");
    }
    if phase.is_terminal() {
        let _ = writeln!(
            out,
            "note: the rollout is {}: this only matters for its next canary or retry",
            phase.as_str()
        );
    }
    Ok(EXIT_OK)
}
