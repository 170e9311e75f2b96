//! The pure BLE session: which peers to connect, which characteristics to subscribe, how
//! notifications become canonical records, and when to reconnect.
//!
//! [`BleSession`] receives abstract [`BleEvent`]s (from the radio in `crate::live`, or from a
//! recording in [`crate::recorded`]) and answers each with an [`Outcome`] the driver carries
//! out, or a [`Rejected`] notification the caller quarantines with its raw bytes. It does no
//! I/O and reads no clock: the caller gives the receive time of every event.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use vigil_devices::DecodeContext;
use vigil_devices::gatt::{self, Characteristic, GattError};
use vigil_model::{DeviceId, Record, Timestamp};

/// A Bluetooth device address (6 bytes, most significant first, as written `AA:BB:CC:DD:EE:FF`)
/// and the Vigil device id it maps to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BleAddress {
    bytes: [u8; 6],
    device: DeviceId,
}

/// Text that is not a Bluetooth device address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Bluetooth address {0:?}: expected six hex bytes like AA:BB:CC:DD:EE:FF")]
pub struct AddressError(pub String);

impl BleAddress {
    /// The address of six bytes, most significant first (btleplug's `BDAddr::into_inner`).
    pub fn from_bytes(bytes: [u8; 6]) -> Self {
        // Not input-dependent: `ble-` and twelve lower-case hex digits (16 characters of
        // letters, digits and '-') is always a valid id; a test pins it.
        #[allow(clippy::expect_used)]
        let device = DeviceId::new(format!("ble-{}", hex::encode(bytes)))
            .expect("ble-<12 hex digits> is a valid DeviceId");
        Self { bytes, device }
    }

    /// Parses `AA:BB:CC:DD:EE:FF` (also `-` separated, or twelve hex digits; any case).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let err = || AddressError(s.to_owned());
        let t = s.trim();
        let digits: String = if t.len() == 17 {
            let b = t.as_bytes();
            let sep = b.get(2).copied().ok_or_else(err)?;
            if !matches!(sep, b':' | b'-') {
                return Err(err());
            }
            for (i, c) in t.bytes().enumerate() {
                if i % 3 == 2 && c != sep {
                    return Err(err());
                }
            }
            t.chars().filter(|c| *c != char::from(sep)).collect()
        } else {
            t.to_owned()
        };
        if digits.len() != 12 {
            return Err(err());
        }
        let mut bytes = [0u8; 6];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| err())?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn bytes(&self) -> [u8; 6] {
        self.bytes
    }

    /// The Vigil device id: `ble-` and the address in lower-case hex without separators
    /// (`ble-a0b1c2d3e4f5`).
    pub fn device_id(&self) -> &DeviceId {
        &self.device
    }
}

impl fmt::Display for BleAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.bytes;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

impl fmt::Debug for BleAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BleAddress({self})")
    }
}

impl FromStr for BleAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, AddressError> {
        Self::parse(s)
    }
}

/// The Bluetooth SIG health services Vigil connects to, and their measurement
/// characteristics in the order they are subscribed.
pub const HEALTH_SERVICES: [(u16, &str, &[Characteristic]); 6] = [
    (
        0x180D,
        "Heart Rate",
        &[Characteristic::HeartRateMeasurement],
    ),
    (
        0x1809,
        "Health Thermometer",
        &[Characteristic::TemperatureMeasurement],
    ),
    (
        0x1810,
        "Blood Pressure",
        &[
            Characteristic::BloodPressureMeasurement,
            Characteristic::IntermediateCuffPressure,
        ],
    ),
    (
        0x1822,
        "Pulse Oximeter",
        &[
            Characteristic::PlxSpotCheckMeasurement,
            Characteristic::PlxContinuousMeasurement,
        ],
    ),
    (0x1808, "Glucose", &[Characteristic::GlucoseMeasurement]),
    (0x181D, "Weight Scale", &[Characteristic::WeightMeasurement]),
];

/// The 16-bit UUIDs of [`HEALTH_SERVICES`] (the scan filter).
pub fn health_service_uuids() -> Vec<u16> {
    HEALTH_SERVICES.iter().map(|(u, _, _)| *u).collect()
}

/// Whether a characteristic's values arrive as notifications or as indications (which the
/// peer retransmits until the central confirms them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    Notify,
    Indicate,
}

/// The delivery each service specification mandates for its measurement characteristic:
/// indications for the stored, one-off measurements (temperature 0x2A1C, blood pressure
/// 0x2A35, PLX spot-check 0x2A5E, weight 0x2A9D); notifications for the streams and the
/// glucose records (heart rate 0x2A37, intermediate cuff pressure 0x2A36, PLX continuous
/// 0x2A5F, glucose 0x2A18, which the Glucose Profile sends as notifications in answer to the
/// record access control point).
pub const fn delivery(c: Characteristic) -> Delivery {
    match c {
        Characteristic::TemperatureMeasurement
        | Characteristic::BloodPressureMeasurement
        | Characteristic::PlxSpotCheckMeasurement
        | Characteristic::WeightMeasurement => Delivery::Indicate,
        Characteristic::HeartRateMeasurement
        | Characteristic::IntermediateCuffPressure
        | Characteristic::PlxContinuousMeasurement
        | Characteristic::GlucoseMeasurement => Delivery::Notify,
    }
}

/// One characteristic to subscribe, in the service that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription {
    pub service_uuid: u16,
    pub characteristic: Characteristic,
    pub delivery: Delivery,
}

impl Subscription {
    pub fn characteristic_uuid(&self) -> u16 {
        self.characteristic.uuid()
    }
}

/// The subscriptions for a set of service UUIDs, in [`HEALTH_SERVICES`] order, without
/// duplicates.
pub fn subscriptions_for(services: &[u16]) -> Vec<Subscription> {
    HEALTH_SERVICES
        .iter()
        .filter(|(uuid, _, _)| services.contains(uuid))
        .flat_map(|(uuid, _, chars)| {
            chars.iter().map(move |c| Subscription {
                service_uuid: *uuid,
                characteristic: *c,
                delivery: delivery(*c),
            })
        })
        .collect()
}

/// Exponential reconnect backoff: `initial * 2^(attempt-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for ReconnectPolicy {
    /// 1 s, 2 s, 4 s, ... up to 60 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl ReconnectPolicy {
    /// The wait before reconnect attempt `attempt` (1 for the first after a disconnect).
    /// Attempt 0 waits nothing. Never overflows: large attempts give `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// One thing the radio (or a recording) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BleEvent {
    /// An advertisement: the peer's address, its name and the 16-bit service UUIDs it
    /// advertises.
    Discovered {
        address: BleAddress,
        name: Option<String>,
        advertised_services: Vec<u16>,
    },
    /// A connection is up and its services were discovered. `services` are the 16-bit UUIDs
    /// of the primary services found; empty means "not known", and the advertised ones are
    /// used.
    Connected {
        address: BleAddress,
        services: Vec<u16>,
    },
    /// A value of a subscribed characteristic.
    Notification {
        address: BleAddress,
        characteristic_uuid: u16,
        bytes: Vec<u8>,
    },
    /// The connection dropped, or a connection attempt failed.
    Disconnected { address: BleAddress },
    /// The backoff wait announced by [`Outcome::ReconnectAfter`] is over.
    ReconnectDue { address: BleAddress },
}

impl BleEvent {
    pub fn address(&self) -> &BleAddress {
        match self {
            Self::Discovered { address, .. }
            | Self::Connected { address, .. }
            | Self::Notification { address, .. }
            | Self::Disconnected { address }
            | Self::ReconnectDue { address } => address,
        }
    }
}

/// What the driver must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Connect to this peer now.
    Connect { address: BleAddress },
    /// Subscribe to these characteristics (in order) on the connected peer.
    Subscribe {
        address: BleAddress,
        subscriptions: Vec<Subscription>,
    },
    /// Canonical records decoded from one notification, to be handed to the sink. Empty for
    /// payloads that carry no reading (an intermediate cuff pressure).
    Records {
        address: BleAddress,
        device: DeviceId,
        records: Vec<Record>,
    },
    /// Wait `delay`, then report [`BleEvent::ReconnectDue`].
    ReconnectAfter {
        address: BleAddress,
        attempt: u32,
        delay: Duration,
    },
    /// Nothing to do, and why.
    Ignore {
        address: BleAddress,
        reason: Ignored,
    },
}

/// Why an event needs no action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The peer advertises none of the health services.
    NotAHealthDevice,
    /// A connection to the peer is already being made or is up.
    AlreadyConnecting,
    /// The connected peer exposes no supported health characteristic (the driver should
    /// disconnect it).
    NoHealthCharacteristics,
    /// A disconnect or reconnect timer for a peer that is not waiting for one (a duplicate or
    /// late report).
    Stale,
}

/// A notification that produced no records; keep its raw bytes in quarantine.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("notification 0x{characteristic_uuid:04X} from {address} ({device}) rejected: {reason}")]
pub struct Rejected {
    pub address: BleAddress,
    /// The Vigil device id of the address.
    pub device: DeviceId,
    pub characteristic_uuid: u16,
    /// The payload exactly as received.
    pub bytes: Vec<u8>,
    pub received: Timestamp,
    #[source]
    pub reason: RejectReason,
}

impl Rejected {
    /// A stable machine-readable code for quarantine (`undecodable`, `unknown_peer`).
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }
}

/// Why a notification was rejected.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RejectReason {
    /// The payload does not decode as its characteristic.
    #[error(transparent)]
    Undecodable(Box<GattError>),
    /// The address was never discovered as a health device in this session.
    #[error("the peer was not discovered as a health device in this session")]
    UnknownPeer,
}

impl RejectReason {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Undecodable(_) => "undecodable",
            Self::UnknownPeer => "unknown_peer",
        }
    }
}

/// Where the session stands with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// A connection was asked for and is not up yet.
    Connecting,
    /// Connected and subscribed.
    Connected,
    /// Disconnected; waiting for reconnect attempt `attempt`.
    Backoff { attempt: u32 },
}

#[derive(Debug, Clone)]
struct Peer {
    name: Option<String>,
    advertised: Vec<u16>,
    state: PeerState,
    /// Failed or fruitless connections since the last connection that delivered a
    /// decodable notification.
    failures: u32,
}

/// The BLE session state machine. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct BleSession {
    policy: ReconnectPolicy,
    peers: HashMap<BleAddress, Peer>,
}

impl BleSession {
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            peers: HashMap::new(),
        }
    }

    pub fn policy(&self) -> ReconnectPolicy {
        self.policy
    }

    /// The state of a peer the session tracks (health devices only).
    pub fn state(&self, address: &BleAddress) -> Option<&PeerState> {
        self.peers.get(address).map(|p| &p.state)
    }

    /// The advertised name of a tracked peer.
    pub fn name(&self, address: &BleAddress) -> Option<&str> {
        self.peers.get(address).and_then(|p| p.name.as_deref())
    }

    /// Handles one event received at `received` (the gateway's clock; it becomes the
    /// `received` time of every record, and the reading time of payloads without one).
    pub fn handle(&mut self, event: BleEvent, received: Timestamp) -> Result<Outcome, Rejected> {
        match event {
            BleEvent::Discovered {
                address,
                name,
                advertised_services,
            } => Ok(self.on_discovered(address, name, advertised_services)),
            BleEvent::Connected { address, services } => Ok(self.on_connected(address, &services)),
            BleEvent::Notification {
                address,
                characteristic_uuid,
                bytes,
            } => self.on_notification(address, characteristic_uuid, bytes, received),
            BleEvent::Disconnected { address } => Ok(self.on_disconnected(address)),
            BleEvent::ReconnectDue { address } => Ok(self.on_reconnect_due(address)),
        }
    }

    /// An advertisement: connect to health devices not already connecting or connected. A
    /// peer waiting out its backoff that advertises again is connected at once (it is
    /// demonstrably in range and connectable, as a cuff or scale is right after measuring).
    pub fn on_discovered(
        &mut self,
        address: BleAddress,
        name: Option<String>,
        advertised_services: Vec<u16>,
    ) -> Outcome {
        let health = !subscriptions_for(&advertised_services).is_empty();
        match self.peers.get_mut(&address) {
            Some(peer) => {
                if name.is_some() {
                    peer.name = name;
                }
                for s in advertised_services {
                    if !peer.advertised.contains(&s) {
                        peer.advertised.push(s);
                    }
                }
                match peer.state {
                    PeerState::Connecting | PeerState::Connected => Outcome::Ignore {
                        address,
                        reason: Ignored::AlreadyConnecting,
                    },
                    PeerState::Backoff { .. } => {
                        peer.state = PeerState::Connecting;
                        Outcome::Connect { address }
                    }
                }
            }
            None if health => {
                self.peers.insert(
                    address.clone(),
                    Peer {
                        name,
                        advertised: advertised_services,
                        state: PeerState::Connecting,
                        failures: 0,
                    },
                );
                Outcome::Connect { address }
            }
            None => Outcome::Ignore {
                address,
                reason: Ignored::NotAHealthDevice,
            },
        }
    }

    /// A connection is up: subscribe to the health characteristics of its services (or of
    /// its advertised services when the discovered ones are not given).
    pub fn on_connected(&mut self, address: BleAddress, services: &[u16]) -> Outcome {
        let Some(peer) = self.peers.get_mut(&address) else {
            return Outcome::Ignore {
                address,
                reason: Ignored::NotAHealthDevice,
            };
        };
        let subscriptions = if services.is_empty() {
            subscriptions_for(&peer.advertised)
        } else {
            subscriptions_for(services)
        };
        if subscriptions.is_empty() {
            // Fruitless: counts as a failure so the driver's disconnect backs off.
            peer.failures = peer.failures.saturating_add(1);
            return Outcome::Ignore {
                address,
                reason: Ignored::NoHealthCharacteristics,
            };
        }
        peer.state = PeerState::Connected;
        Outcome::Subscribe {
            address,
            subscriptions,
        }
    }

    /// A notification: decode it for the peer's device id. Any supported characteristic from
    /// a tracked peer is decoded, whatever its connection state (a value that arrives just
    /// after a disconnect report is still a measurement).
    pub fn on_notification(
        &mut self,
        address: BleAddress,
        characteristic_uuid: u16,
        bytes: Vec<u8>,
        received: Timestamp,
    ) -> Result<Outcome, Rejected> {
        let device = address.device_id().clone();
        let Some(peer) = self.peers.get_mut(&address) else {
            return Err(Rejected {
                address,
                device,
                characteristic_uuid,
                bytes,
                received,
                reason: RejectReason::UnknownPeer,
            });
        };
        let ctx = DecodeContext::new(device.clone(), received);
        match gatt::decode(characteristic_uuid, &bytes, &ctx) {
            Ok(decoded) => {
                peer.failures = 0;
                Ok(Outcome::Records {
                    address,
                    device,
                    records: decoded.into_records(),
                })
            }
            Err(e) => Err(Rejected {
                address,
                device,
                characteristic_uuid,
                bytes,
                received,
                reason: RejectReason::Undecodable(Box::new(e)),
            }),
        }
    }

    /// A disconnect or a failed connection attempt: back off. The attempt counter counts the
    /// connections since the last one that delivered a decodable notification, so a peer that
    /// drops after measuring reconnects after `initial`, and one that keeps failing waits up
    /// to `max`.
    pub fn on_disconnected(&mut self, address: BleAddress) -> Outcome {
        let Some(peer) = self.peers.get_mut(&address) else {
            return Outcome::Ignore {
                address,
                reason: Ignored::Stale,
            };
        };
        if let PeerState::Backoff { .. } = peer.state {
            return Outcome::Ignore {
                address,
                reason: Ignored::Stale,
            };
        }
        peer.failures = peer.failures.saturating_add(1);
        let attempt = peer.failures;
        peer.state = PeerState::Backoff { attempt };
        Outcome::ReconnectAfter {
            address,
            attempt,
            delay: self.policy.delay(attempt),
        }
    }

    /// The backoff is over: connect, unless the peer reconnected meanwhile.
    pub fn on_reconnect_due(&mut self, address: BleAddress) -> Outcome {
        match self.peers.get_mut(&address) {
            Some(peer) if matches!(peer.state, PeerState::Backoff { .. }) => {
                peer.state = PeerState::Connecting;
                Outcome::Connect { address }
            }
            _ => Outcome::Ignore {
                address,
                reason: Ignored::Stale,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> BleAddress {
        BleAddress::parse(s).expect("test address")
    }

    const T0: Timestamp = Timestamp::from_secs(1_795_000_000);

    #[test]
    fn addresses_map_to_lowercase_device_ids_without_colons() {
        let a = addr("A0:B1:C2:D3:E4:F5");
        assert_eq!(a.device_id().as_str(), "ble-a0b1c2d3e4f5");
        assert_eq!(a.to_string(), "A0:B1:C2:D3:E4:F5");
        assert_eq!(addr("a0-b1-c2-d3-e4-f5"), a);
        assert_eq!(addr("a0b1c2d3e4f5"), a);
        assert_eq!(BleAddress::from_bytes(a.bytes()), a);
    }

    #[test]
    fn malformed_addresses_are_refused_without_panic() {
        for bad in [
            "",
            "A0:B1:C2:D3:E4",
            "A0:B1:C2:D3:E4:F5:06",
            "A0:B1-C2:D3:E4:F5",
            "G0:B1:C2:D3:E4:F5",
            "A0B1C2D3E4F",
            "ä0:B1:C2:D3:E4:F",
            "A0::B1C2:D3:E4:F5",
        ] {
            assert!(BleAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_a_minute() {
        let p = ReconnectPolicy::default();
        let secs: Vec<u64> = (0..9).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
        let fast = ReconnectPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
        };
        assert_eq!(fast.delay(3), Duration::from_secs(1));
        assert_eq!(fast.delay(40), Duration::from_secs(5));
    }

    #[test]
    fn each_health_service_subscribes_its_measurements_with_the_mandated_delivery() {
        let plan = |s: u16| -> Vec<(u16, Delivery)> {
            subscriptions_for(&[s])
                .iter()
                .map(|x| (x.characteristic_uuid(), x.delivery))
                .collect()
        };
        use Delivery::{Indicate, Notify};
        assert_eq!(plan(0x180D), [(0x2A37, Notify)]);
        assert_eq!(plan(0x1809), [(0x2A1C, Indicate)]);
        assert_eq!(plan(0x1810), [(0x2A35, Indicate), (0x2A36, Notify)]);
        assert_eq!(plan(0x1822), [(0x2A5E, Indicate), (0x2A5F, Notify)]);
        assert_eq!(plan(0x1808), [(0x2A18, Notify)]);
        assert_eq!(plan(0x181D), [(0x2A9D, Indicate)]);
        assert_eq!(plan(0x180F), []);
        assert_eq!(subscriptions_for(&[0x181D, 0x180D, 0x180D]).len(), 2);
        assert_eq!(health_service_uuids().len(), 6);
    }

    #[test]
    fn only_health_devices_are_connected() {
        let mut s = BleSession::default();
        let battery_only = s.on_discovered(addr("00:00:00:00:00:01"), None, vec![0x180F]);
        assert!(matches!(
            battery_only,
            Outcome::Ignore {
                reason: Ignored::NotAHealthDevice,
                ..
            }
        ));
        let strap = addr("00:00:00:00:00:02");
        assert_eq!(
            s.on_discovered(strap.clone(), Some("HRM".into()), vec![0x180F, 0x180D]),
            Outcome::Connect {
                address: strap.clone()
            }
        );
        assert!(matches!(
            s.on_discovered(strap.clone(), None, vec![0x180D]),
            Outcome::Ignore {
                reason: Ignored::AlreadyConnecting,
                ..
            }
        ));
        assert_eq!(s.name(&strap), Some("HRM"));
    }

    #[test]
    fn discovered_services_override_the_advertised_ones_when_given() {
        let mut s = BleSession::default();
        let a = addr("00:00:00:00:00:03");
        s.on_discovered(a.clone(), None, vec![0x1810]);
        let Outcome::Subscribe { subscriptions, .. } = s.on_connected(a.clone(), &[0x1810, 0x180D])
        else {
            panic!("expected a subscription");
        };
        let uuids: Vec<u16> = subscriptions
            .iter()
            .map(|x| x.characteristic_uuid())
            .collect();
        assert_eq!(uuids, [0x2A37, 0x2A35, 0x2A36]);
        assert_eq!(s.state(&a), Some(&PeerState::Connected));
    }

    #[test]
    fn a_connection_without_health_characteristics_is_fruitless_and_backs_off() {
        let mut s = BleSession::default();
        let a = addr("00:00:00:00:00:04");
        s.on_discovered(a.clone(), None, vec![0x180D]);
        assert!(matches!(
            s.on_connected(a.clone(), &[0x180A]),
            Outcome::Ignore {
                reason: Ignored::NoHealthCharacteristics,
                ..
            }
        ));
        assert!(matches!(
            s.on_disconnected(a),
            Outcome::ReconnectAfter { attempt: 2, .. }
        ));
    }

    #[test]
    fn repeated_failures_back_off_and_a_good_notification_resets_the_count() {
        let mut s = BleSession::default();
        let a = addr("00:00:00:00:00:05");
        s.on_discovered(a.clone(), None, vec![0x180D]);
        let mut delays = Vec::new();
        for _ in 0..4 {
            match s.on_disconnected(a.clone()) {
                Outcome::ReconnectAfter { delay, .. } => delays.push(delay.as_secs()),
                other => panic!("{other:?}"),
            }
            // A second report of the same disconnect changes nothing.
            assert!(matches!(
                s.on_disconnected(a.clone()),
                Outcome::Ignore {
                    reason: Ignored::Stale,
                    ..
                }
            ));
            assert_eq!(
                s.on_reconnect_due(a.clone()),
                Outcome::Connect { address: a.clone() }
            );
        }
        assert_eq!(delays, [1, 2, 4, 8]);
        s.on_connected(a.clone(), &[]);
        let ok = s.on_notification(a.clone(), 0x2A37, vec![0x00, 0x48], T0);
        assert!(ok.is_ok());
        assert!(matches!(
            s.on_disconnected(a),
            Outcome::ReconnectAfter { attempt: 1, .. }
        ));
    }

    #[test]
    fn an_advertisement_during_backoff_connects_at_once_and_the_timer_goes_stale() {
        let mut s = BleSession::default();
        let a = addr("00:00:00:00:00:06");
        s.on_discovered(a.clone(), None, vec![0x181D]);
        s.on_disconnected(a.clone());
        assert_eq!(
            s.on_discovered(a.clone(), None, vec![0x181D]),
            Outcome::Connect { address: a.clone() }
        );
        assert!(matches!(
            s.on_reconnect_due(a),
            Outcome::Ignore {
                reason: Ignored::Stale,
                ..
            }
        ));
    }

    #[test]
    fn notifications_from_unknown_peers_are_rejected_with_their_bytes() {
        let mut s = BleSession::default();
        let a = addr("00:00:00:00:00:07");
        let e = s
            .handle(
                BleEvent::Notification {
                    address: a.clone(),
                    characteristic_uuid: 0x2A37,
                    bytes: vec![0x00, 0x48],
                },
                T0,
            )
            .expect_err("unknown peer");
        assert_eq!(e.code(), "unknown_peer");
        assert_eq!(e.bytes, [0x00, 0x48]);
        assert_eq!(e.device.as_str(), "ble-000000000007");
    }

    #[test]
    fn undecodable_payloads_are_rejected_with_bytes_characteristic_and_address() {
        let mut s = BleSession::default();
        let a = addr("00:00:00:00:00:08");
        s.on_discovered(a.clone(), None, vec![0x180D]);
        for (uuid, bytes) in [
            (0x2A37, vec![0x20, 0x48]),
            (0x2A00, vec![1, 2]),
            (0x2A37, vec![]),
        ] {
            let e = s
                .on_notification(a.clone(), uuid, bytes.clone(), T0)
                .expect_err("corrupt");
            assert_eq!(e.code(), "undecodable");
            assert_eq!(
                (e.characteristic_uuid, &e.bytes, &e.address),
                (uuid, &bytes, &a)
            );
            assert_eq!(e.received, T0);
        }
    }
}
