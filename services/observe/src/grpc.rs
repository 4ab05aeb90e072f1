//! The gRPC edge of observe: decode, call the domain, encode.

use std::pin::Pin;

use futures::Stream;
use strata_kit::{ApiError, Identity, error::timestamp};
use strata_proto::observe::v1 as pb;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    app::{CheckRequest, CheckView, Observe},
    model::{
        AlertRecord, ChannelRecord, Condition, EventFilter, Histogram, Kind, LoggedEvent, RuleRecord, Spec, State,
    },
};

/// The `strata.observe.v1.ObserveService` implementation.
#[derive(Debug, Clone)]
pub struct ObserveApi {
    observe: Observe,
    shutdown: CancellationToken,
}

impl ObserveApi {
    /// `shutdown` ends the live event streams.
    pub fn new(observe: Observe, shutdown: CancellationToken) -> Self {
        Self { observe, shutdown }
    }
}

fn kind_of(kind: i32) -> Result<Kind, Status> {
    match pb::CheckKind::try_from(kind) {
        Ok(pb::CheckKind::Http | pb::CheckKind::Unspecified) => Ok(Kind::Http),
        Ok(pb::CheckKind::Tcp) => Ok(Kind::Tcp),
        Ok(pb::CheckKind::Grpc) => Ok(Kind::Grpc),
        Err(_) => Err(Status::invalid_argument(format!("unknown check kind {kind}"))),
    }
}

fn kind_reply(kind: Kind) -> pb::CheckKind {
    match kind {
        Kind::Http => pb::CheckKind::Http,
        Kind::Tcp => pb::CheckKind::Tcp,
        Kind::Grpc => pb::CheckKind::Grpc,
    }
}

fn state_reply(state: State) -> pb::TargetState {
    match state {
        State::Unknown => pb::TargetState::Unknown,
        State::Passing => pb::TargetState::Passing,
        State::Failing => pb::TargetState::Failing,
    }
}

fn condition_of(condition: i32) -> Result<Condition, Status> {
    match pb::AlertCondition::try_from(condition) {
        Ok(pb::AlertCondition::CheckFailed) => Ok(Condition::CheckFailed),
        Ok(pb::AlertCondition::CrashLoop) => Ok(Condition::CrashLoop),
        Ok(pb::AlertCondition::DeploymentFailed) => Ok(Condition::DeploymentFailed),
        _ => Err(Status::invalid_argument("condition must be check_failed, crash_loop or deployment_failed")),
    }
}

fn condition_reply(condition: Condition) -> pb::AlertCondition {
    match condition {
        Condition::CheckFailed => pb::AlertCondition::CheckFailed,
        Condition::CrashLoop => pb::AlertCondition::CrashLoop,
        Condition::DeploymentFailed => pb::AlertCondition::DeploymentFailed,
    }
}

fn stats_reply(h: &Histogram) -> pb::Stats {
    pb::Stats {
        uptime: h.uptime(),
        runs: h.runs,
        latency_p50_ms: h.quantile(0.5),
        latency_p95_ms: h.quantile(0.95),
        latency_p99_ms: h.quantile(0.99),
    }
}

fn check_reply(view: &CheckView) -> pb::Check {
    let r = &view.record;
    let states: Vec<State> = view.targets.iter().map(|t| t.confirmations.state).collect();
    let state = if states.contains(&State::Failing) {
        State::Failing
    } else if !states.is_empty() && states.iter().all(|s| *s == State::Passing) {
        State::Passing
    } else {
        State::Unknown
    };
    pb::Check {
        id: r.id.clone(),
        name: r.name.clone(),
        team: r.team.clone(),
        app: r.app.clone(),
        url: r.url.clone(),
        kind: kind_reply(r.kind).into(),
        http: Some(pb::HttpSpec {
            method: r.spec.method.clone(),
            path: r.spec.path.clone(),
            expect_status_min: u32::from(r.spec.status_min),
            expect_status_max: u32::from(r.spec.status_max),
            body_contains: r.spec.body_contains.clone(),
        }),
        grpc: Some(pb::GrpcSpec { service: r.spec.grpc_service.clone() }),
        interval_secs: u32::try_from(r.interval_ms / 1000).unwrap_or(0),
        timeout_ms: u32::try_from(r.timeout_ms).unwrap_or(0),
        fail_after: r.fail_after,
        recover_after: r.recover_after,
        default_check: r.is_default,
        state: state_reply(state).into(),
        targets: view
            .targets
            .iter()
            .map(|t| pb::Target {
                instance_id: t.target.key.clone(),
                host: t.target.host.clone(),
                port: u32::from(t.target.port),
                state: state_reply(t.confirmations.state).into(),
                last_checked: t.last.as_ref().map(|l| timestamp(l.at_ms)),
                last_latency_ms: t.last.as_ref().map(|l| l.latency_ms).unwrap_or(0),
                last_error: t.last.as_ref().map(|l| l.error.clone()).unwrap_or_default(),
                state_since: Some(timestamp(t.since)),
            })
            .collect(),
        last_hour: Some(stats_reply(&view.last_hour)),
        last_day: Some(stats_reply(&view.last_day)),
        created_at: Some(timestamp(r.created_at)),
    }
}

fn channel_reply(c: &ChannelRecord) -> pb::Channel {
    pb::Channel {
        id: c.id.clone(),
        name: c.name.clone(),
        kind: c.kind.clone(),
        target: c.target.clone(),
        created_at: Some(timestamp(c.created_at)),
    }
}

fn rule_reply(r: &RuleRecord) -> pb::AlertRule {
    pb::AlertRule {
        id: r.id.clone(),
        name: r.name.clone(),
        condition: condition_reply(r.condition).into(),
        app: r.app.clone(),
        check: r.check.clone(),
        channels: r.channels.clone(),
        crash_restarts: r.crash_restarts,
        created_at: Some(timestamp(r.created_at)),
    }
}

fn alert_reply(a: &AlertRecord) -> pb::Alert {
    pb::Alert {
        id: a.id.clone(),
        rule: a.rule.clone(),
        condition: condition_reply(a.condition).into(),
        app: a.app.clone(),
        check: a.check.clone(),
        summary: a.summary.clone(),
        open: a.open,
        fired_at: Some(timestamp(a.fired_at)),
        resolved_at: a.resolved_at.map(timestamp),
    }
}

fn event_reply(e: &LoggedEvent) -> pb::Event {
    pb::Event {
        seq: u64::try_from(e.seq).unwrap_or(0),
        id: e.id.clone(),
        r#type: e.ty.clone(),
        source: e.source.clone(),
        subject: e.subject.clone(),
        team: e.team.clone(),
        app: e.app.clone(),
        time: Some(timestamp(e.time_ms)),
        data_json: e.data.clone(),
    }
}

fn ms_of(t: &strata_proto::pbjson_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
}

fn api(error: ApiError) -> Status {
    error.into()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::observe_service_server::ObserveService for ObserveApi {
    #[tracing::instrument(skip_all, fields(check = %request.get_ref().name))]
    async fn create_check(&self, request: Request<pb::CreateCheckRequest>) -> Result<Response<pb::Check>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.into_inner();
        let kind = kind_of(req.kind)?;
        let http = req.http.unwrap_or_default();
        let defaults = Spec::default();
        let status = |v: u32, default: u16| if v == 0 { Ok(default) } else { u16::try_from(v) };
        let spec = Spec {
            method: if http.method.is_empty() { defaults.method } else { http.method.to_uppercase() },
            path: if http.path.is_empty() { defaults.path } else { http.path },
            status_min: status(http.expect_status_min, defaults.status_min)
                .map_err(|_| Status::invalid_argument("expect_status_min is not an HTTP status"))?,
            status_max: status(http.expect_status_max, defaults.status_max)
                .map_err(|_| Status::invalid_argument("expect_status_max is not an HTTP status"))?,
            body_contains: http.body_contains,
            grpc_service: req.grpc.unwrap_or_default().service,
        };
        let view = self
            .observe
            .check_create(
                &identity,
                CheckRequest {
                    name: req.name,
                    app: req.app,
                    url: req.url,
                    kind,
                    spec,
                    interval_secs: req.interval_secs,
                    timeout_ms: req.timeout_ms,
                    fail_after: req.fail_after,
                    recover_after: req.recover_after,
                },
            )
            .await
            .map_err(api)?;
        Ok(Response::new(check_reply(&view)))
    }

    async fn get_check(&self, request: Request<pb::GetCheckRequest>) -> Result<Response<pb::Check>, Status> {
        let identity = Identity::of(&request)?;
        let view = self.observe.check_get(&identity, &request.get_ref().name).await.map_err(api)?;
        Ok(Response::new(check_reply(&view)))
    }

    async fn list_checks(
        &self,
        request: Request<pb::ListChecksRequest>,
    ) -> Result<Response<pb::ListChecksResponse>, Status> {
        let identity = Identity::of(&request)?;
        let views = self.observe.checks_list(&identity, &request.get_ref().app).await.map_err(api)?;
        Ok(Response::new(pb::ListChecksResponse { checks: views.iter().map(check_reply).collect() }))
    }

    #[tracing::instrument(skip_all, fields(check = %request.get_ref().name))]
    async fn delete_check(
        &self,
        request: Request<pb::DeleteCheckRequest>,
    ) -> Result<Response<pb::DeleteCheckResponse>, Status> {
        let identity = Identity::of(&request)?;
        self.observe.check_delete(&identity, &request.get_ref().name).await.map_err(api)?;
        Ok(Response::new(pb::DeleteCheckResponse {}))
    }

    async fn check_history(
        &self,
        request: Request<pb::CheckHistoryRequest>,
    ) -> Result<Response<pb::CheckHistoryResponse>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        let results = self.observe.check_history(&identity, &req.name, req.limit).await.map_err(api)?;
        Ok(Response::new(pb::CheckHistoryResponse {
            results: results
                .into_iter()
                .map(|(target, at, ok, latency_ms, error)| pb::CheckResult {
                    instance_id: target,
                    at: Some(timestamp(at)),
                    ok,
                    latency_ms,
                    error,
                })
                .collect(),
        }))
    }

    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.into_inner();
        let (kind, target, secret) = match req.target {
            Some(pb::create_channel_request::Target::Webhook(w)) => ("webhook", w.url, w.secret),
            Some(pb::create_channel_request::Target::Nats(n)) => ("nats", n.subject, String::new()),
            None => return Err(Status::invalid_argument("give the channel a webhook or a nats subject")),
        };
        let channel = self.observe.channel_create(&identity, &req.name, kind, &target, &secret).await.map_err(api)?;
        Ok(Response::new(channel_reply(&channel)))
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let channels = self.observe.channels_list(&identity).await.map_err(api)?;
        Ok(Response::new(pb::ListChannelsResponse { channels: channels.iter().map(channel_reply).collect() }))
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        let identity = Identity::of(&request)?;
        self.observe.channel_delete(&identity, &request.get_ref().name).await.map_err(api)?;
        Ok(Response::new(pb::DeleteChannelResponse {}))
    }

    async fn create_alert_rule(
        &self,
        request: Request<pb::CreateAlertRuleRequest>,
    ) -> Result<Response<pb::AlertRule>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.into_inner();
        let rule = RuleRecord {
            id: String::new(),
            team: String::new(),
            name: req.name,
            condition: condition_of(req.condition)?,
            app: req.app,
            check: req.check,
            channels: req.channels,
            crash_restarts: req.crash_restarts,
            created_at: 0,
        };
        let rule = self.observe.rule_create(&identity, rule).await.map_err(api)?;
        Ok(Response::new(rule_reply(&rule)))
    }

    async fn list_alert_rules(
        &self,
        request: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        let identity = Identity::of(&request)?;
        let rules = self.observe.rules_list(&identity).await.map_err(api)?;
        Ok(Response::new(pb::ListAlertRulesResponse { rules: rules.iter().map(rule_reply).collect() }))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<pb::DeleteAlertRuleRequest>,
    ) -> Result<Response<pb::DeleteAlertRuleResponse>, Status> {
        let identity = Identity::of(&request)?;
        self.observe.rule_delete(&identity, &request.get_ref().name).await.map_err(api)?;
        Ok(Response::new(pb::DeleteAlertRuleResponse {}))
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let alerts = self.observe.alerts_list(&identity).await.map_err(api)?;
        Ok(Response::new(pb::ListAlertsResponse { alerts: alerts.iter().map(alert_reply).collect() }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.into_inner();
        let filter = EventFilter {
            team: String::new(),
            app: req.app,
            ty: req.r#type,
            since_ms: req.since.as_ref().map(ms_of),
            until_ms: req.until.as_ref().map(ms_of),
            after_seq: i64::try_from(req.after_seq).unwrap_or(i64::MAX),
            limit: i64::from(req.limit),
        };
        let events = self.observe.events_list(&identity, filter).await.map_err(api)?;
        Ok(Response::new(pb::ListEventsResponse { events: events.iter().map(event_reply).collect() }))
    }

    type FollowEventsStream = EventStream;

    async fn follow_events(
        &self,
        request: Request<pb::FollowEventsRequest>,
    ) -> Result<Response<Self::FollowEventsStream>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.into_inner();
        // Subscribe first: what commits while the tail is read still arrives.
        let mut live = self.observe.events_subscribe();
        let mut filter = EventFilter {
            team: identity.team.clone(),
            app: req.app,
            ty: req.r#type,
            limit: i64::from(req.tail.min(1000)),
            ..EventFilter::default()
        };
        let tail = if req.tail > 0 {
            self.observe.events_list(&identity, filter.clone()).await.map_err(api)?
        } else {
            Vec::new()
        };
        filter.after_seq = tail.last().map(|e| e.seq).unwrap_or(0);
        let (tx, rx) = mpsc::channel(256);
        let observe = self.observe.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            for event in &tail {
                if tx.send(Ok(event_reply(event))).await.is_err() {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    received = live.recv() => received,
                };
                let batch = match received {
                    Ok(event) if filter.matches(&event) => vec![(*event).clone()],
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => {
                        // Too slow for the live feed: catch up from the log.
                        let mut catch_up = filter.clone();
                        catch_up.limit = 1000;
                        match observe.events_list(&identity, catch_up).await {
                            Ok(events) => events,
                            Err(error) => {
                                let _ = tx.send(Err(Status::from(error))).await;
                                return;
                            }
                        }
                    }
                    Err(RecvError::Closed) => return,
                };
                for event in batch {
                    // The first live events may also be in the tail.
                    if event.seq <= filter.after_seq {
                        continue;
                    }
                    filter.after_seq = event.seq;
                    if tx.send(Ok(event_reply(&event))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
