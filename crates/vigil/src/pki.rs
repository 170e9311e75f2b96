//! `vigil admin pki`: a local certificate authority, the hub's server certificate and
//! gateways' client certificates (see `vigil_tls::pki`).

use crate::InputError;
use crate::run::announce;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use vigil_tls::TlsError;

#[derive(Debug, Subcommand)]
pub enum PkiCmd {
    /// Create a CA and the hub's server certificate (valid for localhost, 127.0.0.1, ::1 and
    /// each --host).
    Init {
        /// Where the PEM files go (default: `<data_dir>/pki`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Another name or IP address the hub is reached by (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for a gateway (mutual TLS) from the CA in --dir.
    Gateway {
        /// The gateway id, as registered with `vigil admin create-gateway`.
        id: String,
        /// Where the CA is and the PEM files go (default: `<data_dir>/pki`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn input(e: TlsError) -> anyhow::Error {
    match e {
        TlsError::Exists(_) | TlsError::Name(_) | TlsError::Read { .. } | TlsError::Pem { .. } => {
            InputError(e.to_string()).into()
        }
        other => other.into(),
    }
}

pub fn run(cmd: PkiCmd, data_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        PkiCmd::Init { dir, hosts } => {
            let dir = dir.unwrap_or_else(|| data_dir.join("pki"));
            for h in &hosts {
                if h.trim().is_empty() || h.contains(['/', ' ', ',']) {
                    return Err(InputError(format!("invalid --host {h:?}")).into());
                }
            }
            let f = vigil_tls::pki::init(&dir, &hosts).map_err(input)?;
            announce(&format!("CA certificate: {}", f.ca_cert.display()));
            announce(&format!("CA key: {} (keep it offline)", f.ca_key.display()));
            announce(&format!(
                "hub certificate: {} key: {}",
                f.hub_cert.display(),
                f.hub_key.display()
            ));
        }
        PkiCmd::Gateway { id, dir } => {
            vigil_model::DeviceId::new(id.as_str()).map_err(|e| InputError(e.to_string()))?;
            let dir = dir.unwrap_or_else(|| data_dir.join("pki"));
            let (cert, key) = vigil_tls::pki::issue_gateway(&dir, &id).map_err(input)?;
            announce(&format!(
                "gateway {id}: certificate {} key {}",
                cert.display(),
                key.display()
            ));
        }
    }
    Ok(())
}
