//! `vigil audit`: verify the hub's tamper-evident audit log and export it.

use crate::InputError;
use crate::run::load_config;
use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use vigil_store::audit::AuditQuery;
use vigil_store::sqlite_audit::{self, VerifyError};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Walk the whole chain: exit 0 when intact, 1 naming the first changed, inserted,
    /// reordered or deleted entry.
    Verify {
        /// Data directory of the hub (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the log as NDJSON: FHIR R4 AuditEvents or the stored entries.
    Export {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Fhir)]
        format: Format,
        /// Only the entries of this patient (Vigil id).
        #[arg(long)]
        patient: Option<String>,
        /// Output file (stdout by default).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// FHIR R4 AuditEvent resources, one per line.
    Fhir,
    /// The stored entries with their hashes, one per line.
    Json,
}

fn database(data_dir: Option<PathBuf>, file: Option<&Path>) -> anyhow::Result<PathBuf> {
    let cfg = load_config(file)?;
    let db = data_dir
        .unwrap_or(cfg.data_dir.clone())
        .join(&cfg.hub.database);
    if !db.is_file() {
        return Err(InputError(format!("no hub database at {}", db.display())).into());
    }
    Ok(db)
}

pub fn run(cmd: AuditCmd, file: Option<&Path>) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { data_dir } => verify(&database(data_dir, file)?),
        AuditCmd::Export {
            data_dir,
            format,
            patient,
            output,
        } => {
            if let Some(p) = &patient {
                vigil_model::PatientId::new(p.as_str())
                    .map_err(|e| InputError(format!("--patient: {e}")))?;
            }
            let db = database(data_dir, file)?;
            match output {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    export(&db, format, patient, &mut w)?;
                    w.flush()
                        .with_context(|| format!("cannot write {}", path.display()))
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    export(&db, format, patient, &mut w)?;
                    Ok(w.flush()?)
                }
            }
        }
    }
}

fn verify(db: &Path) -> anyhow::Result<()> {
    match sqlite_audit::verify_file(db) {
        Ok(v) => {
            let head = v
                .head
                .map(|h| hex::encode(h.hash))
                .unwrap_or_else(|| "none".to_owned());
            crate::run::announce(&format!(
                "audit: {} entries verified, head {head}",
                v.entries
            ));
            Ok(())
        }
        Err(VerifyError::Violation(v)) => Err(anyhow::anyhow!("audit: {v}")),
        Err(VerifyError::Unreadable(e)) => Err(anyhow::anyhow!("audit: cannot verify: {e}")),
    }
}

fn export(
    db: &Path,
    format: Format,
    patient: Option<String>,
    w: &mut impl Write,
) -> anyhow::Result<()> {
    const PAGE: usize = 1000;
    let mut after = 0;
    loop {
        let page = sqlite_audit::read_file(
            db,
            &AuditQuery {
                after,
                limit: PAGE,
                patient: patient.clone(),
            },
        )?;
        for e in &page {
            let line = match format {
                Format::Fhir => vigil_fhir::audit_event::audit_event(e).to_string(),
                Format::Json => serde_json::to_string(e)?,
            };
            writeln!(w, "{line}")?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.seq,
            _ => return Ok(()),
        }
    }
}
