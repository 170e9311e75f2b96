//! The live radio driver (feature `live`): btleplug scans, connects and subscribes; a
//! [`BleSession`] decides; a [`Sink`] receives the records.
//!
//! [`run`] takes an adapter, scans with a filter for the health services, connects to every
//! health device the session picks, discovers its services, subscribes to the chosen
//! characteristics and feeds every value to the session. Records and rejected payloads go to
//! the sink one notification at a time, in arrival order; the next notification is not
//! looked at until the sink returned `Ok` for this one. A sink that answers
//! [`SinkError::Retry`] (an outbox at its bound) gets the same item again after the reconnect
//! policy's backoff; nothing is dropped. [`SinkError::Fatal`] ends [`run`].
//!
//! One task owns the session; connection attempts, subscriptions, notification streams and
//! reconnect timers run as tasks that report back over a channel. Linux uses BlueZ over
//! D-Bus (`apt-get install -y libdbus-1-dev pkg-config` to build). macOS gives no device
//! addresses (btleplug reports 00:00:00:00:00:00), so device ids would collide there; the
//! gateway targets Linux.
//!
//! Untested here: the machine that wrote it has no radio. [`deliver`] (the sink retry) is
//! tested; the rest is a thin translation between btleplug and [`BleSession`], whose
//! behaviour the recorded sessions test.

use crate::session::{
    BleAddress, BleEvent, BleSession, Delivery, Ignored, Outcome, ReconnectPolicy, Rejected,
    Subscription, health_service_uuids,
};
use btleplug::api::bleuuid::{BleUuid, uuid_from_u16};
use btleplug::api::{
    Central as _, CentralEvent, CharPropFlags, Manager as _, Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use vigil_model::{DeviceId, Record, Timestamp};

/// What [`run`] needs to know.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Which adapter, in the order the platform lists them (0: the first, `hci0` on Linux).
    pub adapter: usize,
    /// Reconnect backoff; also the wait between sink retries.
    pub policy: ReconnectPolicy,
    /// Limit for one connection attempt and for service discovery.
    pub connect_timeout: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            adapter: 0,
            policy: ReconnectPolicy::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One handed-over notification.
#[derive(Debug)]
pub enum SinkItem {
    /// Canonical records of one notification (never empty), for the outbox.
    Records {
        address: BleAddress,
        device: DeviceId,
        records: Vec<Record>,
    },
    /// A notification that produced no records, with its raw bytes, for quarantine.
    Rejected(Rejected),
}

/// Why the sink did not take an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Not now (the outbox is full or busy): the same item is offered again after a backoff.
    #[error("sink refused the item for now: {0}")]
    Retry(String),
    /// The sink is gone: [`run`] stops with [`LiveError::Sink`].
    #[error("sink failed: {0}")]
    Fatal(String),
}

/// Where the records go. The gateway implements it over its outbox and returns `Ok` only
/// once the item is durably committed (the notification counts as handled only then).
///
/// ```
/// use vigil_ble::live::{Sink, SinkError, SinkItem};
///
/// #[derive(Debug, Default)]
/// struct Outbox { committed: usize, quarantined: usize }
///
/// impl Sink for Outbox {
///     async fn accept(&mut self, item: &SinkItem) -> Result<(), SinkError> {
///         match item {
///             SinkItem::Records { records, .. } => self.committed += records.len(),
///             SinkItem::Rejected(r) => {
///                 // keep r.bytes, r.characteristic_uuid, r.address, r.code()
///                 self.quarantined += 1;
///             }
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send {
    fn accept<'a>(
        &'a mut self,
        item: &'a SinkItem,
    ) -> impl Future<Output = Result<(), SinkError>> + Send + 'a;
}

/// Why the live driver stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "the Bluetooth stack is not available (on Linux: is bluetoothd running and D-Bus reachable?): {0}"
    )]
    Stack(#[source] btleplug::Error),
    #[error("no Bluetooth adapter {index} (found {found})")]
    NoAdapter { index: usize, found: usize },
    #[error("Bluetooth adapter: {0}")]
    Adapter(#[source] btleplug::Error),
    #[error("the adapter's event stream ended (adapter removed or bluetoothd stopped)")]
    EventsEnded,
    #[error("the record sink failed: {0}")]
    Sink(String),
}

/// Offers `item` to the sink until it returns `Ok`, waiting `policy.delay(n)` after the n-th
/// [`SinkError::Retry`]. [`SinkError::Fatal`] is returned as [`LiveError::Sink`].
pub async fn deliver<S: Sink>(
    sink: &mut S,
    item: &SinkItem,
    policy: ReconnectPolicy,
) -> Result<(), LiveError> {
    let mut attempt = 0u32;
    loop {
        match sink.accept(item).await {
            Ok(()) => return Ok(()),
            Err(SinkError::Retry(why)) => {
                attempt = attempt.saturating_add(1);
                let wait = policy.delay(attempt);
                tracing::warn!(attempt, ?wait, %why, "BLE sink refused a notification; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(SinkError::Fatal(why)) => return Err(LiveError::Sink(why)),
        }
    }
}

/// What the helper tasks report to the session's task.
#[derive(Debug)]
enum Report {
    Event(BleEvent, Timestamp),
    /// The notification stream of a peer ended (usually followed by a disconnect event).
    StreamEnded(BleAddress),
}

/// Runs the radio until the adapter goes away or the sink fails. Cancel by dropping the
/// future.
pub async fn run<S: Sink>(config: LiveConfig, mut sink: S) -> Result<(), LiveError> {
    let manager = Manager::new().await.map_err(LiveError::Stack)?;
    let adapters = manager.adapters().await.map_err(LiveError::Stack)?;
    let found = adapters.len();
    let adapter = adapters
        .into_iter()
        .nth(config.adapter)
        .ok_or(LiveError::NoAdapter {
            index: config.adapter,
            found,
        })?;
    let mut events = adapter.events().await.map_err(LiveError::Adapter)?;
    let filter = ScanFilter {
        services: health_service_uuids()
            .into_iter()
            .map(uuid_from_u16)
            .collect(),
    };
    adapter
        .start_scan(filter)
        .await
        .map_err(LiveError::Adapter)?;
    tracing::info!(
        adapter = config.adapter,
        "BLE scan started for health services"
    );

    let (tx, mut rx) = mpsc::channel::<Report>(256);
    let mut driver = Driver {
        adapter,
        session: BleSession::new(config.policy),
        config,
        tx,
        ids: HashMap::new(),
        peripherals: HashMap::new(),
    };

    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => driver.central_event(ev, &mut sink).await?,
                None => return Err(LiveError::EventsEnded),
            },
            Some(report) = rx.recv() => match report {
                Report::Event(ev, received) => driver.feed(ev, received, &mut sink).await?,
                Report::StreamEnded(address) => {
                    tracing::debug!(%address, "BLE notification stream ended");
                }
            },
        }
    }
}

struct Driver {
    adapter: Adapter,
    config: LiveConfig,
    session: BleSession,
    tx: mpsc::Sender<Report>,
    ids: HashMap<PeripheralId, BleAddress>,
    peripherals: HashMap<BleAddress, Peripheral>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .field("peers", &self.peripherals.len())
            .finish()
    }
}

impl Driver {
    async fn central_event<S: Sink>(
        &mut self,
        ev: CentralEvent,
        sink: &mut S,
    ) -> Result<(), LiveError> {
        match ev {
            CentralEvent::DeviceDiscovered(id)
            | CentralEvent::DeviceUpdated(id)
            | CentralEvent::ServicesAdvertisement { id, .. } => {
                let Ok(p) = self.adapter.peripheral(&id).await else {
                    return Ok(());
                };
                let props = p.properties().await.ok().flatten();
                let address = BleAddress::from_bytes(
                    props
                        .as_ref()
                        .map_or_else(|| p.address(), |pr| pr.address)
                        .into_inner(),
                );
                let (name, services) = match props {
                    Some(pr) => (
                        pr.local_name.or(pr.advertisement_name),
                        pr.services.iter().filter_map(|u| u.to_ble_u16()).collect(),
                    ),
                    None => (None, Vec::new()),
                };
                self.ids.insert(id, address.clone());
                self.peripherals.insert(address.clone(), p);
                let ev = BleEvent::Discovered {
                    address,
                    name,
                    advertised_services: services,
                };
                self.feed(ev, Timestamp::now(), sink).await
            }
            CentralEvent::DeviceDisconnected(id) => match self.ids.get(&id).cloned() {
                Some(address) => {
                    tracing::info!(%address, "BLE device disconnected");
                    self.feed(BleEvent::Disconnected { address }, Timestamp::now(), sink)
                        .await
                }
                None => Ok(()),
            },
            CentralEvent::StateUpdate(state) => {
                tracing::warn!(?state, "BLE adapter state changed");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Feeds one event to the session and carries out its outcome.
    async fn feed<S: Sink>(
        &mut self,
        ev: BleEvent,
        received: Timestamp,
        sink: &mut S,
    ) -> Result<(), LiveError> {
        match self.session.handle(ev, received) {
            Err(rejected) => {
                tracing::warn!(
                    address = %rejected.address,
                    code = rejected.code(),
                    "BLE notification rejected; quarantining its bytes"
                );
                deliver(sink, &SinkItem::Rejected(rejected), self.config.policy).await
            }
            Ok(Outcome::Records {
                address,
                device,
                records,
            }) => {
                if records.is_empty() {
                    return Ok(());
                }
                let item = SinkItem::Records {
                    address,
                    device,
                    records,
                };
                deliver(sink, &item, self.config.policy).await
            }
            Ok(Outcome::Connect { address }) => {
                self.connect(address);
                Ok(())
            }
            Ok(Outcome::Subscribe {
                address,
                subscriptions,
            }) => {
                self.subscribe(address, subscriptions);
                Ok(())
            }
            Ok(Outcome::ReconnectAfter {
                address,
                attempt,
                delay,
            }) => {
                tracing::info!(%address, attempt, ?delay, "BLE reconnect scheduled");
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let ev = BleEvent::ReconnectDue { address };
                    // The receiver is gone only when `run` has ended.
                    let _ = tx.send(Report::Event(ev, Timestamp::now())).await;
                });
                Ok(())
            }
            Ok(Outcome::Ignore { address, reason }) => {
                if reason == Ignored::NoHealthCharacteristics
                    && let Some(p) = self.peripherals.get(&address).cloned()
                {
                    tracing::info!(%address, "BLE device has no health characteristics");
                    tokio::spawn(async move {
                        let _ = p.disconnect().await;
                    });
                }
                Ok(())
            }
        }
    }

    fn connect(&self, address: BleAddress) {
        let tx = self.tx.clone();
        let timeout = self.config.connect_timeout;
        let Some(p) = self.peripherals.get(&address).cloned() else {
            let _ = tx.try_send(Report::Event(
                BleEvent::Disconnected { address },
                Timestamp::now(),
            ));
            return;
        };
        tokio::spawn(async move {
            let result = async {
                if !p.is_connected().await? {
                    p.connect_with_timeout(timeout).await?;
                }
                p.discover_services_with_timeout(timeout).await?;
                Ok::<_, btleplug::Error>(
                    p.services()
                        .iter()
                        .filter_map(|s| s.uuid.to_ble_u16())
                        .collect::<Vec<u16>>(),
                )
            }
            .await;
            let ev = match result {
                Ok(services) => {
                    tracing::info!(%address, "BLE device connected");
                    BleEvent::Connected { address, services }
                }
                Err(e) => {
                    tracing::info!(%address, error = %e, "BLE connection attempt failed");
                    BleEvent::Disconnected { address }
                }
            };
            let _ = tx.send(Report::Event(ev, Timestamp::now())).await;
        });
    }

    fn subscribe(&self, address: BleAddress, subscriptions: Vec<Subscription>) {
        let tx = self.tx.clone();
        let Some(p) = self.peripherals.get(&address).cloned() else {
            return;
        };
        tokio::spawn(async move {
            // Open the stream before subscribing so that the first value is not missed.
            let mut stream = match p.notifications().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%address, error = %e, "BLE notification stream unavailable");
                    let _ = p.disconnect().await;
                    return;
                }
            };
            let chars = p.characteristics();
            let mut subscribed = 0usize;
            for s in &subscriptions {
                let want = uuid_from_u16(s.characteristic_uuid());
                let service = uuid_from_u16(s.service_uuid);
                let Some(c) = chars
                    .iter()
                    .find(|c| c.uuid == want && c.service_uuid == service)
                else {
                    continue;
                };
                let flag = match s.delivery {
                    Delivery::Notify => CharPropFlags::NOTIFY,
                    Delivery::Indicate => CharPropFlags::INDICATE,
                };
                if !c.properties.contains(flag) {
                    tracing::debug!(%address, uuid = s.characteristic_uuid(), properties = ?c.properties,
                        "characteristic does not offer the delivery its specification mandates");
                }
                // BlueZ enables indications or notifications as the characteristic offers.
                match p.subscribe(c).await {
                    Ok(()) => subscribed += 1,
                    Err(e) => tracing::warn!(%address, uuid = s.characteristic_uuid(), error = %e,
                        "BLE subscription failed"),
                }
            }
            if subscribed == 0 {
                tracing::warn!(%address, "no BLE subscription succeeded; disconnecting");
                let _ = p.disconnect().await;
                return;
            }
            while let Some(n) = stream.next().await {
                let received = Timestamp::now();
                let Some(uuid) = n.uuid.to_ble_u16() else {
                    continue;
                };
                let ev = BleEvent::Notification {
                    address: address.clone(),
                    characteristic_uuid: uuid,
                    bytes: n.value,
                };
                if tx.send(Report::Event(ev, received)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Report::StreamEnded(address)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses `busy` times, then accepts; or fails for good.
    #[derive(Debug)]
    struct Outbox {
        busy: u32,
        fatal: bool,
        offers: u32,
        committed: Vec<usize>,
    }

    impl Sink for Outbox {
        async fn accept(&mut self, item: &SinkItem) -> Result<(), SinkError> {
            self.offers += 1;
            if self.fatal {
                return Err(SinkError::Fatal("disk gone".into()));
            }
            if self.busy > 0 {
                self.busy -= 1;
                return Err(SinkError::Retry("outbox full".into()));
            }
            if let SinkItem::Records { records, .. } = item {
                self.committed.push(records.len());
            }
            Ok(())
        }
    }

    fn item() -> SinkItem {
        let address = BleAddress::parse("00:11:22:33:44:55").expect("address");
        let device = address.device_id().clone();
        let ctx = vigil_devices::DecodeContext::new(device.clone(), Timestamp::from_secs(1));
        let records = vigil_devices::gatt::decode(0x2A37, &[0x00, 0x48], &ctx)
            .expect("H: 72/min")
            .into_records();
        SinkItem::Records {
            address,
            device,
            records,
        }
    }

    const FAST: ReconnectPolicy = ReconnectPolicy {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(4),
    };

    #[tokio::test]
    async fn a_refusing_sink_gets_the_same_item_until_it_commits_it() {
        let mut sink = Outbox {
            busy: 3,
            fatal: false,
            offers: 0,
            committed: Vec::new(),
        };
        deliver(&mut sink, &item(), FAST).await.expect("delivered");
        assert_eq!(sink.offers, 4);
        assert_eq!(sink.committed, [1]);
    }

    #[tokio::test]
    async fn a_failed_sink_stops_the_driver_with_its_reason() {
        let mut sink = Outbox {
            busy: 0,
            fatal: true,
            offers: 0,
            committed: Vec::new(),
        };
        let e = deliver(&mut sink, &item(), FAST).await.expect_err("fatal");
        assert_eq!(e.to_string(), "the record sink failed: disk gone");
        assert_eq!(sink.offers, 1);
    }
}
