//! Vigil's one configuration struct: a TOML file, overridden by `VIGIL_SECTION__KEY`
//! environment variables, overridden by command-line flags; validated at start.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vigil_gateway::GatewayConfig;
use vigil_hub::HubConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Vigil keeps its files (hub database, gateway outbox, demo credentials).
    pub data_dir: PathBuf,
    pub hub: HubSection,
    pub gateway: GatewayConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    pub listen: SocketAddr,
    /// The SQLite database file; relative paths are under `data_dir`.
    pub database: PathBuf,
    #[serde(flatten)]
    pub settings: HubConfig,
}

impl Default for HubSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: PathBuf::from("hub.db"),
            settings: HubConfig::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("vigil-data"),
            hub: HubSection::default(),
            gateway: GatewayConfig::default(),
        }
    }
}

fn scalar(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

impl Config {
    /// Loads the file (when given), then applies environment overrides from `vars`.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut value = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read config file {}", f.display()))?;
                let parsed: Config = toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", f.display()))?;
                toml::Value::try_from(parsed)?
            }
            None => toml::Value::try_from(Config::default())?,
        };
        for (k, v) in vars {
            let Some(path) = k.strip_prefix("VIGIL_") else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let Some((last, parents)) = keys.split_last() else {
                continue;
            };
            let mut node = &mut value;
            for key in parents {
                let table = node
                    .as_table_mut()
                    .with_context(|| format!("environment variable {k} does not name a setting"))?;
                node = table
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
            }
            let table = node
                .as_table_mut()
                .with_context(|| format!("environment variable {k} does not name a setting"))?;
            let new = match table.get(last) {
                Some(toml::Value::String(_)) | None => toml::Value::String(v.clone()),
                _ => scalar(&v),
            };
            table.insert(last.clone(), new);
        }
        let cfg: Config = value
            .try_into()
            .context("invalid configuration after environment overrides")?;
        Ok(cfg)
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.hub.settings.max_future_s < 0 {
            bail!("hub.max_future_s must not be negative");
        }
        let u = &self.gateway.hub_url;
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bail!("gateway.hub_url must start with http:// or https://, got {u:?}");
        }
        if self.gateway.backoff_min_ms == 0
            || self.gateway.backoff_min_ms > self.gateway.backoff_max_ms
        {
            bail!("gateway.backoff_min_ms must be positive and at most backoff_max_ms");
        }
        if self.gateway.outbox_max_bytes < 1 << 20 {
            bail!("gateway.outbox_max_bytes must be at least 1 MiB");
        }
        Ok(())
    }

    pub fn hub_database(&self) -> PathBuf {
        self.data_dir.join(&self.hub.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file_and_types_are_kept() {
        let d = tempfile::tempdir().expect("dir");
        let f = d.path().join("vigil.toml");
        std::fs::write(
            &f,
            "data_dir = \"/srv/vigil\"\n[hub]\nlisten = \"127.0.0.1:9000\"\nmax_future_s = 60\n",
        )
        .expect("write");
        let cfg = Config::load(
            Some(&f),
            [
                ("VIGIL_HUB__MAX_FUTURE_S".to_owned(), "120".to_owned()),
                (
                    "VIGIL_GATEWAY__HUB_URL".to_owned(),
                    "http://hub:1".to_owned(),
                ),
                ("PATH".to_owned(), "/bin".to_owned()),
            ],
        )
        .expect("load");
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/vigil"));
        assert_eq!(cfg.hub.listen.port(), 9000);
        assert_eq!(cfg.hub.settings.max_future_s, 120);
        assert_eq!(cfg.gateway.hub_url, "http://hub:1");
        cfg.validate().expect("valid");
    }

    #[test]
    fn unknown_settings_and_bad_values_are_errors() {
        let d = tempfile::tempdir().expect("dir");
        let f = d.path().join("vigil.toml");
        std::fs::write(&f, "[hub]\nlisen = \"x\"\n").expect("write");
        assert!(Config::load(Some(&f), []).is_err());
        assert!(
            Config::load(
                None,
                [("VIGIL_HUB__LISTEN".to_owned(), "nowhere".to_owned())]
            )
            .is_err()
        );
        let mut c = Config::default();
        c.gateway.hub_url = "ftp://x".into();
        assert!(c.validate().is_err());
    }
}
