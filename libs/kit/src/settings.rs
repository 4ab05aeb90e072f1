//! Typed configuration shared by every service.
//!
//! A service's config struct is built in three layers, later ones winning:
//! its `Default` impl (the embedded defaults), an optional TOML file, then
//! environment variables `STRATA_<SERVICE>__<SECTION>__<KEY>` (for example
//! `STRATA_COMPUTE__SERVER__LISTEN=0.0.0.0:8701`).

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Loads `T` from its defaults, the optional TOML `file`, and the environment
/// prefix `STRATA_<SERVICE>__`.
pub fn load<T>(service: &str, file: Option<&Path>) -> Result<T, config::ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    load_with_env(service, file, None)
}

/// [`load`] with the environment given explicitly (`None`: the process's).
pub fn load_with_env<T>(
    service: &str,
    file: Option<&Path>,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<T, config::ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut builder = config::Config::builder().add_source(config::Config::try_from(&T::default())?);
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    builder
        .add_source(
            config::Environment::with_prefix(&format!("STRATA_{}", service.to_uppercase()))
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env),
        )
        .build()?
        .try_deserialize()
}

/// Where the gRPC server listens and how long it may drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Address of the gRPC endpoint (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Seconds in-flight calls get to finish after a shutdown signal.
    pub grace_period_secs: u64,
}

impl ServerSettings {
    /// A server on `127.0.0.1:port`.
    pub fn local(port: u16) -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], port)), grace_period_secs: 10 }
    }

    /// The drain grace period.
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self::local(0)
    }
}

/// The service's own database.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://...`.
    /// Empty means a SQLite file named after the service in its data directory.
    pub url: String,
    /// Upper bound of pooled connections; 0 picks a default (4 for SQLite, 10 for Postgres).
    pub max_connections: u32,
}

impl DatabaseSettings {
    /// The database URL: the configured one, or a SQLite file `file` in `data_dir`.
    pub fn url_or_sqlite(&self, data_dir: &Path, file: &str) -> String {
        if self.url.is_empty() { format!("sqlite://{}", data_dir.join(file).display()) } else { self.url.clone() }
    }
}

/// Creates a service's data directory if needed and returns its absolute path.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    dir.canonicalize()
}

/// NATS and the JetStream stream events go to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsSettings {
    /// Server URL.
    pub url: String,
    /// Name of the JetStream stream holding every Strata event.
    pub stream: String,
    /// First token of every event subject (`strata.<concern>.<entity>.<verb>`).
    /// Tests give each run its own prefix and stream.
    pub subject_prefix: String,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
            stream: "STRATA".to_owned(),
            subject_prefix: "strata".to_owned(),
        }
    }
}

/// Keys for identity tokens.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct IdentitySettings {
    /// PEM of the Ed25519 public key that signs identity tokens.
    pub public_key_pem: String,
    /// A file holding that PEM, used when `public_key_pem` is empty.
    pub public_key_file: String,
    /// PEM of the Ed25519 private key this service signs its own identity
    /// with when it calls another service for a team (compute asking data
    /// for a binding's credentials). Empty: the service makes no such calls.
    pub signing_key_pem: String,
}

impl IdentitySettings {
    /// The verifier of identity tokens, from the configured public key.
    pub fn verifier(&self) -> Result<crate::identity::Verifier, String> {
        let pem = self.public_key().map_err(|e| e.to_string())?;
        crate::identity::Verifier::from_public_pem(&pem).map_err(|e| e.to_string())
    }

    /// The public key PEM, from the inline value or the file.
    pub fn public_key(&self) -> std::io::Result<String> {
        if !self.public_key_pem.trim().is_empty() {
            return Ok(self.public_key_pem.clone());
        }
        if self.public_key_file.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no identity public key configured: set identity.public_key_pem or identity.public_key_file \
                 (`strata keygen` makes a key pair)",
            ));
        }
        std::fs::read_to_string(&self.public_key_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        server: ServerSettings,
        nats: NatsSettings,
        limit: u64,
    }

    #[test]
    fn defaults_then_file_then_environment() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("strata-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("sample.toml");
        std::fs::write(&file, "limit = 5\n[server]\nlisten = \"0.0.0.0:9000\"\n")?;

        let defaults: Sample = load_with_env("sample", None, Some(Default::default()))?;
        assert_eq!((defaults.limit, defaults.server.listen.port(), defaults.nats.stream.as_str()), (0, 0, "STRATA"));

        let env = [
            ("STRATA_SAMPLE__SERVER__LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
            ("STRATA_SAMPLE__NATS__STREAM".to_owned(), "OTHER".to_owned()),
        ];
        let loaded: Sample = load_with_env("sample", Some(&file), Some(env.into_iter().collect()))?;
        assert_eq!(loaded.limit, 5, "from the file");
        assert_eq!(loaded.server.listen.port(), 9999, "the environment wins over the file");
        assert_eq!(loaded.nats.stream, "OTHER");
        assert_eq!(loaded.server.grace_period_secs, 10, "untouched keys keep their defaults");
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }
}
