//! `vigil hub`, `vigil gateway` and `vigil admin`.

use crate::config::Config;
use crate::{InputError, stop_signal};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vigil_gateway::Gateway;
use vigil_hub::AppState;
use vigil_hub::auth::{API_PREFIX, GATEWAY_PREFIX, hash_token, new_token};
use vigil_model::Timestamp;
use vigil_store::sqlite::SqliteStore;
use vigil_store::{ApiToken, Store};

#[derive(Debug, Args)]
pub struct HubArgs {
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (overrides `hub.listen`); port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The hub's base URL (overrides `gateway.hub_url`).
    #[arg(long)]
    pub hub_url: Option<String>,
    /// File holding the gateway token (overrides `gateway.token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The outbox database file (overrides `gateway.outbox_path`).
    #[arg(long)]
    pub outbox: Option<PathBuf>,
    /// Loopback address for local sources and health (overrides `gateway.listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Outbox bound in bytes (overrides `gateway.outbox_max_bytes`).
    #[arg(long)]
    pub outbox_max_bytes: Option<u64>,
    /// Listen for HL7 v2 over MLLP here (enables `gateway.mllp`).
    #[arg(long)]
    pub mllp_listen: Option<SocketAddr>,
    /// Take device messages from this MQTT broker, host:port (enables `gateway.mqtt`).
    #[arg(long)]
    pub mqtt_broker: Option<String>,
    /// MQTT client id: it names the persistent session, keep it stable.
    #[arg(long)]
    pub mqtt_client_id: Option<String>,
    /// Take readings from Bluetooth LE health devices (builds with `--features ble`).
    #[arg(long)]
    pub ble: bool,
    /// Run the critical rules at the gateway and raise local alarms here, with or without the
    /// hub (enables `gateway.edge`; repeat for several; replaces `gateway.edge.actions`):
    /// `console`, `mqtt://host:port/topic` (`{device}` in the topic is the device id),
    /// `http://host:port/path` (a JSON POST).
    #[arg(long = "edge-alarm", value_name = "ACTION")]
    pub edge_alarm: Vec<vigil_gateway::AlarmAction>,
    /// The outbox encryption key file (overrides `gateway.outbox_key_file`).
    #[arg(long)]
    pub outbox_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)] // they name the subcommands: create-token, create-client, ...
pub enum AdminCmd {
    /// Create an API token for a person or service; prints it once.
    CreateToken {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        name: String,
        /// admin, integration, clinician, nurse, caregiver or patient.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Lifetime, e.g. 90d; none means no expiry.
        #[arg(long, value_parser = crate::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Register an OAuth2 client (a service using `POST /oauth2/token`); prints its secret
    /// once (a new secret replaces the old one).
    CreateClient(crate::clients::CreateClientArgs),
    /// Register a gateway; prints its token once.
    CreateGateway {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        id: String,
    },
    /// Create a user who signs in with a password (Argon2id-hashed).
    CreateUser(crate::users::CreateUserArgs),
    /// Disable a user (revoking their sessions and API tokens), or enable them again.
    DisableUser(crate::users::DisableUserArgs),
    /// TLS certificates: a local CA, the hub's certificate, gateways' client certificates.
    Pki {
        #[command(subcommand)]
        cmd: crate::pki::PkiCmd,
    },
    #[command(flatten)]
    Crypt(crate::backup::CryptCmd),
}

pub fn load_config(file: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = Config::load(file, std::env::vars()).map_err(|e| InputError(format!("{e:#}")))?;
    cfg.validate().map_err(|e| InputError(format!("{e:#}")))?;
    Ok(cfg)
}

/// Prints a line to stdout immediately (tests and scripts read it).
pub fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn hub(args: HubArgs, file: Option<&Path>) -> anyhow::Result<()> {
    let mut cfg = load_config(file)?;
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = args.listen {
        cfg.hub.listen = l;
    }
    if cfg.hub.settings.oidc.is_some() && !vigil_hub::session::OIDC_BUILT {
        return Err(
            InputError("[hub.oidc] needs a vigil built with --features oidc".into()).into(),
        );
    }
    // Certificates are checked before anything starts.
    let tls = match cfg.hub_tls() {
        Some(t) => Some((
            vigil_tls::server_config(&t).map_err(|e| InputError(e.to_string()))?,
            t.client_auth,
        )),
        None => None,
    };
    let db = cfg.hub_database();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db)).await??;
    let listener = tokio::net::TcpListener::bind(cfg.hub.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.hub.listen))?;
    let addr = listener.local_addr()?;
    let mut settings = cfg.hub.settings.clone();
    settings
        .export_dir
        .get_or_insert_with(|| cfg.data_dir.join("fhir-export"));
    let state = AppState::new(Arc::new(store), settings);
    match tls {
        Some((tls, client_auth)) => {
            announce(&format!("hub listening on https://{addr}"));
            tracing::info!(%addr, ?client_auth, database = %cfg.hub_database().display(), "hub started (TLS)");
            vigil_hub::serve_tls(listener, tls, state, stop_signal()).await?;
        }
        None => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "hub serves plain HTTP on a non-loopback address; configure [hub.tls]");
            }
            announce(&format!("hub listening on http://{addr}"));
            tracing::info!(%addr, database = %cfg.hub_database().display(), "hub started");
            vigil_hub::serve(listener, state, stop_signal()).await?;
        }
    }
    tracing::info!("hub stopped");
    Ok(())
}

pub async fn gateway(args: GatewayArgs, file: Option<&Path>) -> anyhow::Result<()> {
    let mut cfg = load_config(file)?;
    let g = &mut cfg.gateway;
    if let Some(u) = args.hub_url {
        g.hub_url = u;
    }
    if let Some(f) = args.token_file {
        g.token = std::fs::read_to_string(&f)
            .with_context(|| format!("cannot read token file {}", f.display()))?
            .trim()
            .to_owned();
    }
    if let Some(o) = args.outbox {
        g.outbox_path = o;
    } else if g.outbox_path.is_relative() {
        g.outbox_path = cfg.data_dir.join(&g.outbox_path);
    }
    if let Some(l) = args.listen {
        g.listen = Some(l);
    }
    if let Some(k) = args.outbox_key_file {
        g.outbox_key_file = Some(k);
    } else if let Some(k) = g.outbox_key_file.as_mut()
        && k.is_relative()
    {
        *k = cfg.data_dir.join(&*k);
    }
    if let Some(m) = args.outbox_max_bytes {
        g.outbox_max_bytes = m;
    }
    if let Some(l) = args.mllp_listen {
        g.mllp.get_or_insert_with(Default::default).listen = l;
    }
    if let Some(b) = args.mqtt_broker {
        g.mqtt.get_or_insert_with(Default::default).broker = b;
    }
    if args.ble {
        g.ble.get_or_insert_with(Default::default);
    }
    if !args.edge_alarm.is_empty() {
        g.edge.get_or_insert_with(Default::default).actions = args.edge_alarm;
    }
    if let Some(id) = args.mqtt_client_id {
        g.mqtt.get_or_insert_with(Default::default).client_id = id;
    }
    cfg.resolve_gateway_tls_paths();
    let g = &mut cfg.gateway;
    // Fault injection for crash tests: a real process dies at the worst moment.
    if std::env::var("VIGIL_FAULT").as_deref() == Ok("mqtt-abort-before-commit")
        && let Some(m) = g.mqtt.as_mut()
    {
        m.abort_process_before_commit = true;
    }
    if let Some(m) = g.mqtt.as_mut()
        && let Some(q) = m.quarantine_path.as_mut()
        && q.is_relative()
    {
        *q = cfg.data_dir.join(&*q);
    }
    cfg.validate().map_err(|e| InputError(format!("{e:#}")))?;
    if let Some(e) = &cfg.gateway.edge {
        e.validate().map_err(|e| InputError(e.to_string()))?;
    }
    if cfg.gateway.token.is_empty() {
        return Err(InputError(
            "no gateway token: give --token-file or set VIGIL_GATEWAY__TOKEN".into(),
        )
        .into());
    }
    let gw = Gateway::start(cfg.gateway.clone())
        .await
        .map_err(crate::backup::gateway_start_error)?;
    if let Some(addr) = gw.local_addr() {
        announce(&format!("gateway listening on http://{addr}"));
    }
    if let Some(addr) = gw.mllp_addr() {
        announce(&format!("gateway MLLP listening on {addr}"));
    }
    tracing::info!(hub = %cfg.gateway.hub_url, "gateway started");
    stop_signal().await;
    tracing::info!("gateway stopping");
    gw.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}

pub async fn admin(cmd: AdminCmd, file: Option<&Path>) -> anyhow::Result<()> {
    let cfg = load_config(file)?;
    match cmd {
        AdminCmd::CreateToken {
            data_dir,
            name,
            role,
            expires_in,
        } => {
            const ROLES: [&str; 6] = [
                "admin",
                "integration",
                "clinician",
                "nurse",
                "caregiver",
                "patient",
            ];
            if !ROLES.contains(&role.as_str()) {
                return Err(InputError(format!(
                    "unknown role {role:?}; one of {}",
                    ROLES.join(", ")
                ))
                .into());
            }
            let db = data_dir
                .unwrap_or(cfg.data_dir.clone())
                .join(&cfg.hub.database);
            let store = SqliteStore::open(&db)?;
            let token = new_token(API_PREFIX);
            let now = Timestamp::now();
            let expires = expires_in.map(|d| now.saturating_add_millis(d.as_millis() as i64));
            store
                .create_api_token(
                    &hash_token(&token),
                    ApiToken {
                        name,
                        role,
                        created: now,
                        expires,
                        revoked: false,
                    },
                )
                .await?;
            announce(&token);
        }
        AdminCmd::CreateClient(a) => crate::clients::create_client(a, &cfg).await?,
        AdminCmd::CreateGateway { data_dir, id } => {
            vigil_model::DeviceId::new(id.as_str()).map_err(|e| InputError(e.to_string()))?;
            let db = data_dir
                .unwrap_or(cfg.data_dir.clone())
                .join(&cfg.hub.database);
            let store = SqliteStore::open(&db)?;
            let token = new_token(GATEWAY_PREFIX);
            store.create_gateway(&id, &hash_token(&token)).await?;
            announce(&token);
        }
        AdminCmd::CreateUser(a) => crate::users::create_user(a, &cfg).await?,
        AdminCmd::DisableUser(a) => crate::users::disable_user(a, &cfg).await?,
        AdminCmd::Pki { cmd } => crate::pki::run(cmd, &cfg.data_dir)?,
        AdminCmd::Crypt(c) => return crate::backup::run(c, &cfg).await,
    }
    Ok(())
}
