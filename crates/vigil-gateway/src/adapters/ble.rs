//! The live Bluetooth LE adapter: `vigil_ble`'s radio driver feeding the outbox.
//!
//! Built only with the `ble` feature (it links the platform Bluetooth stack). A notification
//! counts as handled only once its records are committed to the outbox; one that decodes to
//! nothing is kept in the local quarantine with its raw bytes, characteristic and address.

use super::Quarantine;
use vigil_ble::live::{LiveConfig, Sink, SinkError, SinkItem};
use vigil_outbox::OutboxError;

/// Settings of the Bluetooth adapter (`[gateway.ble]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BleConfig {
    /// Which Bluetooth adapter (0: the first, `hci0` on Linux).
    pub adapter: usize,
}

#[allow(clippy::derivable_impls)]
impl Default for BleConfig {
    fn default() -> Self {
        Self { adapter: 0 }
    }
}

struct OutboxSink {
    outbox: crate::edge::Intake,
    quarantine: Quarantine,
}

impl Sink for OutboxSink {
    async fn accept(&mut self, item: &SinkItem) -> Result<(), SinkError> {
        match item {
            SinkItem::Records { records, .. } => match self.outbox.append(records.clone()).await {
                Ok(_) => Ok(()),
                Err(OutboxError::Full { .. }) => Err(SinkError::Retry("outbox full".into())),
                Err(OutboxError::Closed) => Err(SinkError::Fatal("outbox closed".into())),
                Err(e) => Err(SinkError::Retry(e.to_string())),
            },
            SinkItem::Rejected(r) => {
                let topic = format!("ble/{}/{:04X}", r.device, r.characteristic_uuid);
                self.quarantine
                    .put("ble", &topic, r.code(), &r.bytes, r.received)
                    .await
                    .map(|_| ())
                    .map_err(|e| SinkError::Retry(e.to_string()))
            }
        }
    }
}

/// Starts the radio driver; it runs until the gateway stops or the stack fails.
pub(crate) fn start(
    cfg: BleConfig,
    outbox: crate::edge::Intake,
    quarantine: Quarantine,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let live = LiveConfig {
            adapter: cfg.adapter,
            ..LiveConfig::default()
        };
        tokio::select! {
            r = vigil_ble::live::run(live, OutboxSink { outbox, quarantine }) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "Bluetooth adapter stopped");
                }
            }
            _ = stop.wait_for(|s| *s) => {}
        }
    })
}
