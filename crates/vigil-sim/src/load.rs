//! The load generator: wearable-style heart-rate and SpO2 readings at an exact aggregate
//! rate, for throughput benchmarks.
//!
//! Reading `i` (from 0) is due at `start + ceil((i + 1) * 1000 / rate)` ms, so every
//! interval `(start + k s, start + (k + 1) s]` holds exactly `rate` readings, and the run
//! holds `floor(rate * duration_ms / 1000)`. Readings go round-robin over the patients'
//! wearables and alternate between heart rate and SpO2 per patient; values are plausible
//! random walks around each patient's baseline. Each reading costs one `DeviceId` clone
//! (a short string copy) and a few integer operations.

use crate::error::SimError;
use crate::math::{Rng, Stream, hash};
use crate::patient::METRICS;
use std::time::Duration;
use vigil_model::{
    Assignment, Device, DeviceId, DeviceKind, Metric, Patient, PatientId, Reading, Record, Source,
    Timestamp,
};

/// What load to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Wearables (one per patient, `lp-0001-wear` of `lp-0001` ...).
    pub patients: usize,
    /// Aggregate readings per second over all patients.
    pub rate_per_second: u64,
    /// Length of the run in device time.
    pub duration: Duration,
    pub seed: u64,
    /// Device time of the run's start; the first reading is after it.
    pub start: Timestamp,
}

impl LoadSpec {
    /// A spec starting at 2024-01-01T00:00:00Z with seed 0.
    pub fn new(patients: usize, rate_per_second: u64, duration: Duration) -> Self {
        Self {
            patients,
            rate_per_second,
            duration,
            seed: 0,
            start: Timestamp(1_704_067_200_000),
        }
    }

    /// The number of readings the run yields: `floor(rate * duration_ms / 1000)`.
    pub fn total(&self) -> u64 {
        let t = u128::from(self.rate_per_second) * self.duration.as_millis() / 1000;
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Builds the generator.
    pub fn generator(&self) -> Result<LoadGen, SimError> {
        if self.patients == 0 && self.rate_per_second > 0 {
            return Err(SimError::InvalidConfig(
                "a load needs at least one patient".to_owned(),
            ));
        }
        if self.patients > 999_999 {
            return Err(SimError::InvalidConfig(format!(
                "{} patients: at most 999999",
                self.patients
            )));
        }
        let mut patients = Vec::with_capacity(self.patients);
        let mut devices = Vec::with_capacity(self.patients);
        let mut assignments = Vec::with_capacity(self.patients);
        let mut ids = Vec::with_capacity(self.patients);
        let mut state = Vec::with_capacity(self.patients);
        for i in 0..self.patients {
            let pid = PatientId::new(format!("lp-{:04}", i + 1))?;
            let did = DeviceId::new(format!("{pid}-wear"))?;
            let h = hash(&[self.seed, i as u64, Stream::Load as u64]);
            let base_hr = 60 + (h % 25) as i16;
            let base_spo2 = 96 + ((h >> 8) % 4) as i16;
            state.push(Walk {
                hr: base_hr,
                base_hr,
                spo2: base_spo2,
                base_spo2,
            });
            patients.push(Patient {
                id: pid.clone(),
                name: None,
                birth_date: None,
            });
            devices.push(Device {
                id: did.clone(),
                kind: DeviceKind::Wearable,
                serial: Some(format!("VSLOAD-{:06}", i + 1)),
                mac: None,
                eui64: None,
                manufacturer: Some("Vigil Sim".to_owned()),
                model: Some("Vigil Sim Load Band".to_owned()),
                gateway: None,
            });
            assignments.push(Assignment {
                device: did.clone(),
                patient: pid,
                from: self.start,
                to: None,
            });
            ids.push(did);
        }
        Ok(LoadGen {
            spec: self.clone(),
            total: self.total(),
            next: 0,
            rng: Rng::new(hash(&[self.seed, Stream::Load as u64])),
            hr: METRICS.hr,
            spo2: METRICS.spo2,
            ids,
            state,
            patients,
            devices,
            assignments,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Walk {
    hr: i16,
    base_hr: i16,
    spo2: i16,
    base_spo2: i16,
}

/// Yields the readings of a [`LoadSpec`] in time order, as an iterator or by time.
#[derive(Debug, Clone)]
pub struct LoadGen {
    spec: LoadSpec,
    total: u64,
    next: u64,
    rng: Rng,
    hr: Metric,
    spo2: Metric,
    ids: Vec<DeviceId>,
    state: Vec<Walk>,
    patients: Vec<Patient>,
    devices: Vec<Device>,
    assignments: Vec<Assignment>,
}

impl LoadGen {
    pub fn spec(&self) -> &LoadSpec {
        &self.spec
    }
    pub fn patients(&self) -> &[Patient] {
        &self.patients
    }
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
    pub fn assignments(&self) -> &[Assignment] {
        &self.assignments
    }
    /// Readings yielded so far.
    pub fn emitted(&self) -> u64 {
        self.next
    }
    /// Readings still to come.
    pub fn remaining(&self) -> u64 {
        self.total - self.next
    }

    /// Device time of reading `i` (from 0).
    pub fn time_of(&self, i: u64) -> Timestamp {
        let rate = u128::from(self.spec.rate_per_second.max(1));
        let ms = (u128::from(i) + 1) * 1000;
        let offset = ms.div_ceil(rate);
        self.spec
            .start
            .saturating_add_millis(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    /// Appends every remaining reading due at or before `until`; returns how many.
    pub fn advance(&mut self, until: Timestamp, out: &mut Vec<Record>) -> usize {
        let before = out.len();
        while self.next < self.total && self.time_of(self.next) <= until {
            let r = self.make(self.next);
            self.next += 1;
            out.push(r);
        }
        out.len() - before
    }

    fn make(&mut self, i: u64) -> Record {
        let n = self.ids.len() as u64;
        let p = (i % n) as usize;
        let round = i / n;
        let x = self.rng.next_u64();
        let w = &mut self.state[p];
        let (metric, value) = if round.is_multiple_of(2) {
            let step = (x % 3) as i16 - 1;
            let drift = (w.base_hr - w.hr).signum() * i16::from(x & 0x300 == 0);
            w.hr = (w.hr + step + drift).clamp(w.base_hr - 12, w.base_hr + 25);
            (self.hr, f64::from(w.hr))
        } else {
            if (x >> 16).is_multiple_of(8) {
                let step = ((x >> 20) % 3) as i16 - 1;
                let drift = (w.base_spo2 - w.spo2).signum();
                w.spo2 = (w.spo2 + step + drift).clamp(w.base_spo2 - 2, 100);
            }
            (self.spo2, f64::from(w.spo2))
        };
        let time = self.time_of(i);
        let mut r = Reading::quantity(self.ids[p].clone(), metric, value, time);
        r.source = Source::Simulator;
        Record::Reading(r)
    }
}

impl Iterator for LoadGen {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.next >= self.total {
            return None;
        }
        let r = self.make(self.next);
        self.next += 1;
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ExactSizeIterator for LoadGen {}
