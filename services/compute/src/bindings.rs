//! Database bindings, from compute's side: data announces a binding (or a
//! rotation) without any secret; compute asks data for the connection URL
//! with its own service identity for that team, sets the app's
//! `DATABASE_URL` (a secret config var) and queues a release with it, which
//! rolls out with no downtime like any release.

use std::time::Duration;

use strata_events::{CloudEvent, EventTx, HandleError, Handler};
use strata_kit::{
    Role,
    identity::{BearerToken, Signer},
};
use strata_proto::data::v1::{self as data_pb, data_service_client::DataServiceClient};
use tonic::{Code, transport::Channel};

use crate::{app::Compute, events};

/// The config var a binding provides.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// Handles data's binding and rotation events.
pub struct DataEvents {
    compute: Compute,
    data: Channel,
    signer: Signer,
}

impl DataEvents {
    pub fn new(compute: Compute, data: Channel, signer: Signer) -> Self {
        Self { compute, data, signer }
    }

    /// The connection URL of `team`'s `database`; `None` when it is gone.
    async fn database_url(&self, team: &str, database: &str) -> Result<Option<String>, HandleError> {
        let token = self
            .signer
            .mint("strata-compute", team, Role::Service, Duration::from_secs(60))
            .map_err(|e| HandleError::Fatal(format!("cannot sign compute's identity: {e}")))?;
        let bearer = BearerToken::new(&token).map_err(|e| HandleError::Fatal(e.to_string()))?;
        let mut client = DataServiceClient::with_interceptor(self.data.clone(), bearer);
        match client.get_credentials(data_pb::GetCredentialsRequest { name: database.to_owned() }).await {
            Ok(reply) => Ok(Some(reply.into_inner().url)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(HandleError::Retry(format!("data did not give the credentials: {}", status.message()))),
        }
    }

    async fn provide(
        &self,
        tx: &mut EventTx,
        team: &str,
        app: &str,
        url: Option<&str>,
        reason: &str,
    ) -> Result<(), HandleError> {
        self.compute
            .provided_config(tx, team, app, DATABASE_URL, url, reason)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))
    }
}

fn decode<M: serde::de::DeserializeOwned>(event: &CloudEvent) -> Result<M, HandleError> {
    event.data_as().map_err(|e| HandleError::Fatal(format!("malformed {}: {e}", event.ty)))
}

impl Handler for DataEvents {
    async fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        if events::DATA_BINDING_CREATED.matches(event) {
            let binding: data_pb::BindingCreated = decode(event)?;
            let Some(url) = self.database_url(&event.team, &binding.database).await? else { return Ok(()) };
            let reason = format!("bound to database {}", binding.database);
            self.provide(tx, &event.team, &binding.app, Some(&url), &reason).await
        } else if events::DATA_BINDING_DELETED.matches(event) {
            let binding: data_pb::BindingDeleted = decode(event)?;
            let reason = format!("unbound from database {}", binding.database);
            self.provide(tx, &event.team, &binding.app, None, &reason).await
        } else if events::DATA_CREDENTIALS_ROTATED.matches(event) {
            let rotated: data_pb::CredentialsRotated = decode(event)?;
            let Some(url) = self.database_url(&event.team, &rotated.database).await? else { return Ok(()) };
            for app in &rotated.apps {
                let reason = format!("credentials of database {} rotated", rotated.database);
                self.provide(tx, &event.team, app, Some(&url), &reason).await?;
            }
            Ok(())
        } else {
            Ok(())
        }
    }
}
