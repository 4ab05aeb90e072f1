//! The gRPC edge of the data service.

use strata_kit::{Identity, error::timestamp};
use strata_proto::data::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{
    app::Data,
    model::{BackupRecord, BindingRecord, DatabaseRecord, DbState},
};

/// The `strata.data.v1.DataService` implementation.
#[derive(Debug, Clone)]
pub struct DataApi {
    data: Data,
}

impl DataApi {
    pub fn new(data: Data) -> Self {
        Self { data }
    }

    async fn database_reply(&self, db: &DatabaseRecord) -> Result<pb::Database, Status> {
        Ok(pb::Database {
            id: db.id.clone(),
            name: db.name.clone(),
            team: db.team.clone(),
            state: match db.state {
                DbState::Provisioning => pb::DatabaseState::Provisioning,
                DbState::Ready => pb::DatabaseState::Ready,
                DbState::Deleting => pb::DatabaseState::Deleting,
            }
            .into(),
            plan: db.plan.clone(),
            server: self.data.server_name(db).await.map_err(Status::from)?,
            apps: self.data.apps_of(db).await.map_err(Status::from)?,
            created_at: Some(timestamp(db.created_at)),
        })
    }
}

fn binding_reply(database: &str, b: &BindingRecord) -> pb::Binding {
    pb::Binding {
        id: b.id.clone(),
        database: database.to_owned(),
        app: b.app.clone(),
        created_at: Some(timestamp(b.created_at)),
    }
}

fn backup_reply(b: &BackupRecord) -> pb::Backup {
    pb::Backup {
        id: b.id.clone(),
        database: b.database.clone(),
        size_bytes: b.size_bytes,
        created_at: Some(timestamp(b.created_at)),
    }
}

#[tonic::async_trait]
impl pb::data_service_server::DataService for DataApi {
    async fn register_server(
        &self,
        request: Request<pb::RegisterServerRequest>,
    ) -> Result<Response<pb::Server>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        let server = self
            .data
            .server_register(&identity, &req.name, &req.admin_url, req.capacity)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::Server {
            id: server.id,
            name: server.name,
            address: server.address,
            capacity: server.capacity,
            databases: 0,
        }))
    }

    async fn list_servers(
        &self,
        request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let identity = Identity::of(&request)?;
        let servers = self.data.servers_list(&identity).await.map_err(Status::from)?;
        Ok(Response::new(pb::ListServersResponse {
            servers: servers
                .into_iter()
                .map(|(s, n)| pb::Server {
                    id: s.id,
                    name: s.name,
                    address: s.address,
                    capacity: s.capacity,
                    databases: n,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(database = %request.get_ref().name))]
    async fn create_database(
        &self,
        request: Request<pb::CreateDatabaseRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        let db =
            self.data.database_create(&identity, &req.name, &req.plan, &req.request_id).await.map_err(Status::from)?;
        Ok(Response::new(self.database_reply(&db).await?))
    }

    async fn get_database(&self, request: Request<pb::GetDatabaseRequest>) -> Result<Response<pb::Database>, Status> {
        let identity = Identity::of(&request)?;
        let db = self.data.database_find(&identity, &request.get_ref().name).await.map_err(Status::from)?;
        Ok(Response::new(self.database_reply(&db).await?))
    }

    async fn list_databases(
        &self,
        request: Request<pb::ListDatabasesRequest>,
    ) -> Result<Response<pb::ListDatabasesResponse>, Status> {
        let identity = Identity::of(&request)?;
        let mut databases = Vec::new();
        for db in self.data.databases_list(&identity).await.map_err(Status::from)? {
            databases.push(self.database_reply(&db).await?);
        }
        Ok(Response::new(pb::ListDatabasesResponse { databases }))
    }

    #[tracing::instrument(skip_all, fields(database = %request.get_ref().name))]
    async fn delete_database(
        &self,
        request: Request<pb::DeleteDatabaseRequest>,
    ) -> Result<Response<pb::DeleteDatabaseResponse>, Status> {
        let identity = Identity::of(&request)?;
        self.data.database_delete(&identity, &request.get_ref().name).await.map_err(Status::from)?;
        Ok(Response::new(pb::DeleteDatabaseResponse {}))
    }

    async fn get_credentials(
        &self,
        request: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::Credentials>, Status> {
        let identity = Identity::of(&request)?;
        let credentials = self.data.credentials(&identity, &request.get_ref().name).await.map_err(Status::from)?;
        tracing::info!(subject = %identity.subject, team = %identity.team, database = %request.get_ref().name, "credentials read");
        Ok(Response::new(credentials))
    }

    async fn rotate_credentials(
        &self,
        request: Request<pb::RotateCredentialsRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let identity = Identity::of(&request)?;
        let db = self.data.credentials_rotate(&identity, &request.get_ref().name).await.map_err(Status::from)?;
        Ok(Response::new(self.database_reply(&db).await?))
    }

    async fn bind(&self, request: Request<pb::BindRequest>) -> Result<Response<pb::Binding>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        let binding = self.data.bind(&identity, &req.database, &req.app).await.map_err(Status::from)?;
        Ok(Response::new(binding_reply(&req.database, &binding)))
    }

    async fn unbind(&self, request: Request<pb::UnbindRequest>) -> Result<Response<pb::UnbindResponse>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        self.data.unbind(&identity, &req.database, &req.app).await.map_err(Status::from)?;
        Ok(Response::new(pb::UnbindResponse {}))
    }

    async fn list_bindings(
        &self,
        request: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let database = &request.get_ref().database;
        let bindings = self.data.bindings_list(&identity, database).await.map_err(Status::from)?;
        Ok(Response::new(pb::ListBindingsResponse {
            bindings: bindings.iter().map(|b| binding_reply(database, b)).collect(),
        }))
    }

    async fn create_backup(&self, request: Request<pb::CreateBackupRequest>) -> Result<Response<pb::Backup>, Status> {
        let identity = Identity::of(&request)?;
        let backup = self.data.backup_create(&identity, &request.get_ref().database).await.map_err(Status::from)?;
        Ok(Response::new(backup_reply(&backup)))
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let identity = Identity::of(&request)?;
        let backups = self.data.backups_list(&identity, &request.get_ref().database).await.map_err(Status::from)?;
        Ok(Response::new(pb::ListBackupsResponse { backups: backups.iter().map(backup_reply).collect() }))
    }

    async fn restore_backup(
        &self,
        request: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let identity = Identity::of(&request)?;
        let req = request.get_ref();
        let db = self.data.backup_restore(&identity, &req.backup_id, &req.name).await.map_err(Status::from)?;
        Ok(Response::new(self.database_reply(&db).await?))
    }
}
