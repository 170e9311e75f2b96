//! `vigil bench fhir`: FHIR read latency on a patient with a long 1 Hz history.
//!
//! Builds a hub store holding one patient with `--days` of 1 Hz heart rate (a year is 31.5 M
//! readings) plus SpO2 each minute, respiration rate every 5 minutes and temperature each
//! hour, written through the store's ingest API a day per batch (the load time is reported).
//! Then starts a real `vigil hub` process on it and measures over loopback HTTP:
//! `Observation/$lastn`, the first page (`_count=100`) of a 7-day Observation search, and
//! paging through a whole day of that search by its `next` links. Baselines in the same run:
//! the hub's `/health` round trip (HTTP and process cost alone) and the same 100 readings read
//! from the store in-process (storage cost alone), so the figures read as ratios.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use vigil_model::{Metric, Reading, Record, Timestamp};
use vigil_store::{ApiToken, IncomingRecord, IngestBatch, ReadingQuery, Store};

const DAY_MS: i64 = 86_400_000;

/// Options of `vigil bench fhir`.
#[derive(Debug, Clone)]
pub struct FhirBench {
    pub days: u32,
    /// Timed calls per figure.
    pub calls: usize,
}

fn stats(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "calls": ms.len(),
        "p50_ms": crate::bench::percentile(&ms, 0.50),
        "p99_ms": crate::bench::percentile(&ms, 0.99),
    })
}

fn p50(v: &Value) -> f64 {
    v["p50_ms"].as_f64().unwrap_or(f64::NAN)
}

/// Loads the store; returns (readings, seconds) and the newest device time.
async fn load(
    store: &vigil_store::sqlite::SqliteStore,
    days: u32,
) -> anyhow::Result<(u64, f64, Timestamp)> {
    let patient: vigil_model::Patient =
        serde_json::from_value(json!({"id": "p-bench", "name": "Bench Patient"}))?;
    let device: vigil_model::Device =
        serde_json::from_value(json!({"id": "d-bench", "kind": "wearable"}))?;
    store.upsert_patient(patient).await?;
    store.upsert_device(device).await?;
    let end = Timestamp((Timestamp::now().0 / 1000 - 120) * 1000);
    let start = Timestamp(end.0 - i64::from(days) * DAY_MS);
    store
        .assign(serde_json::from_value(json!({
            "device": "d-bench", "patient": "p-bench", "from": Timestamp(start.0 - DAY_MS),
        }))?)
        .await?;
    store
        .create_gateway(
            "bench-fhir",
            &vigil_hub::auth::hash_token(&vigil_hub::auth::new_token(
                vigil_hub::auth::GATEWAY_PREFIX,
            )),
        )
        .await?;
    let m = |code: &str| -> anyhow::Result<Metric> {
        code.parse().with_context(|| format!("metric {code}"))
    };
    let (hr, spo2, rr, temp) = (m("8867-4")?, m("59408-5")?, m("9279-1")?, m("8310-5")?);
    let dev = vigil_model::DeviceId::new("d-bench")?;
    let t = Instant::now();
    let mut seq = 0u64;
    let mut total = 0u64;
    for day in 0..i64::from(days) {
        let mut records = Vec::with_capacity(90_000);
        for s in 0..86_400i64 {
            let time = Timestamp(start.0 + day * DAY_MS + s * 1000);
            let k = day * 86_400 + s;
            records.push(Record::Reading(Reading::quantity(
                dev.clone(),
                hr,
                60.0 + (k * 7 % 40) as f64,
                time,
            )));
            if s % 60 == 0 {
                records.push(Record::Reading(Reading::quantity(
                    dev.clone(),
                    spo2,
                    94.0 + (k % 5) as f64,
                    time,
                )));
            }
            if s % 300 == 0 {
                records.push(Record::Reading(Reading::quantity(
                    dev.clone(),
                    rr,
                    14.0 + (k % 4) as f64,
                    time,
                )));
            }
            if s % 3600 == 0 {
                records.push(Record::Reading(Reading::quantity(
                    dev.clone(),
                    temp,
                    36.5 + (k % 3) as f64 / 10.0,
                    time,
                )));
            }
        }
        let after = seq;
        let n = records.len() as u64;
        let incoming = records
            .into_iter()
            .map(|r| {
                seq += 1;
                IncomingRecord { seq, record: Ok(r) }
            })
            .collect();
        let out = store
            .ingest(IngestBatch {
                gateway: "bench-fhir".to_owned(),
                epoch: 1,
                after,
                records: incoming,
                hub_received: Timestamp::now(),
                max_future_ms: 300_000,
            })
            .await?;
        if out.stored as u64 != n {
            bail!(
                "day {day}: stored {} of {n} readings ({} quarantined)",
                out.stored,
                out.quarantined
            );
        }
        total += n;
        if (day + 1) % 30 == 0 {
            eprintln!(
                "  loaded {} days, {total} readings, {:.0} readings/s",
                day + 1,
                total as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    Ok((total, t.elapsed().as_secs_f64(), end))
}

async fn timed_get(c: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<(f64, Value)> {
    let t = Instant::now();
    let r = c.get(url).bearer_auth(token).send().await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!("{url}: {status}: {body}");
    }
    Ok((ms, body))
}

fn next_link(b: &Value) -> Option<String> {
    b["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

pub async fn run(opts: FhirBench, dir: Option<&Path>) -> anyhow::Result<()> {
    if opts.days < 7 {
        bail!("--days must be at least 7 (the search covers 7 days)");
    }
    let work = crate::bench::tempfile_dir(dir)?;
    let dir = work.path().to_owned();
    let exe = std::env::current_exe()?;
    eprintln!(
        "vigil bench fhir: {} days of 1 Hz heart rate for one patient in {}",
        opts.days,
        dir.display()
    );
    let db = dir.join("hub.db");
    let store = vigil_store::sqlite::SqliteStore::open(&db)?;
    let (readings, load_secs, end) = load(&store, opts.days).await?;
    let t = Instant::now();
    while store.compact().await? > 0 {}
    let compact_secs = t.elapsed().as_secs_f64();
    let st = store.stats().await?;
    eprintln!(
        "  load: {readings} readings in {load_secs:.1} s ({:.0}/s), compaction {compact_secs:.1} s, {:.2} bytes/reading",
        readings as f64 / load_secs,
        st.file_bytes as f64 / readings as f64
    );
    let token = vigil_hub::auth::new_token(vigil_hub::auth::API_PREFIX);
    store
        .create_api_token(
            &vigil_hub::auth::hash_token(&token),
            ApiToken {
                name: "bench".to_owned(),
                role: "integration".to_owned(),
                created: Timestamp::now(),
                expires: None,
                revoked: false,
            },
        )
        .await?;

    // Storage alone: the first 100 readings of the 7-day window, in-process.
    let week_from = Timestamp(end.0 - 7 * DAY_MS);
    let patient = vigil_model::PatientId::new("p-bench")?;
    let hr: Metric = "8867-4".parse()?;
    let mut store_ms = Vec::with_capacity(opts.calls);
    for _ in 0..opts.calls {
        let t = Instant::now();
        let rows = store
            .readings(ReadingQuery {
                patient: patient.clone(),
                metric: Some(hr),
                from: Some(week_from),
                to: Some(end),
                limit: 100,
                descending: false,
            })
            .await?;
        store_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if rows.len() != 100 {
            bail!("the store returned {} readings, expected 100", rows.len());
        }
    }
    drop(store);

    let (mut hub, hub_url) = crate::bench::spawn_announcing(
        tokio::process::Command::new(&exe)
            .args([
                "--log",
                "warn",
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&dir)
            .env("VIGIL_HUB__COMPACT_EVERY_S", "0")
            .env("VIGIL_HUB__STALE_FACTOR", "0"),
        "hub listening on ",
    )
    .await?;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let fhir = format!("{hub_url}/fhir/r4");
    // Warm up connections and caches.
    timed_get(&c, &format!("{fhir}/Patient"), &token).await?;

    let mut health = Vec::with_capacity(opts.calls);
    for _ in 0..opts.calls {
        let t = Instant::now();
        let r = c.get(format!("{hub_url}/health")).send().await?;
        r.bytes().await?;
        health.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let mut lastn = Vec::with_capacity(opts.calls);
    for _ in 0..opts.calls {
        let (ms, b) = timed_get(
            &c,
            &format!("{fhir}/Observation/$lastn?patient=p-bench"),
            &token,
        )
        .await?;
        if b["total"] != 4 {
            bail!("$lastn returned {}", b["total"]);
        }
        lastn.push(ms);
    }

    let week = format!(
        "{fhir}/Observation?patient=p-bench&code=8867-4&date=ge{}&date=lt{}&_count=100",
        week_from.to_rfc3339(),
        end.to_rfc3339()
    );
    let mut first_page = Vec::with_capacity(opts.calls);
    for _ in 0..opts.calls {
        let (ms, b) = timed_get(&c, &week, &token).await?;
        if b["entry"].as_array().map(Vec::len) != Some(100) {
            bail!("the 7-day search's first page is not 100 entries");
        }
        first_page.push(ms);
    }
    let week_desc = format!("{week}&_sort=-date");
    let mut newest_page = Vec::with_capacity(opts.calls);
    for _ in 0..opts.calls {
        let (ms, _) = timed_get(&c, &week_desc, &token).await?;
        newest_page.push(ms);
    }

    // One whole day of the 7-day search, page by page through next links.
    let mut pages = Vec::new();
    let mut seen = 0usize;
    let t = Instant::now();
    let mut url = week.clone();
    while seen < 86_400 {
        let (ms, b) = timed_get(&c, &url, &token).await?;
        seen += b["entry"].as_array().map_or(0, Vec::len);
        pages.push(ms);
        match next_link(&b) {
            Some(n) => url = n,
            None => bail!("the search ended after {seen} readings"),
        }
    }
    let day_secs = t.elapsed().as_secs_f64();

    let mut summary = Vec::new();
    for _ in 0..opts.calls.min(20) {
        let (ms, b) = timed_get(&c, &format!("{week}&_summary=count"), &token).await?;
        if b["total"] != 7 * 86_400 {
            bail!(
                "the 7-day search counts {}, expected {}",
                b["total"],
                7 * 86_400
            );
        }
        summary.push(ms);
    }
    let _ = hub.kill().await;
    let _ = hub.wait().await;

    let health = stats(health);
    let store_ms = stats(store_ms);
    let lastn = stats(lastn);
    let first_page = stats(first_page);
    let newest_page = stats(newest_page);
    let page_stats = stats(pages);
    let summary = stats(summary);
    let ratio = |v: &Value| {
        json!({
            "to_health": p50(v) / p50(&health),
            "to_store_100": p50(v) / p50(&store_ms),
        })
    };
    let report = json!({
        "days": opts.days,
        "readings": readings,
        "heart_rate_readings": i64::from(opts.days) * 86_400,
        "load": {
            "seconds": load_secs,
            "readings_per_s": readings as f64 / load_secs,
            "compaction_seconds": compact_secs,
            "bytes_per_reading_file": st.file_bytes as f64 / readings as f64,
        },
        "baseline_health": health,
        "baseline_store_100_readings": store_ms,
        "lastn": {"latency": lastn, "ratio_p50": ratio(&lastn)},
        "search_7d_first_page_100": {"latency": first_page, "ratio_p50": ratio(&first_page)},
        "search_7d_newest_page_100": {"latency": newest_page, "ratio_p50": ratio(&newest_page)},
        "search_7d_page_through_one_day": {
            "pages": page_stats["calls"],
            "seconds": day_secs,
            "per_page": page_stats,
            "ratio_p50": ratio(&page_stats),
        },
        "search_7d_summary_count": summary,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
