//! The gRPC edge: decode the request, call [`Compute`], encode the reply.
//! Errors become `tonic::Status` here and nowhere else.

use std::{collections::BTreeMap, pin::Pin};

use futures::{Stream, StreamExt};
use strata_kit::{Identity, error::timestamp};
use strata_proto::compute::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    app::{self, Compute, Placement, Progress, Source},
    logs,
    model::{App, ConfigVar, Deployment, DeploymentStatus, Release, SourceKind},
    runtime::InstanceView,
};

/// The `strata.compute.v1.ComputeService` implementation.
#[derive(Debug, Clone)]
pub struct ComputeApi {
    compute: Compute,
    shutdown: CancellationToken,
}

impl ComputeApi {
    pub fn new(compute: Compute, shutdown: CancellationToken) -> Self {
        Self { compute, shutdown }
    }

    async fn app_reply(&self, app: &App) -> Result<pb::App, Status> {
        let state = self.compute.app_status(app);
        let canary_version = self.compute.canary_version_of(app).await.map_err(Status::from)?;
        Ok(pb::App {
            id: app.id.clone(),
            name: app.name.clone(),
            team: app.team.clone(),
            status: state.status.into(),
            release_version: self.compute.release_version_of(app).await.map_err(Status::from)?,
            desired_instances: app.instances,
            running_instances: state.running,
            created_at: Some(timestamp(app.created_at)),
            canary_version,
            canary_desired_instances: if canary_version == 0 { 0 } else { app.canary_instances },
            canary_running_instances: state.canary_running,
        })
    }
}

fn config_reply(vars: Vec<ConfigVar>) -> pb::ConfigVars {
    pb::ConfigVars {
        vars: vars
            .into_iter()
            .map(|v| pb::ConfigVar {
                value: if v.secret { app::mask(&v.value) } else { v.value },
                key: v.key,
                secret: v.secret,
            })
            .collect(),
    }
}

fn release_reply(app: &str, release: &Release) -> pb::Release {
    pb::Release {
        id: release.id.clone(),
        app: app.to_owned(),
        version: release.version,
        source: match release.source {
            SourceKind::Archive => pb::SourceKind::Archive,
            SourceKind::Command => pb::SourceKind::Command,
        }
        .into(),
        buildpack: release.buildpack.clone(),
        command: release.argv.join(" "),
        config_keys: release.env.keys().cloned().collect(),
        created_at: Some(timestamp(release.created_at)),
    }
}

fn deployment_reply(app: &str, deployment: &Deployment) -> pb::Deployment {
    pb::Deployment {
        id: deployment.id.clone(),
        app: app.to_owned(),
        release_version: deployment.version,
        status: match deployment.status {
            DeploymentStatus::Building => pb::DeploymentStatus::Building,
            DeploymentStatus::RollingOut => pb::DeploymentStatus::RollingOut,
            DeploymentStatus::Succeeded => pb::DeploymentStatus::Succeeded,
            DeploymentStatus::Failed => pb::DeploymentStatus::Failed,
        }
        .into(),
        reason: deployment.reason.clone(),
        created_at: Some(timestamp(deployment.created_at)),
        finished_at: deployment.finished_at.map(timestamp),
        canary: deployment.canary,
    }
}

fn instance_reply(app: &str, host: &str, view: &InstanceView) -> pb::Instance {
    pb::Instance {
        id: view.id.clone(),
        app: app.to_owned(),
        release_version: view.version,
        state: view.state.to_proto().into(),
        host: host.to_owned(),
        port: u32::from(view.port),
        pid: view.pid,
        restarts: view.restarts,
        started_at: Some(timestamp(view.started_at)),
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::DeployProgress, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;

/// Runs a deployment in its own task (it finishes even if the caller goes
/// away) and streams its progress, ending with the deployment's outcome.
fn progress_stream<F>(app: String, run: impl FnOnce(mpsc::UnboundedSender<Progress>) -> F) -> ProgressStream
where
    F: std::future::Future<Output = Result<Deployment, app::Error>> + Send + 'static,
{
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Result<pb::DeployProgress, Status>>();
    let deployment = tokio::spawn(run(progress_tx));
    tokio::spawn(async move {
        use pb::deploy_progress::Event;
        while let Some(step) = progress_rx.recv().await {
            let event = match step {
                Progress::Log(line) => Event::Log(line),
                Progress::Release(release) => Event::Release(release_reply(&app, &release)),
            };
            let _ = out_tx.send(Ok(pb::DeployProgress { event: Some(event) }));
        }
        let last = match deployment.await {
            Ok(Ok(deployment)) => {
                Ok(pb::DeployProgress { event: Some(Event::Deployment(deployment_reply(&app, &deployment))) })
            }
            Ok(Err(error)) => Err(Status::from(error)),
            Err(join) => Err(Status::internal(format!("the deployment task failed: {join}"))),
        };
        let _ = out_tx.send(last);
    });
    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx))
}

#[tonic::async_trait]
impl pb::compute_service_server::ComputeService for ComputeApi {
    #[tracing::instrument(skip_all, fields(app = %request.get_ref().name))]
    async fn create_app(&self, request: Request<pb::CreateAppRequest>) -> Result<Response<pb::App>, Status> {
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        let app = self.compute.app_create(&identity, &request.get_ref().name).await.map_err(Status::from)?;
        Ok(Response::new(self.app_reply(&app).await?))
    }

    async fn get_app(&self, request: Request<pb::GetAppRequest>) -> Result<Response<pb::App>, Status> {
        let identity = Identity::of(&request)?;
        let app = self.compute.app_find(&identity, &request.get_ref().app).await.map_err(Status::from)?;
        Ok(Response::new(self.app_reply(&app).await?))
    }

    async fn list_apps(&self, request: Request<pb::ListAppsRequest>) -> Result<Response<pb::ListAppsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let mut apps = Vec::new();
        for app in self.compute.app_list(&identity).await.map_err(Status::from)? {
            apps.push(self.app_reply(&app).await?);
        }
        Ok(Response::new(pb::ListAppsResponse { apps }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn delete_app(
        &self,
        request: Request<pb::DeleteAppRequest>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        self.compute.app_delete(&identity, &request.get_ref().app).await.map_err(Status::from)?;
        Ok(Response::new(pb::DeleteAppResponse {}))
    }

    async fn set_config(&self, request: Request<pb::SetConfigRequest>) -> Result<Response<pb::ConfigVars>, Status> {
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        let req = request.get_ref();
        let vars: BTreeMap<String, String> = req.vars.clone().into_iter().collect();
        let vars = self.compute.config_set(&identity, &req.app, &vars, req.secret).await.map_err(Status::from)?;
        Ok(Response::new(config_reply(vars)))
    }

    async fn unset_config(&self, request: Request<pb::UnsetConfigRequest>) -> Result<Response<pb::ConfigVars>, Status> {
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        let req = request.get_ref();
        let vars = self.compute.config_unset(&identity, &req.app, &req.keys).await.map_err(Status::from)?;
        Ok(Response::new(config_reply(vars)))
    }

    async fn list_config(&self, request: Request<pb::ListConfigRequest>) -> Result<Response<pb::ConfigVars>, Status> {
        let identity = Identity::of(&request)?;
        let vars = self.compute.config_list(&identity, &request.get_ref().app).await.map_err(Status::from)?;
        Ok(Response::new(config_reply(vars)))
    }

    async fn upload_source(
        &self,
        request: Request<Streaming<pb::UploadSourceRequest>>,
    ) -> Result<Response<pb::Upload>, Status> {
        use pb::upload_source_request::Part;
        let identity = Identity::of(&request)?;
        let mut stream = request.into_inner();
        let app = match stream.message().await? {
            Some(pb::UploadSourceRequest { part: Some(Part::App(app)) }) => app,
            _ => return Err(Status::invalid_argument("the first message of an upload must name the app")),
        };
        let chunks = stream.map(|message| match message {
            Ok(pb::UploadSourceRequest { part: Some(Part::Chunk(bytes)) }) => Ok(bytes),
            Ok(_) => {
                Err(app::Error::InvalidArgument("after the first message, an upload sends only chunks".to_owned()))
            }
            Err(status) => Err(app::Error::InvalidArgument(format!("the upload broke off: {}", status.message()))),
        });
        let upload = self.compute.upload_receive(&identity, &app, Box::pin(chunks)).await.map_err(Status::from)?;
        Ok(Response::new(pb::Upload { id: upload.id, size_bytes: upload.size_bytes, files: upload.files }))
    }

    type DeployStream = ProgressStream;

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn deploy(&self, request: Request<pb::DeployRequest>) -> Result<Response<Self::DeployStream>, Status> {
        use pb::deploy_request::Source as S;
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        let req = request.into_inner();
        let source = match req.source {
            Some(S::UploadId(id)) => Source::Upload(id),
            Some(S::Command(command)) => Source::Command { argv: command.argv, workdir: command.workdir },
            Some(S::ReleaseVersion(version)) => Source::Release(version),
            None => {
                return Err(Status::invalid_argument(
                    "say what to deploy: an upload id, a command or an existing release's version",
                ));
            }
        };
        let placement = Placement::of_request(req.instances, req.canary, req.canary_instances).map_err(Status::from)?;
        // Fail fast on what can be checked before the stream starts.
        self.compute.app_find(&identity, &req.app).await.map_err(Status::from)?;
        let compute = self.compute.clone();
        let app = req.app.clone();
        Ok(Response::new(progress_stream(req.app, move |progress| async move {
            compute.deploy(&identity, &app, source, placement, progress).await
        })))
    }

    type RollbackStream = ProgressStream;

    async fn rollback(&self, request: Request<pb::RollbackRequest>) -> Result<Response<Self::RollbackStream>, Status> {
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        let req = request.into_inner();
        self.compute.app_find(&identity, &req.app).await.map_err(Status::from)?;
        let compute = self.compute.clone();
        let app = req.app.clone();
        Ok(Response::new(progress_stream(req.app, move |progress| async move {
            compute.rollback(&identity, &app, req.version, progress).await
        })))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let identity = Identity::of(&request)?;
        let app = &request.get_ref().app;
        let releases = self.compute.releases_list(&identity, app).await.map_err(Status::from)?;
        Ok(Response::new(pb::ListReleasesResponse {
            releases: releases.iter().map(|r| release_reply(app, r)).collect(),
        }))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let app = &request.get_ref().app;
        let deployments = self.compute.deployments_list(&identity, app).await.map_err(Status::from)?;
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: deployments.iter().map(|d| deployment_reply(app, d)).collect(),
        }))
    }

    async fn scale(&self, request: Request<pb::ScaleRequest>) -> Result<Response<pb::App>, Status> {
        let identity = Identity::of(&request)?;
        identity.require_write()?;
        let req = request.get_ref();
        let app = self.compute.scale(&identity, &req.app, req.instances).await.map_err(Status::from)?;
        Ok(Response::new(self.app_reply(&app).await?))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let identity = Identity::of(&request)?;
        let app = &request.get_ref().app;
        let host = self.compute.runtime().host().to_owned();
        let instances = self.compute.instances_list(&identity, app).await.map_err(Status::from)?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: instances.iter().map(|i| instance_reply(app, &host, i)).collect(),
        }))
    }

    type StreamLogsStream = LogStream;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        let app = self.compute.app_find(&identity, &req.app).await.map_err(Status::from)?;
        let tail = if req.tail == 0 { 100 } else { req.tail as usize };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(logs::stream(
            self.compute.runtime().log_dir(&app.id),
            tail,
            req.follow,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}
