//! `vigil demo`: the hub, a gateway and simulated patients in one process on embedded storage.

use crate::run::{announce, load_config};
use crate::{InputError, stop_signal};
use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vigil_gateway::{Gateway, GatewayConfig};
use vigil_hub::AppState;
use vigil_hub::auth::{API_PREFIX, GATEWAY_PREFIX, hash_token, new_token};
use vigil_model::{Device, Timestamp};
use vigil_sim::{Cohort, ScenarioSpec, SimConfig};
use vigil_store::sqlite::SqliteStore;
use vigil_store::{ApiToken, Store};

const GATEWAY_ID: &str = "demo-gateway";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its data; a restart on the same directory continues.
    #[arg(long, default_value = "vigil-demo")]
    pub data_dir: PathBuf,
    /// Port of the hub on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Number of simulated patients (fixed when the data directory is first created).
    #[arg(long, default_value_t = 20)]
    pub patients: usize,
    /// Seed of the simulation (fixed when the data directory is first created).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated history generated at the first start, e.g. 2h.
    #[arg(long, default_value = "2h", value_parser = crate::parse_duration)]
    pub history: Duration,
    /// Stop cleanly after this long, e.g. 30s.
    #[arg(long = "for", value_parser = crate::parse_duration)]
    pub run_for: Option<Duration>,
    /// Inject a scenario: NAME:PATIENT[@TIME], e.g. sepsis:p-0003@now (repeatable).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
}

/// Written to `<data-dir>/demo-credentials.json` (mode 0600).
#[derive(Debug, Serialize, Deserialize)]
struct Credentials {
    hub_url: String,
    api_token: String,
    users: Vec<DemoUser>,
    gateway: GatewayCredentials,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoUser {
    name: String,
    role: String,
    token: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct GatewayCredentials {
    id: String,
    token: String,
}

/// Where the simulation stands, so a restart continues it.
#[derive(Debug, Serialize, Deserialize)]
struct SimState {
    seed: u64,
    patients: usize,
    start: Timestamp,
    clock: Timestamp,
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn credentials(
    dir: &Path,
    store: &SqliteStore,
    hub_url: &str,
) -> anyhow::Result<Credentials> {
    let path = dir.join("demo-credentials.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(mut c) = serde_json::from_str::<Credentials>(&text)
        && store.api_token(&hash_token(&c.api_token)).await?.is_some()
        && store
            .gateway_by_token(&hash_token(&c.gateway.token))
            .await?
            .is_some()
    {
        if c.hub_url != hub_url {
            c.hub_url = hub_url.to_owned();
            write_private(&path, serde_json::to_string_pretty(&c)?.as_bytes())?;
        }
        return Ok(c);
    }
    let now = Timestamp::now();
    let mut users = Vec::new();
    for (name, role) in [
        ("admin", "admin"),
        ("dr-demo", "clinician"),
        ("nurse-demo", "nurse"),
    ] {
        let token = new_token(API_PREFIX);
        store
            .create_api_token(
                &hash_token(&token),
                ApiToken {
                    name: name.into(),
                    role: role.into(),
                    created: now,
                    expires: None,
                    revoked: false,
                },
            )
            .await?;
        users.push(DemoUser {
            name: name.into(),
            role: role.into(),
            token,
        });
    }
    let gw_token = new_token(GATEWAY_PREFIX);
    let gw_id = format!("{GATEWAY_ID}-{}", now.millis());
    store.create_gateway(&gw_id, &hash_token(&gw_token)).await?;
    let c = Credentials {
        hub_url: hub_url.to_owned(),
        api_token: users[0].token.clone(),
        users,
        gateway: GatewayCredentials {
            id: gw_id,
            token: gw_token,
        },
    };
    write_private(&path, serde_json::to_string_pretty(&c)?.as_bytes())?;
    Ok(c)
}

pub async fn run(args: DemoArgs, file: Option<&Path>) -> anyhow::Result<()> {
    let cfg = load_config(file)?;
    if args.patients == 0 || args.patients > 10_000 {
        return Err(InputError("--patients must be between 1 and 10000".into()).into());
    }
    let dir = args.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db = dir.join("hub.db");
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db)).await??;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let addr = listener.local_addr()?;
    let hub_url = format!("https://{addr}");
    let creds = credentials(&dir, &store, &hub_url).await?;

    // HTTPS with the demo's own CA (made on the first run, reused later). Gateways present a
    // client certificate; people and scripts come with a token alone (client_auth optional).
    let pki_dir = dir.join("pki");
    let (pki, created) = vigil_tls::pki::ensure(&pki_dir, &[])?;
    let (gw_cert, gw_key) = vigil_tls::pki::gateway_files(&pki_dir, &creds.gateway.id);
    if created || !gw_cert.is_file() || !gw_key.is_file() {
        vigil_tls::pki::issue_gateway(&pki_dir, &creds.gateway.id)?;
    }
    let tls = vigil_tls::server_config(&vigil_tls::ServerTls {
        cert_file: pki.hub_cert.clone(),
        key_file: pki.hub_key.clone(),
        client_ca_file: Some(pki.ca_cert.clone()),
        client_auth: vigil_tls::ClientAuth::Optional,
    })?;

    // The simulation: fixed seed and size per data directory.
    let state_path = dir.join("sim-state.json");
    let now = Timestamp::now();
    let history_ms = args.history.as_millis() as i64;
    let mut state = match std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|t| serde_json::from_str::<SimState>(&t).ok())
    {
        Some(s) => {
            if s.patients != args.patients || s.seed != args.seed {
                tracing::info!(
                    patients = s.patients,
                    seed = s.seed,
                    "continuing the simulation stored in the data directory"
                );
            }
            s
        }
        None => {
            let start = Timestamp(now.0 - history_ms);
            SimState {
                seed: args.seed,
                patients: args.patients,
                start,
                clock: start,
            }
        }
    };
    let mut cohort = Cohort::new(SimConfig::new(state.seed, state.patients, state.start))
        .map_err(|e| InputError(e.to_string()))?;
    for p in cohort.patients() {
        store.upsert_patient(p.clone()).await?;
        // The demo clinician and nurse look after every simulated patient, so their tokens
        // see them under care-team-based access; an existing team keeps its other members.
        let mut team = store.care_team(&p.id).await?;
        for (list, user) in [
            (&mut team.primary, "dr-demo"),
            (&mut team.backup, "nurse-demo"),
        ] {
            if !list.iter().any(|u| u == user) {
                list.push(user.to_owned());
            }
        }
        store.set_care_team(&p.id, team).await?;
    }
    for d in cohort.devices() {
        store
            .upsert_device(Device {
                gateway: Some(creds.gateway.id.clone()),
                ..d.clone()
            })
            .await?;
    }
    for a in cohort.assignments() {
        if store.assignments(Some(&a.device)).await?.is_empty() {
            store.assign(a.clone()).await?;
        }
    }
    // Continue where the last run stopped (or, after a long pause, within the history span).
    let resume = Timestamp(state.clock.0.max(now.0 - history_ms));
    let mut scratch = Vec::new();
    while cohort.now() < resume {
        let step = Timestamp((cohort.now().0 + 3_600_000).min(resume.0));
        cohort.advance(step, &mut scratch);
        scratch.clear();
    }
    for s in &args.scenarios {
        let spec: ScenarioSpec = s
            .parse()
            .map_err(|e: vigil_sim::ScenarioParseError| InputError(e.to_string()))?;
        let at = cohort
            .inject_spec(&spec)
            .map_err(|e| InputError(e.to_string()))?;
        tracing::info!(scenario = %spec.scenario, at = %at, "scenario injected");
    }

    // The hub.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hub_state = AppState::new(Arc::new(store.clone()), cfg.hub.settings.clone());
    let mut hub_stop = stop_rx.clone();
    let hub = tokio::spawn(vigil_hub::serve_tls(listener, tls, hub_state, async move {
        let _ = hub_stop.wait_for(|s| *s).await;
    }));

    // The gateway.
    let gw = Gateway::start(GatewayConfig {
        id: creds.gateway.id.clone(),
        hub_url: hub_url.clone(),
        token: creds.gateway.token.clone(),
        outbox_path: dir.join("gateway").join("outbox.db"),
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        hub_ca_file: Some(pki.ca_cert.clone()),
        client_cert_file: Some(gw_cert),
        client_key_file: Some(gw_key),
        ..cfg.gateway.clone()
    })
    .await?;

    announce(&format!("Vigil demo: hub {hub_url}"));
    if let Some(a) = gw.local_addr() {
        announce(&format!("gateway http://{a} (health: /health)"));
    }
    announce(&format!(
        "{} simulated patients; credentials in {}",
        state.patients,
        dir.join("demo-credentials.json").display()
    ));
    announce(&format!("CA certificate: {}", pki.ca_cert.display()));
    announce(&format!(
        "try: curl --cacert {} -H \"Authorization: Bearer $(jq -r .api_token {})\" {hub_url}/api/v1/patients",
        pki.ca_cert.display(),
        dir.join("demo-credentials.json").display()
    ));

    // The simulator drives the gateway's outbox in process: each batch is acknowledged only
    // once committed, and the simulation clock is saved after it.
    let deadline = args.run_for.map(|d| tokio::time::Instant::now() + d);
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    let mut generated = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        // Catch up in steps of ten simulated minutes so a long history streams steadily.
        while cohort.now() < now {
            let step = Timestamp((cohort.now().0 + 600_000).min(now.0));
            cohort.advance(step, &mut out);
            if !out.is_empty() {
                let n = out.len() as u64;
                match gw.outbox().append(std::mem::take(&mut out)).await {
                    Ok(_) => generated += n,
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway refused simulated records; they are dropped at the source");
                    }
                }
            }
            state.clock = cohort.now();
            if step.0 < now.0 - 1000 {
                tokio::task::yield_now().await;
            }
        }
        write_private(&state_path, serde_json::to_string(&state)?.as_bytes())?;
    }
    write_private(&state_path, serde_json::to_string(&state)?.as_bytes())?;
    announce("stopping: draining the gateway outbox to the hub");
    gw.shutdown(Duration::from_secs(10)).await;
    let _ = stop_tx.send(true);
    let _ = hub.await;
    let stats = store.stats().await?;
    announce(&format!(
        "stopped: {generated} records generated this run; hub holds {} readings ({:.1} bytes each on disk)",
        stats.readings,
        if stats.readings > 0 {
            stats.file_bytes as f64 / stats.readings as f64
        } else {
            0.0
        }
    ));
    Ok(())
}
