//! A cohort of simulated patients with their devices, driven forward in time.

use crate::error::SimError;
use crate::math::{Rng, Stream, TAU, hash};
use crate::names::{FIRST, LAST};
use crate::patient::{PatientSim, SECOND, SLOTS, Slot, Tick};
use crate::scenario::{Scenario, ScenarioSpec};
use serde::{Deserialize, Serialize};
use vigil_model::{
    Assignment, Device, DeviceId, DeviceKind, Patient, PatientId, Record, Timestamp,
};

/// 1990-01-01T00:00:00Z: the model refuses readings from before it.
const EPOCH_1990_MS: i64 = 631_152_000_000;
/// 9999-12-31T23:59:59Z.
const MAX_TIME_MS: i64 = 253_402_300_799_000;

/// How a [`Cohort`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Fixes everything the simulator draws: the same seed gives the same records.
    pub seed: u64,
    /// Number of patients (`p-0001` ...).
    pub patients: usize,
    /// Simulated time starts here; the first records are one second later.
    pub start: Timestamp,
    /// Local time of the simulated patients, minutes east of UTC: circadian rhythms and
    /// schedules (08:00 blood pressure, ...) follow local time.
    pub utc_offset_minutes: i32,
    /// Share of patients who are diabetic and own a glucose meter (0 to 1).
    pub diabetic_fraction: f64,
    /// Share of patients who own a spot-check pulse oximeter (0 to 1).
    pub oximeter_fraction: f64,
    /// Share of patients with a home motion sensor (0 to 1).
    pub motion_sensor_fraction: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            patients: 10,
            // 2024-01-01T00:00:00Z
            start: Timestamp(1_704_067_200_000),
            utc_offset_minutes: 0,
            diabetic_fraction: 0.4,
            oximeter_fraction: 0.5,
            motion_sensor_fraction: 0.5,
        }
    }
}

impl SimConfig {
    /// A configuration with the default device mix.
    pub fn new(seed: u64, patients: usize, start: Timestamp) -> Self {
        Self {
            seed,
            patients,
            start,
            ..Self::default()
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::InvalidConfig(m));
        if self.patients > 999_999 {
            return bad(format!("{} patients: at most 999999", self.patients));
        }
        if self.start.0 < EPOCH_1990_MS || self.start.0 > MAX_TIME_MS {
            return bad(format!("start {} is outside 1990..9999", self.start.0));
        }
        if !(-18 * 60..=18 * 60).contains(&self.utc_offset_minutes) {
            return bad(format!(
                "UTC offset {} min is outside -18h..+18h",
                self.utc_offset_minutes
            ));
        }
        for (name, f) in [
            ("diabetic_fraction", self.diabetic_fraction),
            ("oximeter_fraction", self.oximeter_fraction),
            ("motion_sensor_fraction", self.motion_sensor_fraction),
        ] {
            if !(0.0..=1.0).contains(&f) {
                return bad(format!("{name} {f} is outside 0..1"));
            }
        }
        Ok(())
    }
}

/// A simulated patient's individual baselines (drawn once from the seed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientProfile {
    pub id: PatientId,
    pub diabetic: bool,
    /// Resting heart rate at a circadian mean, /min.
    pub heart_rate: f64,
    /// Extra heart rate at full exertion (brisk walking), /min.
    pub exertion_hr: f64,
    /// SpO2 awake at rest, %.
    pub spo2: f64,
    /// Respiratory rate, /min.
    pub resp_rate: f64,
    /// Systolic and diastolic pressure, mmHg.
    pub systolic: f64,
    pub diastolic: f64,
    /// Core temperature at its circadian mean, Cel.
    pub temperature: f64,
    /// Body weight, kg (it drifts by about ±0.6 kg over a month).
    pub weight: f64,
    pub(crate) weight_phase: f64,
    /// Mean fasting glucose for diabetics, mg/dL (0 for others).
    pub glucose: f64,
    /// Local hours of going to bed (21.5 to 24) and waking (5.5 to 8).
    pub bedtime_hours: f64,
    pub wake_hours: f64,
    /// Walking cadence, steps/min.
    pub cadence: f64,
    /// Walking bouts started per waking hour.
    pub activity: f64,
}

/// A patient's latent (true) vital signs at the simulator's current time, before
/// measurement noise and quantization.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Vitals {
    pub heart_rate: f64,
    pub spo2: f64,
    pub resp_rate: f64,
    pub systolic: f64,
    pub diastolic: f64,
    pub temperature: f64,
}

/// The text of the id of the patient at `index` (0-based): `p-0001` for 0.
pub(crate) fn patient_id_text(index: usize) -> String {
    format!("p-{:04}", index + 1)
}

/// Whether element `i` belongs to an evenly spread selection of share `f` with a seeded
/// phase: any first `n` elements hold `floor(n f)` or `ceil(n f)` of them, whatever `n` is.
fn selected(i: usize, f: f64, phase: f64) -> bool {
    ((i + 1) as f64 * f + phase).floor() > (i as f64 * f + phase).floor()
}

fn phase(seed: u64, which: u64) -> f64 {
    (hash(&[seed, Stream::Selection as u64, which]) >> 11) as f64 / 9_007_199_254_740_992.0
}

/// Simulated patients and their devices: a deterministic generator of [`Record`]s driven by
/// time.
///
/// Every patient has a wearable (heart rate and SpO2 each second, steps each minute,
/// respiratory rate at observation rounds, battery hourly), a blood-pressure cuff (08:00 and
/// 20:00, with pulse), a weight scale (07:30) and a thermometer (with the rounds); diabetics
/// have a glucose meter (07:00, 12:00, 18:00); some have a spot pulse oximeter (with the
/// rounds) and a home motion sensor. All times are local (see
/// [`SimConfig::utc_offset_minutes`]) with a few minutes of jitter.
///
/// Records carry [`vigil_model::Source::Simulator`], no patient (the hub attributes them by
/// [`Cohort::assignments`]) and device times on whole seconds.
#[derive(Debug, Clone)]
pub struct Cohort {
    config: SimConfig,
    now: Timestamp,
    patients: Vec<Patient>,
    devices: Vec<Device>,
    assignments: Vec<Assignment>,
    sims: Vec<PatientSim>,
}

impl Cohort {
    /// Builds the cohort: patients, their devices, baselines and assignments.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let seed = config.seed;
        let offset_ms = i64::from(config.utc_offset_minutes) * 60 * SECOND;
        let (ph_gluc, ph_ox, ph_motion) = (phase(seed, 1), phase(seed, 2), phase(seed, 3));
        let mut patients = Vec::with_capacity(config.patients);
        let mut devices = Vec::with_capacity(config.patients * 6);
        let mut assignments = Vec::with_capacity(config.patients * 6);
        let mut sims = Vec::with_capacity(config.patients);
        for i in 0..config.patients {
            let id = PatientId::new(patient_id_text(i))?;
            let mut r = Rng::new(hash(&[seed, i as u64, Stream::Profile as u64]));
            let first = FIRST[r.below(FIRST.len() as u64) as usize];
            let last = LAST[r.below(LAST.len() as u64) as usize];
            let birth = format!(
                "{:04}-{:02}-{:02}",
                1938 + r.below(55),
                1 + r.below(12),
                1 + r.below(28)
            );
            patients.push(Patient {
                id: id.clone(),
                name: Some(format!("{first} {last}")),
                birth_date: Some(birth),
            });
            let diabetic = selected(i, config.diabetic_fraction, ph_gluc);
            let has = |slot: Slot| match slot {
                Slot::Gluc => diabetic,
                Slot::Ox => selected(i, config.oximeter_fraction, ph_ox),
                Slot::Motion => selected(i, config.motion_sensor_fraction, ph_motion),
                _ => true,
            };
            let mut ids: [Option<DeviceId>; 7] = Default::default();
            for slot in SLOTS {
                if !has(slot) {
                    continue;
                }
                let dev_id = DeviceId::new(format!("{id}-{}", slot.suffix()))?;
                let serial = hash(&[seed, i as u64, slot as u64, 0x5e71a1]);
                devices.push(Device {
                    id: dev_id.clone(),
                    kind: slot.kind(),
                    serial: Some(format!(
                        "VS{}-{:010}",
                        slot.suffix().to_ascii_uppercase(),
                        serial % 10_000_000_000
                    )),
                    mac: None,
                    eui64: None,
                    manufacturer: Some("Vigil Sim".to_owned()),
                    model: Some(slot.model().to_owned()),
                    gateway: None,
                });
                assignments.push(Assignment {
                    device: dev_id.clone(),
                    patient: id.clone(),
                    from: config.start,
                    to: None,
                });
                ids[slot as usize] = Some(dev_id);
            }
            let systolic = r.normal_clamped(126.0, 12.0, 100.0, 165.0);
            let bedtime_hours = r.normal_clamped(22.75, 0.5, 21.5, 23.95);
            let profile = PatientProfile {
                id,
                diabetic,
                heart_rate: r.normal_clamped(70.0, 7.0, 58.0, 88.0),
                exertion_hr: r.uniform(22.0, 38.0),
                spo2: r.normal_clamped(97.6, 0.7, 96.0, 99.0),
                resp_rate: r.normal_clamped(15.0, 1.5, 12.0, 18.0),
                systolic,
                diastolic: (systolic * 0.62 + r.normal_clamped(0.0, 4.0, -8.0, 8.0))
                    .clamp(60.0, 100.0),
                temperature: r.normal_clamped(36.75, 0.15, 36.4, 37.1),
                weight: r.normal_clamped(78.0, 14.0, 45.0, 140.0),
                weight_phase: r.uniform(0.0, TAU),
                glucose: if diabetic {
                    r.normal_clamped(135.0, 18.0, 100.0, 180.0)
                } else {
                    let _ = r.normal();
                    0.0
                },
                bedtime_hours,
                wake_hours: r.normal_clamped(6.75, 0.4, 5.5, 8.0),
                cadence: r.uniform(80.0, 110.0),
                activity: r.uniform(0.4, 1.5),
            };
            sims.push(PatientSim::new(
                seed,
                i,
                profile,
                ids,
                config.start.0,
                offset_ms,
            ));
        }
        Ok(Self {
            now: config.start,
            config,
            patients,
            devices,
            assignments,
            sims,
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The simulated time up to which records have been produced.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn patients(&self) -> &[Patient] {
        &self.patients
    }

    /// Every device of every patient.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Each device to its patient, from the cohort's start, open-ended.
    pub fn assignments(&self) -> &[Assignment] {
        &self.assignments
    }

    /// A patient's baselines.
    pub fn profile(&self, patient_index: usize) -> Option<&PatientProfile> {
        self.sims.get(patient_index).map(|s| &s.profile)
    }

    /// The index of a patient id.
    pub fn patient_index(&self, id: &PatientId) -> Option<usize> {
        self.patients.iter().position(|p| &p.id == id)
    }

    /// The patient's device of a kind, if it has one.
    pub fn device_of(&self, patient_index: usize, kind: DeviceKind) -> Option<&DeviceId> {
        let slot = Slot::of_kind(kind)?;
        self.sims.get(patient_index)?.ids[slot as usize].as_ref()
    }

    /// A patient's latent vital signs at [`Cohort::now`]'s last whole second.
    pub fn vitals(&self, patient_index: usize) -> Option<Vitals> {
        self.sims.get(patient_index).map(|s| s.vitals)
    }

    /// Starts `scenario` for the patient at `at`, rounded up to a whole second; a time not
    /// after [`Cohort::now`] starts it at the next second. Returns the effective start.
    pub fn inject(
        &mut self,
        patient_index: usize,
        scenario: Scenario,
        at: Timestamp,
    ) -> Result<Timestamp, SimError> {
        scenario.validate()?;
        let first_tick = (self.now.0.div_euclid(SECOND) + 1) * SECOND;
        let sim = self
            .sims
            .get_mut(patient_index)
            .ok_or_else(|| SimError::NoSuchPatient(format!("#{patient_index}")))?;
        let missing = |kind: DeviceKind| SimError::MissingDevice {
            patient: sim.profile.id.clone(),
            kind,
        };
        match &scenario {
            Scenario::Hypoglycaemia { .. } if !sim.has(Slot::Gluc) => {
                return Err(missing(DeviceKind::GlucoseMeter));
            }
            Scenario::BatteryDeath { device, .. } => {
                let slot = Slot::of_kind(*device).ok_or_else(|| missing(*device))?;
                if !sim.has(slot) {
                    return Err(missing(*device));
                }
                if sim.dying(slot) {
                    return Err(SimError::InvalidScenario(format!(
                        "the {device:?} of {} is already failing",
                        sim.profile.id
                    )));
                }
            }
            _ => {}
        }
        if at.0 > MAX_TIME_MS {
            return Err(SimError::InvalidScenario(format!(
                "start {} is after the year 9999",
                at.0
            )));
        }
        let ceil = at.0.div_euclid(SECOND) * SECOND
            + if at.0.rem_euclid(SECOND) > 0 {
                SECOND
            } else {
                0
            };
        let start = ceil.max(first_tick);
        sim.inject(scenario, start);
        Ok(Timestamp(start))
    }

    /// Injects a parsed [`ScenarioSpec`]; relative times count from the cohort's start.
    pub fn inject_spec(&mut self, spec: &ScenarioSpec) -> Result<Timestamp, SimError> {
        let index = self
            .patient_index(&spec.patient)
            .ok_or_else(|| SimError::NoSuchPatient(spec.patient.to_string()))?;
        let at = spec.at.resolve(self.config.start, self.now);
        self.inject(index, spec.scenario.clone(), at)
    }

    /// Appends every record whose device time is in `(now, until]`, in time order (records
    /// of the same second ordered by patient, then in a fixed order per patient), and moves
    /// `now` to `until`.
    ///
    /// The output depends only on the seed, the configuration and the injected scenarios:
    /// one call up to `T` and many smaller calls up to `T` append the same records.
    pub fn advance(&mut self, until: Timestamp, out: &mut Vec<Record>) {
        if until <= self.now {
            return;
        }
        let offset_ms = i64::from(self.config.utc_offset_minutes) * 60 * SECOND;
        let mut t = (self.now.0.div_euclid(SECOND) + 1) * SECOND;
        let last = until.0.div_euclid(SECOND) * SECOND;
        if last >= t {
            let seconds = ((last - t) / SECOND + 1) as usize;
            out.reserve(seconds.saturating_mul(self.sims.len() * 2).min(1 << 20));
        }
        while t <= last {
            let tick = Tick::new(t, offset_ms);
            for sim in &mut self.sims {
                sim.step(&tick, out);
            }
            t += SECOND;
        }
        self.now = until;
    }
}
