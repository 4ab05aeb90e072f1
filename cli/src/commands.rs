//! The commands that drive compute through the gateway.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use strata_proto::compute::v1 as pb;

use crate::{
    Global,
    output::{self, DeploymentFailed, ago, table},
    pack, session,
};

/// Which app a command is about.
#[derive(Args, Debug, Clone)]
pub struct AppArg {
    /// The app (or set STRATA_APP).
    #[arg(short, long, env = "STRATA_APP")]
    pub app: Option<String>,
}

impl AppArg {
    fn name(&self) -> anyhow::Result<String> {
        self.app.clone().context("say which app: `-a NAME` (or set STRATA_APP); `strata apps list` shows them")
    }
}

#[derive(Subcommand)]
pub enum AppsCommand {
    /// Create an app (names: lowercase letters, digits, hyphens).
    Create { name: String },
    /// List your team's apps.
    List,
    /// Show an app: status, release, instances.
    Info {
        /// The app (or -a / STRATA_APP).
        name: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Delete an app, its releases and its instances.
    Delete {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
pub struct DeployArgs {
    /// The source directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// The app (default: the directory's name); created if it does not exist.
    #[arg(short, long, env = "STRATA_APP")]
    pub app: Option<String>,
    /// Instances to run (default: keep the current count, 1 for a new app).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub instances: u32,
    /// Start the new release beside the current one as a canary instead of
    /// replacing it; routes decide the share each gets
    /// (`strata routes create ... --to web@7=90 --to web@8=10`). Deploying the
    /// canary's release again without --canary (`--release v8`) promotes it;
    /// any other deploy or a rollback ends it.
    #[arg(long, conflicts_with = "instances")]
    pub canary: bool,
    /// Instances of the canary (default 1).
    #[arg(long, requires = "canary")]
    pub canary_instances: Option<u32>,
    /// Deploy an existing release again instead of new code, e.g. `v8`
    /// (with --canary: as the canary).
    #[arg(long, requires = "app", conflicts_with_all = ["dir", "cmd"])]
    pub release: Option<String>,
    /// Deploy a command already on this machine instead of source, e.g.
    /// `strata deploy -a web --cmd -- python3 -m http.server '$PORT'`.
    #[arg(long, requires = "app")]
    pub cmd: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The release to go back to, e.g. `v3` (default: the previous one).
    pub version: Option<String>,
    #[command(flatten)]
    pub app: AppArg,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// How many instances to run.
    pub instances: u32,
    #[command(flatten)]
    pub app: AppArg,
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines of history per instance.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: u32,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set vars: `strata config set KEY=VALUE ... -a APP`.
    Set {
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Store them as secrets (never shown again in full).
        #[arg(long)]
        secret: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove vars.
    Unset {
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// List vars (secrets masked).
    List {
        #[command(flatten)]
        app: AppArg,
    },
}

fn status_name(status: i32) -> String {
    pb::AppStatus::try_from(status)
        .map(|s| s.as_str_name().trim_start_matches("APP_STATUS_").to_lowercase().replace('_', "-"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn app_json(app: &pb::App) -> serde_json::Value {
    let mut value = json!({
        "name": app.name, "id": app.id, "team": app.team, "status": status_name(app.status),
        "release": app.release_version, "desired_instances": app.desired_instances,
        "running_instances": app.running_instances,
    });
    if app.canary_version != 0 {
        value["canary"] = json!({
            "release": app.canary_version, "desired_instances": app.canary_desired_instances,
            "running_instances": app.canary_running_instances,
        });
    }
    value
}

/// `v7`, `v7 + canary v8`, or `-` before the first deploy.
fn releases_shown(app: &pb::App) -> String {
    match (app.release_version, app.canary_version) {
        (0, _) => "-".to_owned(),
        (current, 0) => format!("v{current}"),
        (current, canary) => format!("v{current} + canary v{canary}"),
    }
}

/// `2/2`, or `2/2 + 1/1` with a canary: running of desired.
fn instances_shown(app: &pb::App) -> String {
    let current = format!("{}/{}", app.running_instances, app.desired_instances);
    if app.canary_version == 0 {
        current
    } else {
        format!("{current} + {}/{}", app.canary_running_instances, app.canary_desired_instances)
    }
}

/// A release version as typed: `v8` or `8`.
fn parse_version(text: &str) -> anyhow::Result<u32> {
    text.trim_start_matches('v').parse().with_context(|| format!("{text:?} is not a release: use e.g. v3"))
}

fn instance_json(i: &pb::Instance) -> serde_json::Value {
    json!({
        "id": i.id, "release": i.release_version, "host": i.host, "port": i.port, "pid": i.pid,
        "restarts": i.restarts,
        "state": pb::InstanceState::try_from(i.state).map(|s| s.as_str_name().trim_start_matches("INSTANCE_STATE_").to_lowercase()).unwrap_or_default(),
        "url": format!("http://{}:{}", i.host, i.port),
    })
}

pub async fn apps(global: &Global, command: AppsCommand) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    match command {
        AppsCommand::Create { name } => {
            let app = compute.create_app(pb::CreateAppRequest { name }).await?.into_inner();
            if global.json {
                return output::json(&app_json(&app));
            }
            println!("Created {} in team {}. Next: strata deploy DIR -a {}", app.name, app.team, app.name);
        }
        AppsCommand::List => {
            let apps = compute.list_apps(pb::ListAppsRequest {}).await?.into_inner().apps;
            if global.json {
                return output::json(&json!(apps.iter().map(app_json).collect::<Vec<_>>()));
            }
            if apps.is_empty() {
                println!("No apps yet. Create one with `strata deploy DIR` or `strata apps create NAME`.");
                return Ok(());
            }
            let rows = apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        status_name(a.status),
                        releases_shown(a),
                        instances_shown(a),
                        ago(a.created_at.as_ref()),
                    ]
                })
                .collect();
            println!("{}", table(&["name", "status", "release", "instances", "created"], rows));
        }
        AppsCommand::Info { name, app } => {
            let name = name.or(app.app).context("say which app: `strata apps info NAME`")?;
            let app = compute.get_app(pb::GetAppRequest { app: name.clone() }).await?.into_inner();
            let instances =
                compute.list_instances(pb::ListInstancesRequest { app: name }).await?.into_inner().instances;
            if global.json {
                let mut value = app_json(&app);
                value["instances"] = json!(instances.iter().map(instance_json).collect::<Vec<_>>());
                return output::json(&value);
            }
            println!("{} ({})", app.name, status_name(app.status));
            println!("  team:      {}", app.team);
            println!("  release:   v{}", app.release_version);
            println!("  instances: {} running of {} desired", app.running_instances, app.desired_instances);
            if app.canary_version != 0 {
                println!(
                    "  canary:    v{}, {} running of {} desired (routes split requests: --to {}@{}=90 --to {}@{}=10)",
                    app.canary_version,
                    app.canary_running_instances,
                    app.canary_desired_instances,
                    app.name,
                    app.release_version,
                    app.name,
                    app.canary_version
                );
            }
            for i in &instances {
                println!("  - {}  v{}  http://{}:{}  restarts {}", i.id, i.release_version, i.host, i.port, i.restarts);
            }
        }
        AppsCommand::Delete { name, yes } => {
            if !yes {
                anyhow::ensure!(
                    confirm(&format!("Delete {name}, its releases and instances? Type the app's name: "), &name)?,
                    "not deleted (pass --yes to skip the question)"
                );
            }
            compute.delete_app(pb::DeleteAppRequest { app: name.clone() }).await?;
            println!("Deleted {name}");
        }
    }
    Ok(())
}

fn confirm(prompt: &str, expected: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, Write};
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == expected)
}

pub async fn deploy(global: &Global, args: DeployArgs) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let name = match &args.app {
        Some(app) => app.clone(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_lowercase().replace(['_', '.', ' '], "-")))
            .context("cannot name the app after the directory: pass -a NAME")?,
    };
    match compute.get_app(pb::GetAppRequest { app: name.clone() }).await {
        Ok(_) => {}
        // An existing release belongs to an existing app: say so, not create one.
        Err(status) if status.code() == tonic::Code::NotFound && args.release.is_none() => {
            compute.create_app(pb::CreateAppRequest { name: name.clone() }).await?;
            eprintln!("Created app {name}");
        }
        Err(status) => return Err(status.into()),
    }

    let source = if let Some(release) = &args.release {
        pb::deploy_request::Source::ReleaseVersion(parse_version(release)?)
    } else if args.cmd {
        anyhow::ensure!(
            !args.command.is_empty(),
            "give the command after `--`: strata deploy -a APP --cmd -- PROGRAM ARGS"
        );
        let workdir = match &args.dir {
            Some(dir) => dir.canonicalize()?.display().to_string(),
            None => String::new(),
        };
        pb::deploy_request::Source::Command(pb::CommandSource { argv: args.command.clone(), workdir })
    } else {
        let packed = pack::pack(&dir)?;
        let upload = upload(&mut compute, &name, packed).await?;
        pb::deploy_request::Source::UploadId(upload.id)
    };

    let request = pb::DeployRequest {
        app: name.clone(),
        source: Some(source),
        instances: args.instances,
        canary: args.canary,
        canary_instances: args.canary_instances.unwrap_or(0),
    };
    let mut stream = compute.deploy(request).await?.into_inner();
    let deployment = follow_deployment(&mut stream, global.json).await?;
    finish(global, &mut compute, &name, deployment).await
}

async fn upload(compute: &mut session::Compute, app: &str, packed: pack::Packed) -> anyhow::Result<pb::Upload> {
    use pb::upload_source_request::Part;
    const CHUNK: usize = 256 * 1024;
    let total = packed.bytes.len() as u64;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("Uploading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = bar.clone();
    let app = app.to_owned();
    let first = futures::stream::once(async move { pb::UploadSourceRequest { part: Some(Part::App(app)) } });
    let chunks =
        futures::stream::iter(packed.bytes.chunks(CHUNK).map(|c| c.to_vec()).collect::<Vec<_>>()).map(move |chunk| {
            progress.inc(chunk.len() as u64);
            pb::UploadSourceRequest { part: Some(Part::Chunk(chunk)) }
        });
    let upload = compute.upload_source(first.chain(chunks)).await?.into_inner();
    bar.finish_and_clear();
    eprintln!("Uploaded {} files ({} bytes)", packed.files, total);
    Ok(upload)
}

/// Prints the build log as it streams; returns the outcome.
async fn follow_deployment(
    stream: &mut tonic::Streaming<pb::DeployProgress>,
    json: bool,
) -> anyhow::Result<pb::Deployment> {
    use pb::deploy_progress::Event;
    while let Some(progress) = stream.next().await {
        match progress?.event {
            Some(Event::Log(line)) if !json => eprintln!("{line}"),
            Some(Event::Deployment(deployment)) => return Ok(deployment),
            _ => {}
        }
    }
    anyhow::bail!("the platform ended the deployment stream without an outcome; `strata releases` shows what happened")
}

async fn finish(
    global: &Global,
    compute: &mut session::Compute,
    app: &str,
    deployment: pb::Deployment,
) -> anyhow::Result<()> {
    if deployment.status != pb::DeploymentStatus::Succeeded as i32 {
        if global.json {
            output::json(
                &json!({"app": app, "release": deployment.release_version, "status": "failed", "reason": deployment.reason}),
            )?;
        }
        return Err(DeploymentFailed(format!(
            "{} (the previous release keeps running; `strata logs -a {app}` may tell more)",
            deployment.reason
        ))
        .into());
    }
    let instances =
        compute.list_instances(pb::ListInstancesRequest { app: app.to_owned() }).await?.into_inner().instances;
    let urls: Vec<String> = instances
        .iter()
        .filter(|i| i.release_version == deployment.release_version)
        .map(|i| format!("http://{}:{}", i.host, i.port))
        .collect();
    let current = compute.get_app(pb::GetAppRequest { app: app.to_owned() }).await?.into_inner();
    let canary = current.canary_version != 0 && current.canary_version == deployment.release_version;
    if global.json {
        return output::json(&json!({
            "app": app, "release": deployment.release_version, "status": "succeeded", "urls": urls, "canary": canary,
        }));
    }
    if canary {
        println!(
            "Started canary v{} of {app} beside v{}: serving at {}",
            deployment.release_version,
            current.release_version,
            urls.join(" ")
        );
        println!(
            "Split requests with `strata routes create NAME --host HOST --to {app}@{}=90 --to {app}@{}=10`; \
             promote with `strata deploy -a {app} --release v{}`.",
            current.release_version, deployment.release_version, deployment.release_version
        );
        return Ok(());
    }
    println!("Deployed {app} v{}: serving at {}", deployment.release_version, urls.join(" "));
    Ok(())
}

pub async fn releases(global: &Global, args: AppArg) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let name = args.name()?;
    let app = compute.get_app(pb::GetAppRequest { app: name.clone() }).await?.into_inner();
    let (current, canary) = (app.release_version, app.canary_version);
    let releases = compute.list_releases(pb::ListReleasesRequest { app: name }).await?.into_inner().releases;
    if global.json {
        return output::json(&json!(releases
            .iter()
            .map(|r| json!({"version": r.version, "buildpack": r.buildpack, "command": r.command, "config_keys": r.config_keys, "current": r.version == current, "canary": r.version == canary}))
            .collect::<Vec<_>>()));
    }
    let rows = releases
        .iter()
        .map(|r| {
            let mark = if r.version == current {
                " *"
            } else if r.version == canary {
                " (canary)"
            } else {
                ""
            };
            vec![format!("v{}{mark}", r.version), r.buildpack.clone(), r.command.clone(), ago(r.created_at.as_ref())]
        })
        .collect();
    println!("{}", table(&["release", "buildpack", "command", "created"], rows));
    Ok(())
}

pub async fn rollback(global: &Global, args: RollbackArgs) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let name = args.app.name()?;
    let version = match &args.version {
        None => 0,
        Some(v) => parse_version(v)?,
    };
    let mut stream = compute.rollback(pb::RollbackRequest { app: name.clone(), version }).await?.into_inner();
    let deployment = follow_deployment(&mut stream, global.json).await?;
    finish(global, &mut compute, &name, deployment).await
}

pub async fn scale(global: &Global, args: ScaleArgs) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let name = args.app.name()?;
    compute.scale(pb::ScaleRequest { app: name.clone(), instances: args.instances }).await?;
    // Wait for the platform to get there, so scripts can rely on it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let app = compute.get_app(pb::GetAppRequest { app: name.clone() }).await?.into_inner();
        let instances =
            compute.list_instances(pb::ListInstancesRequest { app: name.clone() }).await?.into_inner().instances;
        if app.running_instances == args.instances && instances.len() as u32 == args.instances {
            if global.json {
                return output::json(&app_json(&app));
            }
            println!("{name} runs {} instance(s)", args.instances);
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} has {} of {} instances running after 60s: see `strata logs -a {name}`",
            app.running_instances,
            args.instances
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn ps(global: &Global, args: AppArg) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let instances =
        compute.list_instances(pb::ListInstancesRequest { app: args.name()? }).await?.into_inner().instances;
    if global.json {
        return output::json(&json!(instances.iter().map(instance_json).collect::<Vec<_>>()));
    }
    let rows = instances
        .iter()
        .map(|i| {
            let v = instance_json(i);
            vec![
                i.id.clone(),
                format!("v{}", i.release_version),
                v["state"].as_str().unwrap_or_default().to_owned(),
                format!("http://{}:{}", i.host, i.port),
                i.restarts.to_string(),
                ago(i.started_at.as_ref()),
            ]
        })
        .collect();
    println!("{}", table(&["instance", "release", "state", "url", "restarts", "started"], rows));
    Ok(())
}

pub async fn logs(global: &Global, args: LogsArgs) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let mut stream = compute
        .stream_logs(pb::StreamLogsRequest { app: args.app.name()?, tail: args.lines, follow: args.follow })
        .await?
        .into_inner();
    while let Some(line) = stream.message().await? {
        if global.json {
            println!("{}", json!({"instance": line.instance_id, "text": line.text}));
        } else {
            println!("{} | {}", line.instance_id, line.text);
        }
    }
    Ok(())
}

pub async fn config(global: &Global, command: ConfigCommand) -> anyhow::Result<()> {
    let mut compute = session::compute(global).await?;
    let (vars, note) = match command {
        ConfigCommand::Set { pairs, secret, app } => {
            let mut vars = std::collections::HashMap::new();
            for pair in pairs {
                let (key, value) = pair.split_once('=').with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
                vars.insert(key.to_owned(), value.to_owned());
            }
            let reply = compute.set_config(pb::SetConfigRequest { app: app.name()?, vars, secret }).await?.into_inner();
            (reply.vars, Some("Set. A deployed app gets a new release with it, already serving (`strata releases`)."))
        }
        ConfigCommand::Unset { keys, app } => {
            let reply = compute.unset_config(pb::UnsetConfigRequest { app: app.name()?, keys }).await?.into_inner();
            (reply.vars, Some("Unset. A deployed app gets a new release without it, already serving."))
        }
        ConfigCommand::List { app } => {
            (compute.list_config(pb::ListConfigRequest { app: app.name()? }).await?.into_inner().vars, None)
        }
    };
    if global.json {
        return output::json(&json!(
            vars.iter().map(|v| json!({"key": v.key, "value": v.value, "secret": v.secret})).collect::<Vec<_>>()
        ));
    }
    let rows = vars
        .iter()
        .map(|v| vec![v.key.clone(), v.value.clone(), if v.secret { "yes" } else { "" }.to_owned()])
        .collect();
    println!("{}", table(&["key", "value", "secret"], rows));
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(())
}
