//! One simulated patient: latent physiology, activity, schedules, scenarios and the records
//! their devices emit.

use crate::cohort::{PatientProfile, Vitals};
use crate::math::{Rng, Stream, TAU, exp, hash, sin};
use crate::names::ROOMS;
use crate::scenario::Scenario;
use std::sync::LazyLock;
use vigil_model::{
    Component, DeviceId, DeviceKind, Event, EventKind, Flags, Metric, Reading, Record, Source,
};

pub(crate) const SECOND: i64 = 1000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
pub(crate) const HOUR: i64 = 60 * MINUTE;
pub(crate) const DAY: i64 = 24 * HOUR;

/// The metrics the simulator emits, looked up once.
pub(crate) struct Metrics {
    pub hr: Metric,
    pub spo2: Metric,
    pub rr: Metric,
    pub temp: Metric,
    pub bp: Metric,
    pub sbp: Metric,
    pub dbp: Metric,
    pub map: Metric,
    pub glucose: Metric,
    pub weight: Metric,
    pub steps: Metric,
}

fn metric(code: &str) -> Metric {
    // The codes below are constants checked by this crate's tests against the registry that
    // is compiled into vigil-model; a failure is a build defect, not an input error.
    #[allow(clippy::expect_used)]
    code.parse().expect("metric in the registry")
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    hr: metric("8867-4"),
    spo2: metric("59408-5"),
    rr: metric("9279-1"),
    temp: metric("8310-5"),
    bp: metric("85354-9"),
    sbp: metric("8480-6"),
    dbp: metric("8462-4"),
    map: metric("8478-0"),
    glucose: metric("2339-0"),
    weight: metric("29463-7"),
    steps: metric("55423-8"),
});

/// A patient's devices, by slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Wear = 0,
    Bp = 1,
    Scale = 2,
    Temp = 3,
    Gluc = 4,
    Ox = 5,
    Motion = 6,
}

pub(crate) const SLOTS: [Slot; 7] = [
    Slot::Wear,
    Slot::Bp,
    Slot::Scale,
    Slot::Temp,
    Slot::Gluc,
    Slot::Ox,
    Slot::Motion,
];

impl Slot {
    pub(crate) fn kind(self) -> DeviceKind {
        match self {
            Self::Wear => DeviceKind::Wearable,
            Self::Bp => DeviceKind::BloodPressureMonitor,
            Self::Scale => DeviceKind::WeightScale,
            Self::Temp => DeviceKind::Thermometer,
            Self::Gluc => DeviceKind::GlucoseMeter,
            Self::Ox => DeviceKind::PulseOximeter,
            Self::Motion => DeviceKind::MotionSensor,
        }
    }
    pub(crate) fn of_kind(kind: DeviceKind) -> Option<Self> {
        SLOTS.into_iter().find(|s| s.kind() == kind)
    }
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::Wear => "wear",
            Self::Bp => "bp",
            Self::Scale => "scale",
            Self::Temp => "temp",
            Self::Gluc => "gluc",
            Self::Ox => "ox",
            Self::Motion => "motion",
        }
    }
    pub(crate) fn model(self) -> &'static str {
        match self {
            Self::Wear => "Vigil Sim Band 2",
            Self::Bp => "Vigil Sim Cuff BP-20",
            Self::Scale => "Vigil Sim Scale WS-1",
            Self::Temp => "Vigil Sim Thermo T-3",
            Self::Gluc => "Vigil Sim Glucose G-5",
            Self::Ox => "Vigil Sim Oximeter PO-4",
            Self::Motion => "Vigil Sim Motion M-1",
        }
    }
}

/// Constants of one second of simulated time, shared by every patient.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick {
    /// Milliseconds since the epoch (a whole second).
    pub t: i64,
    /// Local day number (days since the epoch in local time).
    pub day: i64,
    /// Second of the local day.
    pub sod: i64,
    /// Circadian factor peaking at 16:00 and lowest at 04:00 (HR, BP, RR).
    pub circ: f64,
    /// Circadian factor peaking at 17:00 and lowest at 05:00 (temperature).
    pub circ_temp: f64,
    /// Index of this tick within its minute interval `(m, m + 60 s]`, 0..60.
    pub sec_in_minute: i64,
}

impl Tick {
    pub(crate) fn new(t: i64, offset_ms: i64) -> Self {
        let local = t + offset_ms;
        let day = local.div_euclid(DAY);
        let sod = local.rem_euclid(DAY) / SECOND;
        let hour = sod as f64 / 3600.0;
        Self {
            t,
            day,
            sod,
            circ: crate::math::cos(TAU * (hour - 16.0) / 24.0),
            circ_temp: crate::math::cos(TAU * (hour - 17.0) / 24.0),
            sec_in_minute: (t / SECOND - 1).rem_euclid(60),
        }
    }
}

/// What the patient is doing during one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Asleep,
    Rest,
    Potter,
    Walk,
}

#[derive(Debug, Clone, Copy)]
struct MinutePlan {
    mode: Mode,
    /// Minutes the current walking bout has lasted before this one.
    bout: u32,
    night_trip: bool,
    steps: u32,
    /// Steps already counted in this minute.
    counted: u32,
    exertion: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpotKind {
    Bp,
    Rr,
    OxSpot,
    Temp,
    Weight,
    Glucose,
}

#[derive(Debug, Clone, Copy)]
struct Spot {
    t: i64,
    seq: u64,
    kind: SpotKind,
}

#[derive(Debug, Clone, Copy)]
struct Death {
    start: i64,
    end: i64,
    from: f64,
}

#[derive(Debug, Clone)]
struct Active {
    scenario: Scenario,
    start: i64,
    /// Last instant at which the scenario still has an effect (`i64::MAX` for sepsis).
    until: i64,
    duration: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Effects {
    hr: f64,
    sepsis: f64,
    desat: f64,
    nadir: f64,
    hypo: bool,
    block: bool,
}

/// Ornstein-Uhlenbeck channels: (stationary standard deviation, time constant in s).
const OU: [(f64, f64); 7] = [
    (1.0, 1200.0),  // shared arousal
    (2.5, 120.0),   // heart rate, /min
    (0.5, 300.0),   // SpO2, %
    (0.8, 600.0),   // respiratory rate, /min
    (5.0, 1800.0),  // systolic, mmHg
    (3.5, 1800.0),  // diastolic, mmHg
    (0.12, 5400.0), // temperature, Cel
];

#[derive(Debug, Clone)]
pub(crate) struct PatientSim {
    pub(crate) index: usize,
    pub(crate) profile: PatientProfile,
    pub(crate) ids: [Option<DeviceId>; 7],
    seed: u64,
    start: i64,
    offset_ms: i64,
    ou_a: [f64; 7],
    ou_b: [f64; 7],
    k_ex: f64,
    k_sleep: f64,
    phys: Rng,
    meas: Rng,
    act: Rng,
    ou: [f64; 7],
    exertion: f64,
    sleep: f64,
    minute: MinutePlan,
    pub(crate) vitals: Vitals,
    day: Option<i64>,
    pending: Vec<Spot>,
    seq: u64,
    active: Vec<Active>,
    deaths: [Option<Death>; 7],
    static_battery: [f64; 7],
    wear_battery0: f64,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl PatientSim {
    pub(crate) fn new(
        seed: u64,
        index: usize,
        profile: PatientProfile,
        ids: [Option<DeviceId>; 7],
        start: i64,
        offset_ms: i64,
    ) -> Self {
        let key = |s: Stream| hash(&[seed, index as u64, s as u64]);
        let mut phys = Rng::new(key(Stream::Physiology));
        let mut ou_a = [0.0; 7];
        let mut ou_b = [0.0; 7];
        let mut ou = [0.0; 7];
        for (i, &(sd, tau)) in OU.iter().enumerate() {
            let a = exp(-1.0 / tau);
            ou_a[i] = a;
            ou_b[i] = sd * (1.0 - a * a).sqrt();
            ou[i] = sd * phys.normal();
        }
        let mut daily = Rng::new(key(Stream::Daily));
        let mut static_battery = [0.0; 7];
        for b in &mut static_battery {
            *b = daily.uniform(55.0, 95.0).round();
        }
        let wear_battery0 = daily.uniform(75.0, 100.0).round();
        let mut sim = Self {
            index,
            profile,
            ids,
            seed,
            start,
            offset_ms,
            ou_a,
            ou_b,
            k_ex: 1.0 - exp(-1.0 / 90.0),
            k_sleep: 1.0 - exp(-1.0 / 900.0),
            phys,
            meas: Rng::new(key(Stream::Measurement)),
            act: Rng::new(key(Stream::Activity)),
            ou,
            exertion: 0.0,
            sleep: 0.0,
            minute: MinutePlan {
                mode: Mode::Rest,
                bout: 0,
                night_trip: false,
                steps: 0,
                counted: 0,
                exertion: 0.0,
            },
            vitals: Vitals::default(),
            day: None,
            pending: Vec::new(),
            seq: 0,
            active: Vec::new(),
            deaths: [None; 7],
            static_battery,
            wear_battery0,
        };
        let tick = Tick::new(start, offset_ms);
        let asleep = sim.is_asleep(tick.sod);
        sim.sleep = if asleep { 1.0 } else { 0.0 };
        sim.minute.mode = if asleep { Mode::Asleep } else { Mode::Rest };
        let _ = sim.plan_minute(&tick, &Effects::default());
        sim.exertion = sim.minute.exertion;
        sim.vitals = sim.compute_vitals(&tick, &Effects::default());
        sim
    }

    pub(crate) fn has(&self, slot: Slot) -> bool {
        self.ids[slot as usize].is_some()
    }

    fn is_asleep(&self, sod: i64) -> bool {
        let h = sod as f64 / 3600.0;
        h >= self.profile.bedtime_hours || h < self.profile.wake_hours
    }

    fn local_midnight(&self, day: i64) -> i64 {
        day * DAY - self.offset_ms
    }

    /// Battery percentage of a device at `t` (before any death, for the wearable: a daily
    /// charge at 07:00 local and 2 %/h drain).
    pub(crate) fn battery(&self, slot: Slot, t: i64) -> f64 {
        if let Some(d) = self.deaths[slot as usize]
            && t >= d.start
        {
            let x = ((t - d.start) as f64 / (d.end - d.start) as f64).min(1.0);
            return d.from + (5.0 - d.from) * x;
        }
        if slot != Slot::Wear {
            return self.static_battery[slot as usize];
        }
        let local = t + self.offset_ms;
        let day = local.div_euclid(DAY);
        let mut charge = self.local_midnight(day) + 7 * HOUR;
        if charge > t {
            charge -= DAY;
        }
        let level = if charge > self.start {
            100.0 - 2.0 * (t - charge) as f64 / HOUR as f64
        } else {
            self.wear_battery0 - 2.0 * (t - self.start) as f64 / HOUR as f64
        };
        level.clamp(5.0, 100.0)
    }

    fn alive(&self, slot: Slot, t: i64) -> bool {
        self.has(slot) && self.deaths[slot as usize].is_none_or(|d| t <= d.end)
    }

    fn flags(&self, slot: Slot, t: i64) -> Flags {
        if self.battery(slot, t) < 15.0 {
            Flags::LOW_BATTERY
        } else {
            Flags::empty()
        }
    }

    fn id(&self, slot: Slot) -> Option<&DeviceId> {
        self.ids[slot as usize].as_ref()
    }

    fn push_reading(&self, out: &mut Vec<Record>, slot: Slot, mut r: Reading) {
        r.source = Source::Simulator;
        r.flags = self.flags(slot, r.time.0);
        out.push(Record::Reading(r));
    }

    fn quantity(&self, out: &mut Vec<Record>, slot: Slot, t: i64, metric: Metric, value: f64) {
        if !self.alive(slot, t) {
            return;
        }
        if let Some(id) = self.id(slot) {
            let r = Reading::quantity(id.clone(), metric, value, vigil_model::Timestamp(t));
            self.push_reading(out, slot, r);
        }
    }

    fn event(&self, out: &mut Vec<Record>, slot: Slot, t: i64, kind: EventKind) {
        if !self.alive(slot, t) {
            return;
        }
        if let Some(id) = self.id(slot) {
            out.push(Record::Event(Event {
                device: id.clone(),
                time: vigil_model::Timestamp(t),
                received: None,
                kind,
                source: Source::Simulator,
                patient: None,
            }));
        }
    }

    fn push_spot(&mut self, t: i64, kind: SpotKind) {
        let seq = self.seq;
        self.seq += 1;
        let at = self.pending.partition_point(|s| (s.t, s.seq) <= (t, seq));
        self.pending.insert(at, Spot { t, seq, kind });
    }

    /// Adds a scenario starting at the whole second `start` (already validated and checked
    /// against the patient's devices).
    pub(crate) fn inject(&mut self, scenario: Scenario, start: i64) {
        let duration = i64::try_from(scenario.duration().as_millis()).unwrap_or(i64::MAX / 4);
        let until = match &scenario {
            Scenario::Sepsis { .. } => i64::MAX,
            Scenario::Fall { .. } => start + duration.max(30 * MINUTE),
            _ => start.saturating_add(duration),
        };
        match &scenario {
            Scenario::Hypoglycaemia { .. } => {
                self.push_spot(start + 5 * MINUTE, SpotKind::Glucose);
                self.push_spot(start + 20 * MINUTE, SpotKind::Glucose);
            }
            Scenario::BatteryDeath { device, .. } => {
                if let Some(slot) = Slot::of_kind(*device) {
                    let from = self.battery(slot, start).max(6.0);
                    self.deaths[slot as usize] = Some(Death {
                        start,
                        end: start.saturating_add(duration),
                        from,
                    });
                }
                return;
            }
            _ => {}
        }
        self.active.push(Active {
            scenario,
            start,
            until,
            duration,
        });
    }

    /// Whether a battery death is already scheduled for the slot.
    pub(crate) fn dying(&self, slot: Slot) -> bool {
        self.deaths[slot as usize].is_some()
    }

    fn effects(&self, t: i64) -> Effects {
        let mut e = Effects::default();
        for a in &self.active {
            if t < a.start || t > a.until {
                continue;
            }
            let x = t - a.start;
            match &a.scenario {
                Scenario::Sepsis { .. } => {
                    let f = (x as f64 / (0.8 * a.duration as f64)).min(1.0);
                    e.sepsis = e.sepsis.max(f * f.sqrt());
                }
                Scenario::Desaturation { nadir, .. } => {
                    let ramp = (90 * SECOND).min(a.duration / 3).max(1) as f64;
                    let xf = x as f64;
                    let w = (xf / ramp)
                        .min((a.duration - x) as f64 / ramp)
                        .clamp(0.0, 1.0);
                    if w > e.desat {
                        e.desat = w;
                        e.nadir = *nadir;
                    }
                }
                Scenario::Hypoglycaemia { .. } => {
                    e.hypo = true;
                    if x < 30 * MINUTE {
                        e.hr += 10.0;
                    }
                }
                Scenario::Fall { down } => {
                    if x < 30 * MINUTE {
                        e.hr += 35.0 * exp(-(x as f64) / 180_000.0);
                    }
                    if (x as u128) < down.as_millis() {
                        e.block = true;
                    }
                }
                Scenario::Inactivity { .. } => e.block = true,
                Scenario::BatteryDeath { .. } => {}
            }
        }
        e
    }

    /// Decides the activity of the minute that starts at `tick`; returns the room of a
    /// motion event when the patient moves into view of the motion sensor.
    fn plan_minute(&mut self, tick: &Tick, e: &Effects) -> Option<&'static str> {
        // Always draw the same number of values, so scenarios never shift the stream.
        let u = [
            self.act.f64(),
            self.act.f64(),
            self.act.f64(),
            self.act.f64(),
        ];
        let asleep = self.is_asleep(tick.sod);
        let scale = 1.0 - 0.8 * e.sepsis;
        let prev = self.minute;
        let (mut mode, mut bout, mut night) = if asleep {
            if prev.mode == Mode::Walk && prev.night_trip && prev.bout < 1 {
                (Mode::Walk, prev.bout + 1, true)
            } else if u[0] < 0.003 * scale {
                (Mode::Walk, 0, true)
            } else {
                (Mode::Asleep, 0, false)
            }
        } else if prev.mode == Mode::Walk && !prev.night_trip && u[0] < 0.8 {
            (Mode::Walk, prev.bout + 1, false)
        } else if u[0] < self.profile.activity / 60.0 * scale {
            (Mode::Walk, 0, false)
        } else if u[1] < 0.35 * scale {
            (Mode::Potter, 0, false)
        } else {
            (Mode::Rest, 0, false)
        };
        if e.block {
            mode = if asleep { Mode::Asleep } else { Mode::Rest };
            bout = 0;
            night = false;
        }
        let (steps, exertion) = match mode {
            Mode::Walk if night => (
                (self.profile.cadence * 0.5 * (0.7 + 0.3 * u[2])).round(),
                0.4,
            ),
            Mode::Walk => (
                (self.profile.cadence * (0.7 + 0.3 * u[2])).round(),
                0.8 + 0.2 * u[3],
            ),
            Mode::Potter => ((u[2] * 25.0).floor(), 0.25),
            Mode::Rest => (0.0, 0.05),
            Mode::Asleep => (0.0, 0.0),
        };
        self.minute = MinutePlan {
            mode,
            bout,
            night_trip: night,
            steps: steps as u32,
            counted: 0,
            exertion,
        };
        let room = ROOMS[((u[3] * ROOMS.len() as f64) as usize).min(ROOMS.len() - 1)];
        match mode {
            Mode::Walk if night => (bout == 0).then_some("bathroom"),
            Mode::Walk => (bout % 5 == 0).then_some(room),
            Mode::Potter => (u[3] < 0.1).then_some(room),
            _ => None,
        }
    }

    fn compute_vitals(&self, tick: &Tick, e: &Effects) -> Vitals {
        let p = &self.profile;
        let (ex, sl, c) = (self.exertion, self.sleep, tick.circ);
        let mut hr = p.heart_rate + 5.0 * c - 7.0 * sl + p.exertion_hr * ex + e.hr;
        let mut rr = p.resp_rate + 0.7 * c - 1.5 * sl + 6.0 * ex;
        let mut sbp = p.systolic + 6.0 * c - 10.0 * sl + 12.0 * ex;
        let mut dbp = p.diastolic + 4.0 * c - 7.0 * sl + 4.0 * ex;
        let mut temp = p.temperature + 0.25 * tick.circ_temp + 0.1 * ex;
        let mut spo2 = p.spo2 - 0.7 * sl;
        let s = e.sepsis;
        if s > 0.0 {
            hr += s * (124.0 - hr).max(38.0);
            rr += s * (28.0 - rr).max(12.0);
            temp += s * (39.3 - temp).max(2.0);
            sbp -= s * (sbp - 88.0).max(30.0);
            dbp -= s * (dbp - 52.0).max(18.0);
            spo2 -= s * (spo2 - 89.0).max(6.0);
        }
        if e.desat > 0.0 {
            spo2 += e.desat * (e.nadir - spo2);
            hr += 8.0 * e.desat;
        }
        let [arousal, n_hr, n_spo2, n_rr, n_sbp, n_dbp, n_temp] = self.ou;
        // Heart rate varies less in sleep, and a healthy heart rarely dips far below 45.
        let calm = 1.0 - 0.5 * sl;
        let mut hr = hr + calm * (2.5 * arousal + n_hr);
        if hr < 45.0 {
            hr = 45.0 - 0.5 * (45.0 - hr);
        }
        Vitals {
            heart_rate: hr.clamp(30.0, 220.0),
            spo2: (spo2 + n_spo2).clamp(60.0, 100.0),
            resp_rate: (rr + 0.8 * arousal + n_rr).clamp(4.0, 60.0),
            systolic: (sbp + 4.0 * arousal + n_sbp).clamp(60.0, 250.0),
            diastolic: (dbp + 2.5 * arousal + n_dbp).clamp(30.0, 150.0),
            temperature: (temp + n_temp).clamp(33.0, 42.5),
        }
    }

    fn schedule_day(&mut self, day: i64, now: i64) {
        let mut r = Rng::new(hash(&[
            self.seed,
            self.index as u64,
            Stream::Schedule as u64,
            day as u64,
        ]));
        let midnight = self.local_midnight(day);
        let at = |sod_s: f64| midnight + (sod_s.round() as i64) * SECOND;
        let mut items: Vec<(i64, SpotKind)> = Vec::with_capacity(16);
        for centre in [8.0 * 3600.0, 20.0 * 3600.0] {
            let round = centre + r.normal_clamped(0.0, 900.0, -2700.0, 2700.0);
            let rr = round + r.uniform(30.0, 90.0);
            let ox = round + r.uniform(60.0, 150.0);
            let temp = round + r.uniform(120.0, 300.0);
            items.push((at(round), SpotKind::Bp));
            items.push((at(rr), SpotKind::Rr));
            if self.has(Slot::Ox) {
                items.push((at(ox), SpotKind::OxSpot));
            }
            items.push((at(temp), SpotKind::Temp));
        }
        let weight = 7.5 * 3600.0 + r.normal_clamped(0.0, 600.0, -1800.0, 1800.0);
        items.push((at(weight), SpotKind::Weight));
        for centre in [7.0, 12.0, 18.0] {
            let g = centre * 3600.0 + r.normal_clamped(0.0, 720.0, -2400.0, 2400.0);
            if self.has(Slot::Gluc) {
                items.push((at(g), SpotKind::Glucose));
            }
        }
        items.sort_by_key(|&(t, _)| t);
        for (t, kind) in items {
            if t >= now {
                self.push_spot(t, kind);
            }
        }
    }

    fn measure(&mut self, spot: SpotKind, t: i64, e: &Effects, day: i64, out: &mut Vec<Record>) {
        let m = &*METRICS;
        let v = self.vitals;
        match spot {
            SpotKind::Bp => {
                let (n1, n2, n3) = (self.meas.normal(), self.meas.normal(), self.meas.normal());
                let sys = (v.systolic + 4.0 * n1).round().clamp(50.0, 260.0);
                let dia = (v.diastolic + 3.0 * n2).round().clamp(25.0, sys - 15.0);
                let mean = (dia + (sys - dia) / 3.0).round();
                let pulse = (v.heart_rate + 1.5 * n3).round().clamp(25.0, 250.0);
                if self.alive(Slot::Bp, t)
                    && let Some(id) = self.id(Slot::Bp)
                {
                    let comps = vec![
                        Component {
                            metric: m.sbp,
                            value: sys,
                        },
                        Component {
                            metric: m.dbp,
                            value: dia,
                        },
                        Component {
                            metric: m.map,
                            value: mean,
                        },
                    ];
                    let r = Reading::panel(id.clone(), m.bp, comps, vigil_model::Timestamp(t));
                    self.push_reading(out, Slot::Bp, r);
                }
                self.quantity(out, Slot::Bp, t, m.hr, pulse);
            }
            SpotKind::Rr => {
                let rr = (v.resp_rate + self.meas.normal()).round().clamp(4.0, 60.0);
                self.quantity(out, Slot::Wear, t, m.rr, rr);
            }
            SpotKind::OxSpot => {
                let (n1, n2) = (self.meas.normal(), self.meas.normal());
                let spo2 = (v.spo2 + 0.6 * n1).round().clamp(50.0, 100.0);
                let hr = (v.heart_rate + n2).round().clamp(25.0, 250.0);
                self.quantity(out, Slot::Ox, t, m.spo2, spo2);
                self.quantity(out, Slot::Ox, t, m.hr, hr);
            }
            SpotKind::Temp => {
                let temp = round1(v.temperature + 0.1 * self.meas.normal());
                self.quantity(out, Slot::Temp, t, m.temp, temp);
            }
            SpotKind::Weight => {
                let p = &self.profile;
                let drift = 0.6 * sin(TAU * day as f64 / 28.0 + p.weight_phase);
                let w = round1(p.weight + drift + 0.3 * self.meas.normal()).max(20.0);
                self.quantity(out, Slot::Scale, t, m.weight, w);
            }
            SpotKind::Glucose => {
                let n = self.meas.normal();
                let u = self.meas.f64();
                let p = &self.profile;
                let local_h = (t + self.offset_ms).rem_euclid(DAY) as f64 / HOUR as f64;
                let meal = if local_h < 10.0 {
                    0.0
                } else if local_h < 15.0 {
                    15.0
                } else {
                    10.0
                };
                let g = if e.hypo {
                    (38.0 + 14.0 * u).round()
                } else {
                    (p.glucose + meal + 22.0 * n).round().clamp(75.0, 320.0)
                };
                self.quantity(out, Slot::Gluc, t, m.glucose, g);
            }
        }
    }

    /// Advances the patient to `tick` and appends what its devices emit at that second.
    pub(crate) fn step(&mut self, tick: &Tick, out: &mut Vec<Record>) {
        let t = tick.t;
        let m = &*METRICS;
        let e = self.effects(t);

        // Steps taken during this second, then the minute boundary.
        let plan = self.minute;
        let k = tick.sec_in_minute as u32;
        let due = plan.steps * (k + 1) / 60;
        if !e.block && due > plan.counted {
            self.minute.counted = due;
        }
        if e.block && matches!(plan.mode, Mode::Walk | Mode::Potter) {
            self.minute.mode = Mode::Rest;
            self.minute.exertion = 0.05;
            self.minute.steps = self.minute.counted;
        }
        if k == 59 {
            let steps = f64::from(self.minute.counted);
            self.quantity(out, Slot::Wear, t, m.steps, steps);
            if let Some(room) = self.plan_minute(tick, &e)
                && !e.block
            {
                let location = Some(room.to_owned());
                self.event(out, Slot::Motion, t, EventKind::Motion { location });
            }
        }

        // Latent physiology.
        for i in 0..7 {
            self.ou[i] = self.ou_a[i] * self.ou[i] + self.ou_b[i] * self.phys.normal();
        }
        self.exertion += (self.minute.exertion - self.exertion) * self.k_ex;
        let asleep = if self.minute.mode == Mode::Asleep {
            1.0
        } else {
            0.0
        };
        self.sleep += (asleep - self.sleep) * self.k_sleep;
        self.vitals = self.compute_vitals(tick, &e);

        // Continuous wearable samples.
        let (n1, n2) = (self.meas.normal(), self.meas.normal());
        let v = self.vitals;
        let hr = (v.heart_rate + n1).round().clamp(25.0, 250.0);
        let spo2 = (v.spo2 + 0.5 * n2).round().clamp(50.0, 100.0);
        self.quantity(out, Slot::Wear, t, m.hr, hr);
        self.quantity(out, Slot::Wear, t, m.spo2, spo2);

        // Battery status.
        let wear_dying = self.deaths[Slot::Wear as usize].is_some_and(|d| t >= d.start);
        if t % HOUR == 0 && !wear_dying {
            let percent = self.battery(Slot::Wear, t).round();
            self.event(out, Slot::Wear, t, EventKind::Battery { percent });
        }
        for slot in SLOTS {
            if let Some(d) = self.deaths[slot as usize]
                && t >= d.start
                && t <= d.end
                && ((t - d.start) % (10 * MINUTE) == 0 || t == d.end)
            {
                let percent = self.battery(slot, t).round();
                self.event(out, slot, t, EventKind::Battery { percent });
            }
        }

        // Scenario events and escalated observation rounds.
        let mut rounds = 0;
        for a in &self.active {
            match a.scenario {
                Scenario::Fall { .. } if a.start == t => {
                    let u = (hash(&[
                        self.seed,
                        self.index as u64,
                        Stream::Scenario as u64,
                        t as u64,
                    ]) >> 11) as f64
                        / 9_007_199_254_740_992.0;
                    let confidence = Some(((0.85 + 0.14 * u) * 100.0).round() / 100.0);
                    self.event(out, Slot::Wear, t, EventKind::Fall { confidence });
                }
                Scenario::Sepsis { .. } if t > a.start && (t - a.start) % (30 * MINUTE) == 0 => {
                    rounds += 1;
                }
                _ => {}
            }
        }
        if rounds > 0 {
            self.push_spot(t, SpotKind::Bp);
            self.push_spot(t, SpotKind::Rr);
            if self.has(Slot::Ox) {
                self.push_spot(t + MINUTE, SpotKind::OxSpot);
            }
            self.push_spot(t + 2 * MINUTE, SpotKind::Temp);
        }

        // Scheduled spot checks.
        if self.day != Some(tick.day) {
            self.day = Some(tick.day);
            self.schedule_day(tick.day, t);
        }
        while let Some(&spot) = self.pending.first() {
            if spot.t > t {
                break;
            }
            self.pending.remove(0);
            self.measure(spot.kind, t, &e, tick.day, out);
        }
        self.active.retain(|a| a.until >= t);
    }
}
