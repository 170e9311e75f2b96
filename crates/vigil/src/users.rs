//! `vigil admin create-user` and `vigil admin disable-user`: accounts of people who sign in
//! with a password, written straight into the hub's database.

use crate::InputError;
use crate::config::Config;
use crate::run::announce;
use clap::Args;
use std::io::BufRead;
use std::path::PathBuf;
use vigil_hub::session::{check_password_policy, generate_password, hash_password};
use vigil_model::Timestamp;
use vigil_store::sqlite::SqliteStore;
use vigil_store::users::{validate_name, validate_role};
use vigil_store::{StoreError, UserAccount, UserStore};

#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// The user name people sign in with.
    pub name: String,
    /// admin, clinician, nurse, caregiver, patient or integration.
    #[arg(long)]
    pub role: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Read the password from the first line of standard input; without it a random
    /// password is generated and printed once.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct DisableUserArgs {
    pub name: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Enable the account again instead.
    #[arg(long)]
    pub enable: bool,
}

fn open(cfg: &Config, data_dir: Option<PathBuf>) -> anyhow::Result<SqliteStore> {
    let db = data_dir
        .unwrap_or(cfg.data_dir.clone())
        .join(&cfg.hub.database);
    Ok(SqliteStore::open(&db)?)
}

pub async fn create_user(a: CreateUserArgs, cfg: &Config) -> anyhow::Result<()> {
    validate_name(&a.name).map_err(|e| InputError(e.to_string()))?;
    validate_role(&a.role).map_err(|e| InputError(e.to_string()))?;
    let password = if a.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        generate_password()
    };
    check_password_policy(&a.name, &password).map_err(|e| InputError(e.to_string()))?;
    let store = open(cfg, a.data_dir)?;
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
    let account = UserAccount {
        name: a.name.clone(),
        role: a.role,
        password_hash: Some(hash),
        disabled: false,
        failed_attempts: 0,
        locked_until: None,
        lockouts: 0,
        created: Timestamp::now(),
    };
    match store.create_user(account).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => return Err(InputError(m).into()),
        Err(e) => return Err(e.into()),
    }
    if !a.password_stdin {
        announce(&password);
    }
    Ok(())
}

pub async fn disable_user(a: DisableUserArgs, cfg: &Config) -> anyhow::Result<()> {
    let store = open(cfg, a.data_dir)?;
    match store.set_user_disabled(&a.name, !a.enable).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(m)) => Err(InputError(format!("{m} not found")).into()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_readme_oidc_example_loads() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("[hub.oidc]\n").expect("the OIDC example");
        let len = readme[start..].find("```").expect("end of the block");
        let d = tempfile::tempdir().expect("dir");
        let f = d.path().join("vigil.toml");
        std::fs::write(&f, &readme[start..start + len]).expect("write");
        let cfg = Config::load(Some(&f), []).expect("the OIDC example loads");
        let oidc = cfg.hub.settings.oidc.expect("an [hub.oidc] section");
        assert_eq!(oidc.role_claim, "groups");
        assert_eq!(
            oidc.roles.get("ward-nurses").map(String::as_str),
            Some("nurse")
        );
        assert_eq!(oidc.name_claim, "preferred_username");
    }
}
