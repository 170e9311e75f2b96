//! One simulated day of 20 patients, computed once and examined by several tests: validity
//! of every record, quantization, plausible ranges, schedules and circadian rhythm.

use crate::{HOUR, MINUTE, plus, t0};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use vigil_model::{DeviceKind, Record, Source, Timestamp, validate_record};
use vigil_sim::{Cohort, SimConfig, Vitals};

const PATIENTS: usize = 20;
/// Patients live at UTC+02:00; the day runs from local midnight to local midnight.
const OFFSET_MIN: i32 = 120;

struct DayStats {
    cohort: Cohort,
    start: Timestamp,
    records: usize,
    invalid: Vec<String>,
    out_of_window: usize,
    out_of_order: usize,
    foreign_source: usize,
    /// (device, metric key or event name) -> count.
    counts: BTreeMap<(String, String), usize>,
    /// metric key -> (min, max) over all devices.
    ranges: BTreeMap<String, (f64, f64)>,
    /// metric key -> values that are not quantized as the device would.
    unquantized: BTreeMap<String, usize>,
    /// (patient index, local hour of day) of blood-pressure, weight and glucose readings.
    bp_hours: Vec<(usize, f64)>,
    weight_hours: Vec<(usize, f64)>,
    glucose_hours: Vec<(usize, f64)>,
    /// Per patient and local hour: sum and count of wearable heart rate.
    hr_hourly: Vec<[(f64, f64); 24]>,
    /// Per patient: latent vitals at each local hour mark (index = hour).
    latent: Vec<Vec<Vitals>>,
    systolic_not_above_diastolic: usize,
}

fn local_hour(t: Timestamp) -> f64 {
    let ms = (t.0 + i64::from(OFFSET_MIN) * MINUTE).rem_euclid(24 * HOUR);
    ms as f64 / HOUR as f64
}

static DAY: LazyLock<DayStats> = LazyLock::new(|| {
    // 2024-05-01T00:00:00+02:00
    let start = plus(t0(), -2 * HOUR);
    let config = SimConfig {
        utc_offset_minutes: OFFSET_MIN,
        ..SimConfig::new(2024, PATIENTS, start)
    };
    let mut cohort = Cohort::new(config).expect("cohort");
    let mut s = DayStats {
        cohort: cohort.clone(),
        start,
        records: 0,
        invalid: Vec::new(),
        out_of_window: 0,
        out_of_order: 0,
        foreign_source: 0,
        counts: BTreeMap::new(),
        ranges: BTreeMap::new(),
        unquantized: BTreeMap::new(),
        bp_hours: Vec::new(),
        weight_hours: Vec::new(),
        glucose_hours: Vec::new(),
        hr_hourly: vec![[(0.0, 0.0); 24]; PATIENTS],
        latent: vec![Vec::new(); PATIENTS],
        systolic_not_above_diastolic: 0,
    };
    let patient_of =
        |dev: &str| -> usize { dev[2..6].parse::<usize>().expect("p-NNNN device id") - 1 };
    let mut out = Vec::new();
    let mut last = Timestamp(i64::MIN);
    for h in 0..24 {
        out.clear();
        let from = cohort.now();
        cohort.advance(plus(start, (h + 1) * HOUR), &mut out);
        let until = cohort.now();
        for i in 0..PATIENTS {
            s.latent[i].push(cohort.vitals(i).expect("vitals"));
        }
        s.records += out.len();
        for r in &out {
            if let Err(e) = validate_record(r, until, 0) {
                s.invalid.push(format!("{r:?}: {e}"));
            }
            let t = r.time();
            if t <= from || t > until {
                s.out_of_window += 1;
            }
            if t < last {
                s.out_of_order += 1;
            }
            last = t;
            let dev = r.device().as_str().to_owned();
            let p = patient_of(&dev);
            match r {
                Record::Event(e) => {
                    if e.source != Source::Simulator || e.patient.is_some() {
                        s.foreign_source += 1;
                    }
                    *s.counts.entry((dev, e.kind.name().to_owned())).or_default() += 1;
                    if let vigil_model::EventKind::Battery { percent } = e.kind {
                        let r = s
                            .ranges
                            .entry("battery".into())
                            .or_insert((f64::MAX, f64::MIN));
                        *r = (r.0.min(percent), r.1.max(percent));
                    }
                }
                Record::Reading(x) => {
                    if x.source != Source::Simulator || x.patient.is_some() {
                        s.foreign_source += 1;
                    }
                    let key = x.metric.key();
                    let hour = local_hour(t);
                    match key {
                        "bp" => s.bp_hours.push((p, hour)),
                        "body-weight" => s.weight_hours.push((p, hour)),
                        "glucose" => s.glucose_hours.push((p, hour)),
                        "heart-rate" if dev.ends_with("-wear") => {
                            let cell = &mut s.hr_hourly[p][hour as usize];
                            cell.0 += x.value.unwrap_or(0.0);
                            cell.1 += 1.0;
                        }
                        _ => {}
                    }
                    *s.counts.entry((dev, key.to_owned())).or_default() += 1;
                    let values: Vec<(String, f64)> = match x.value {
                        Some(v) => vec![(key.to_owned(), v)],
                        None => x
                            .components
                            .iter()
                            .map(|c| (c.metric.key().to_owned(), c.value))
                            .collect(),
                    };
                    if let (Some(sys), Some(dia)) = (
                        x.value_of(crate::metric("8480-6")),
                        x.value_of(crate::metric("8462-4")),
                    ) && sys <= dia
                    {
                        s.systolic_not_above_diastolic += 1;
                    }
                    for (k, v) in values {
                        let step = match k.as_str() {
                            "body-temp" | "body-weight" => 0.1,
                            _ => 1.0,
                        };
                        if ((v / step).round() * step - v).abs() > 1e-9 {
                            *s.unquantized.entry(k.clone()).or_default() += 1;
                        }
                        let r = s.ranges.entry(k).or_insert((f64::MAX, f64::MIN));
                        *r = (r.0.min(v), r.1.max(v));
                    }
                }
            }
        }
    }
    s
});

fn count(dev: &str, what: &str) -> usize {
    DAY.counts
        .get(&(dev.to_owned(), what.to_owned()))
        .copied()
        .unwrap_or(0)
}

#[test]
fn every_record_of_a_day_of_twenty_patients_is_valid_and_in_time_order() {
    let d = &*DAY;
    assert!(d.records > 20 * 2 * 86_400, "{} records", d.records);
    assert!(
        d.invalid.is_empty(),
        "{:#?}",
        &d.invalid[..d.invalid.len().min(5)]
    );
    assert_eq!(d.out_of_window, 0, "records outside (last, until]");
    assert_eq!(d.out_of_order, 0, "records out of time order");
    assert_eq!(d.foreign_source, 0, "records not marked as simulated");
    assert_eq!(d.systolic_not_above_diastolic, 0);
}

#[test]
fn values_are_quantized_as_devices_report_them() {
    assert!(DAY.unquantized.is_empty(), "{:?}", DAY.unquantized);
}

#[test]
fn healthy_values_stay_in_physiologically_plausible_ranges() {
    let expect = [
        ("heart-rate", 38.0, 170.0),
        ("spo2", 90.0, 100.0),
        ("resp-rate", 8.0, 26.0),
        ("body-temp", 35.5, 38.0),
        ("bp-systolic", 80.0, 200.0),
        ("bp-diastolic", 40.0, 125.0),
        ("bp-mean", 55.0, 150.0),
        ("body-weight", 40.0, 150.0),
        ("glucose", 70.0, 330.0),
        ("steps", 0.0, 130.0),
        ("battery", 5.0, 100.0),
    ];
    for (key, lo, hi) in expect {
        let (min, max) = DAY.ranges.get(key).copied().unwrap_or((f64::NAN, f64::NAN));
        assert!(
            min >= lo && max <= hi,
            "{key}: {min}..={max} not within {lo}..={hi}"
        );
    }
    // Something happens: people walk, and their steps are counted.
    assert!(DAY.ranges["steps"].1 >= 60.0);
}

#[test]
fn devices_report_on_their_schedules() {
    let c = &DAY.cohort;
    let mut diabetics = 0;
    for (i, p) in c.patients().iter().enumerate() {
        let id = p.id.as_str();
        let dev = |suffix: &str| format!("{id}-{suffix}");
        assert_eq!(count(&dev("wear"), "heart-rate"), 86_400, "{id}");
        assert_eq!(count(&dev("wear"), "spo2"), 86_400, "{id}");
        assert_eq!(count(&dev("wear"), "steps"), 1440, "{id}");
        assert_eq!(count(&dev("wear"), "resp-rate"), 2, "{id}");
        assert_eq!(count(&dev("wear"), "battery"), 24, "{id}");
        assert_eq!(count(&dev("bp"), "bp"), 2, "{id}");
        assert_eq!(count(&dev("bp"), "heart-rate"), 2, "{id}");
        assert_eq!(count(&dev("temp"), "body-temp"), 2, "{id}");
        assert_eq!(count(&dev("scale"), "body-weight"), 1, "{id}");
        let diabetic = c.profile(i).expect("profile").diabetic;
        diabetics += usize::from(diabetic);
        assert_eq!(
            c.device_of(i, DeviceKind::GlucoseMeter).is_some(),
            diabetic,
            "{id}"
        );
        assert_eq!(count(&dev("gluc"), "glucose"), if diabetic { 3 } else { 0 });
        let ox = if c.device_of(i, DeviceKind::PulseOximeter).is_some() {
            2
        } else {
            0
        };
        assert_eq!(count(&dev("ox"), "spo2"), ox, "{id}");
    }
    assert_eq!(diabetics, 8, "40 % of 20 patients are diabetic");
    let in_window = |hours: &[(usize, f64)], centres: &[f64], tol: f64| {
        hours
            .iter()
            .all(|&(_, h)| centres.iter().any(|c| (h - c).abs() <= tol))
    };
    assert!(
        in_window(&DAY.bp_hours, &[8.0, 20.0], 0.75),
        "{:?}",
        DAY.bp_hours
    );
    assert!(in_window(&DAY.weight_hours, &[7.5], 0.5));
    assert!(in_window(&DAY.glucose_hours, &[7.0, 12.0, 18.0], 0.67));
    // One blood pressure in the morning and one in the evening, per patient.
    for i in 0..PATIENTS {
        let am = DAY
            .bp_hours
            .iter()
            .filter(|&&(p, h)| p == i && h < 12.0)
            .count();
        let pm = DAY
            .bp_hours
            .iter()
            .filter(|&&(p, h)| p == i && h >= 12.0)
            .count();
        assert_eq!((am, pm), (1, 1), "patient {i}");
    }
}

#[test]
fn devices_and_assignments_describe_the_cohort() {
    let c = &DAY.cohort;
    assert_eq!(c.patients().len(), PATIENTS);
    assert_eq!(c.patients()[0].id.as_str(), "p-0001");
    assert_eq!(c.patients()[19].id.as_str(), "p-0020");
    assert!(
        c.patients()
            .iter()
            .all(|p| p.name.is_some() && p.birth_date.is_some())
    );
    assert_eq!(c.assignments().len(), c.devices().len());
    for d in c.devices() {
        assert_eq!(d.manufacturer.as_deref(), Some("Vigil Sim"));
        assert!(d.serial.is_some() && d.model.is_some());
        let a = c
            .assignments()
            .iter()
            .find(|a| a.device == d.id)
            .expect("assigned");
        assert!(d.id.as_str().starts_with(a.patient.as_str()));
        assert_eq!((a.from, a.to), (DAY.start, None));
    }
    assert_eq!(
        c.device_of(0, DeviceKind::Wearable).map(|d| d.as_str()),
        Some("p-0001-wear")
    );
    assert_eq!(c.device_of(0, DeviceKind::SmartBed), None);
    assert_eq!(c.device_of(PATIENTS, DeviceKind::Wearable), None);
}

#[test]
fn heart_rate_is_lower_at_night_than_in_the_afternoon() {
    let mean = |cells: &[(f64, f64)]| {
        let (s, n) = cells.iter().fold((0.0, 0.0), |a, c| (a.0 + c.0, a.1 + c.1));
        s / n
    };
    let mut diffs = Vec::new();
    for (i, hours) in DAY.hr_hourly.iter().enumerate() {
        let night = mean(&hours[3..5]);
        let afternoon = mean(&hours[14..17]);
        assert!(
            night < afternoon,
            "patient {i}: night {night:.1} vs afternoon {afternoon:.1}"
        );
        diffs.push(afternoon - night);
    }
    let avg = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(avg > 8.0, "mean afternoon - night difference {avg:.1} bpm");
}

#[test]
fn temperature_and_blood_pressure_follow_the_circadian_rhythm() {
    let n = PATIENTS as f64;
    // latent[i][h] is the state at local (h + 1):00.
    let avg = |f: &dyn Fn(&Vitals) -> f64, h: usize| {
        DAY.latent.iter().map(|v| f(&v[h - 1])).sum::<f64>() / n
    };
    let temp = |v: &Vitals| v.temperature;
    let sys = |v: &Vitals| v.systolic;
    let swing = avg(&temp, 17) - avg(&temp, 5);
    assert!(
        (0.3..0.9).contains(&swing),
        "temperature 17:00 - 05:00 = {swing:.2}"
    );
    let early = (1..=24).map(|h| avg(&temp, h)).fold(f64::MAX, f64::min);
    assert!(
        (avg(&temp, 5) - early).abs() < 0.15,
        "minimum early in the morning"
    );
    assert!(avg(&sys, 16) - avg(&sys, 4) > 8.0, "systolic dips at night");
}
