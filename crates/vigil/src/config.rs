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

/// Deep merge: tables key by key, anything else replaced.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

impl Config {
    /// Loads the file (when given), then applies environment overrides from `vars`.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        // Defaults first (they give each key its type), the file's own text over them (so
        // fields never written out, such as secrets, survive), then the environment.
        let mut value = toml::Value::try_from(Config::default())?;
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read config file {}", f.display()))?;
            let _checked: Config = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", f.display()))?;
            let raw: toml::Value = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", f.display()))?;
            merge(&mut value, raw);
        }
        // Each override takes the type its key has in the defaults with every optional
        // section filled in: text stays text, numbers and booleans are parsed. Keys never
        // written out (secrets) are text.
        let mut full = Config::default();
        full.gateway.mllp.get_or_insert_with(Default::default);
        full.gateway.mqtt.get_or_insert_with(Default::default);
        full.gateway
            .listen
            .get_or_insert(SocketAddr::from(([127, 0, 0, 1], 7070)));
        let hints = toml::Value::try_from(full)?;
        for (k, v) in vars {
            // Settings are `VIGIL_DATA_DIR` and `VIGIL_SECTION__KEY`; other `VIGIL_` variables
            // (VIGIL_CONFIG, VIGIL_LOG, VIGIL_API_TOKEN) belong to the command line.
            let Some(path) = k.strip_prefix("VIGIL_") else {
                continue;
            };
            if !path.contains("__") && path != "DATA_DIR" {
                continue;
            }
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let Some((last, parents)) = keys.split_last() else {
                continue;
            };
            let hint = keys
                .iter()
                .try_fold(&hints, |node, key| node.get(key.as_str()));
            let new = match hint {
                None | Some(toml::Value::String(_)) => toml::Value::String(v.clone()),
                Some(_) => scalar(&v),
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
            node.as_table_mut()
                .with_context(|| format!("environment variable {k} does not name a setting"))?
                .insert(last.clone(), new);
        }
        value
            .try_into()
            .context("invalid configuration after environment overrides")
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
        vigil_hub::ehr_push::validate(&self.hub.settings.ehr).map_err(anyhow::Error::msg)?;
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
                ("VIGIL_LOG".to_owned(), "debug".to_owned()),
                ("VIGIL_DATA_DIR".to_owned(), "/srv/other".to_owned()),
            ],
        )
        .expect("load");
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/other"));
        assert_eq!(cfg.hub.listen.port(), 9000);
        assert_eq!(cfg.hub.settings.max_future_s, 120);
        assert_eq!(cfg.gateway.hub_url, "http://hub:1");
        cfg.validate().expect("valid");
    }

    #[test]
    fn secrets_in_the_file_survive_and_optional_sections_take_typed_overrides() {
        let d = tempfile::tempdir().expect("dir");
        let f = d.path().join("vigil.toml");
        std::fs::write(&f, "[gateway]\ntoken = \"vgt_secret\"\nid = \"home\"\n").expect("write");
        let cfg = Config::load(
            Some(&f),
            [
                (
                    "VIGIL_GATEWAY__MQTT__KEEP_ALIVE_S".to_owned(),
                    "45".to_owned(),
                ),
                (
                    "VIGIL_GATEWAY__MQTT__PASSWORD".to_owned(),
                    "1234".to_owned(),
                ),
                ("VIGIL_GATEWAY__ID".to_owned(), "17".to_owned()),
            ],
        )
        .expect("load");
        assert_eq!(cfg.gateway.token, "vgt_secret");
        assert_eq!(cfg.gateway.id, "17");
        let mqtt = cfg.gateway.mqtt.expect("mqtt section from the environment");
        assert_eq!(mqtt.keep_alive_s, 45);
        assert_eq!(mqtt.password.as_deref(), Some("1234"));
    }

    #[test]
    fn the_readme_configuration_example_loads_and_validates() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n")
            .expect("a toml block in the README")
            + 8;
        let len = readme[start..].find("```").expect("end of the block");
        let d = tempfile::tempdir().expect("dir");
        let f = d.path().join("vigil.toml");
        std::fs::write(&f, &readme[start..start + len]).expect("write");
        let cfg = Config::load(Some(&f), []).expect("the README example loads");
        cfg.validate().expect("and validates");
        assert_eq!(cfg.hub.settings.escalate_after_s, 900);
        assert_eq!(cfg.hub.settings.webhooks.len(), 1);
        assert_eq!(cfg.gateway.batch_max_records, 10_000);
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
