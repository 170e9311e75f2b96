//! `vigil admin create-client`: an OAuth2 client (service account) of the hub's token
//! endpoint. The secret is printed once; the hub keeps only its Argon2id hash.

use crate::InputError;
use crate::config::Config;
use crate::run::announce;
use clap::Args;
use std::path::PathBuf;
use vigil_model::Timestamp;
use vigil_store::push::{OAuthClient, PushStore};
use vigil_store::sqlite::SqliteStore;

#[derive(Debug, Args)]
pub struct CreateClientArgs {
    /// The client id (letters, digits, '-', '_', '.').
    pub id: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Role of the tokens the client gets: integration or admin.
    #[arg(long, default_value = "integration")]
    pub role: String,
}

pub async fn create_client(args: CreateClientArgs, cfg: &Config) -> anyhow::Result<()> {
    let id = &args.id;
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(InputError(format!(
            "client id {id:?} must be 1-128 letters, digits, '-', '_' or '.'"
        ))
        .into());
    }
    if !matches!(args.role.as_str(), "integration" | "admin") {
        return Err(InputError(format!(
            "role {:?} is not for services; one of integration, admin",
            args.role
        ))
        .into());
    }
    let db = args
        .data_dir
        .unwrap_or(cfg.data_dir.clone())
        .join(&cfg.hub.database);
    let store = SqliteStore::open(&db)?;
    let secret = vigil_hub::oauth::new_client_secret();
    let hash = tokio::task::spawn_blocking({
        let secret = secret.clone();
        move || vigil_hub::oauth::hash_secret(&secret)
    })
    .await??;
    store
        .put_oauth_client(OAuthClient {
            id: args.id,
            secret_hash: hash,
            role: args.role,
            created: Timestamp::now(),
        })
        .await?;
    announce(&secret);
    Ok(())
}
