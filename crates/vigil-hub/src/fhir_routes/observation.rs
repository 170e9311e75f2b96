//! Observations: read by id, search and `$lastn`, served from the reading store.
//!
//! A search walks the patient's readings in (device time, metric, device) order straight from
//! storage, a page at a time: the `next` link carries a cursor (the device time of the last
//! reading served and how many readings of that instant were consumed), so paging forward
//! through a year of 1 Hz data costs one page per request, never a scan from the start.
//! `previous` and hand-written `_offset` links without a cursor are served by counting from
//! the start. `total` is given when it is known without a second pass (the last page, or
//! `_summary=count`, which counts).

use super::{
    FhirError, Paging, Params, base, link, observations_of, page_links, paging, params,
    parse_usize, query_string, reject_unknown, require_patient, searchset, user,
};
use crate::AppState;
use crate::auth::User;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use vigil_fhir::{Bundle, IssueType, Resource};
use vigil_model::{Metric, PatientId, Timestamp};
use vigil_store::{ReadingQuery, StoredReading};

/// Largest `max` of `$lastn`.
const MAX_LASTN: usize = 1000;
/// Readings fetched from storage per step of a filtered walk.
const STEP: usize = 2000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/Observation", get(search))
        .route("/Observation/$lastn", get(lastn))
        .route("/Observation/{id}", get(read))
}

/// The patient of `patient=<id>` or `subject=[Patient/]<id>` (at most one).
pub(super) fn patient_param(p: &[(String, String)]) -> Result<Option<String>, FhirError> {
    let mut found: Option<String> = None;
    for (k, v) in p {
        let id = match k.as_str() {
            "patient" | "subject" | "subject:Patient" | "patient:Patient" => {
                v.strip_prefix("Patient/").unwrap_or(v)
            }
            _ => continue,
        };
        if id.is_empty() {
            return Err(FhirError::bad(format!("{k} must name a patient")));
        }
        if found.replace(id.to_owned()).is_some() {
            return Err(FhirError::bad(
                "give one patient (patient or subject), once",
            ));
        }
    }
    Ok(found)
}

/// [`patient_param`] where the search needs one.
pub(super) fn required_patient(p: &[(String, String)], ty: &str) -> Result<String, FhirError> {
    patient_param(p)?.ok_or_else(|| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            format!("{ty} search needs patient=<id> or subject=Patient/<id>"),
        )
    })
}

/// `code=[system|]code`: `Ok(None)` without the parameter, `Ok(Some(None))` for a code Vigil
/// does not know (matches nothing).
fn code_param(p: &[(String, String)]) -> Result<Option<Option<Metric>>, FhirError> {
    let mut out = None;
    for (k, v) in p.iter().filter(|(k, _)| k == "code") {
        if out.is_some() {
            return Err(FhirError::bad(format!("{k} may be given once")));
        }
        let (system, code) = match v.split_once('|') {
            Some((s, c)) => (Some(s), c),
            None => (None, v.as_str()),
        };
        if code.is_empty() || code.contains(',') {
            return Err(FhirError::bad(format!(
                "code must be one [system|]code, got {v:?}"
            )));
        }
        let known_system = matches!(
            system,
            None | Some("") | Some(vigil_fhir::system::LOINC) | Some(vigil_fhir::system::MDC)
        );
        out = Some(if known_system {
            code.parse::<Metric>().ok()
        } else {
            None
        });
    }
    Ok(out)
}

/// `category=[system|]code`: `None` without it, `Some(true)` for vital-signs, `Some(false)`
/// for any other category (Vigil's other readings carry none, so it matches nothing).
fn category_param(p: &[(String, String)]) -> Result<Option<bool>, FhirError> {
    let mut out = None;
    for (_, v) in p.iter().filter(|(k, _)| k == "category") {
        if out.is_some() {
            return Err(FhirError::bad("category may be given once"));
        }
        let (system, code) = match v.split_once('|') {
            Some((s, c)) => (Some(s), c),
            None => (None, v.as_str()),
        };
        if code.is_empty() {
            return Err(FhirError::bad("category must be [system|]code"));
        }
        let system_ok = matches!(
            system,
            None | Some("") | Some(vigil_fhir::system::OBSERVATION_CATEGORY)
        );
        out = Some(system_ok && code == "vital-signs");
    }
    Ok(out)
}

/// The inclusive millisecond range a FHIR date or dateTime stands for: a year, month or day
/// is the whole period; a time without fractional seconds is its whole second.
fn date_span(s: &str) -> Option<(i64, i64)> {
    let ms = |text: String| Timestamp::parse(&text).ok().map(Timestamp::millis);
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    match b.len() {
        4 if digits(0..4) => {
            let y: i32 = s.parse().ok()?;
            Some((
                ms(format!("{y:04}-01-01T00:00:00Z"))?,
                ms(format!("{:04}-01-01T00:00:00Z", y + 1))? - 1,
            ))
        }
        7 if digits(0..4) && b[4] == b'-' && digits(5..7) => {
            let y: i32 = s[..4].parse().ok()?;
            let m: u32 = s[5..7].parse().ok()?;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some((
                ms(format!("{s}-01T00:00:00Z"))?,
                ms(format!("{ny:04}-{nm:02}-01T00:00:00Z"))? - 1,
            ))
        }
        10 if digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10) => {
            let lo = ms(format!("{s}T00:00:00Z"))?;
            Some((lo, lo + 86_400_000 - 1))
        }
        _ => {
            let t = ms(s.to_owned())?;
            // Fractional seconds sit between the seconds and the zone: "…:SS.fff…".
            let fraction = s.get(19..20) == Some(".");
            Some((t, if fraction { t } else { t + 999 }))
        }
    }
}

/// The inclusive range of every `name` parameter (prefix eq, lt, le, gt, ge; none is eq),
/// as FHIR defines them for a point in time against the span the value stands for.
pub(super) fn date_range(
    p: &[(String, String)],
    name: &str,
) -> Result<(Option<Timestamp>, Option<Timestamp>), FhirError> {
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    for (_, v) in p.iter().filter(|(k, _)| k == name) {
        let (prefix, rest) = match v.get(..2) {
            Some(pre) if pre.bytes().all(|b| b.is_ascii_lowercase()) => (pre, &v[2..]),
            _ => ("eq", v.as_str()),
        };
        let (lo, hi) = date_span(rest.trim()).ok_or_else(|| {
            FhirError::bad(format!(
                "{name} must be a prefix (eq, lt, le, gt, ge) and a FHIR date or dateTime, got {v:?}"
            ))
        })?;
        match prefix {
            "eq" => {
                lows.push(lo);
                highs.push(hi);
            }
            "ge" => lows.push(lo),
            "gt" => lows.push(hi.saturating_add(1)),
            "le" => highs.push(hi),
            "lt" => highs.push(lo.saturating_sub(1)),
            other => {
                return Err(FhirError::bad(format!(
                    "{name} prefix {other:?} is not supported (eq, lt, le, gt, ge)"
                )));
            }
        }
    }
    Ok((
        lows.into_iter().max().map(Timestamp),
        highs.into_iter().min().map(Timestamp),
    ))
}

fn sort_param(p: &[(String, String)]) -> Result<bool, FhirError> {
    let mut descending = false;
    for (_, v) in p.iter().filter(|(k, _)| k == "_sort") {
        descending = match v.as_str() {
            "date" => false,
            "-date" => true,
            other => {
                return Err(FhirError::bad(format!(
                    "_sort must be date or -date, got {other:?}"
                )));
            }
        };
    }
    Ok(descending)
}

/// A position in a walk: the device time of the last reading consumed and how many readings
/// of that instant were consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    time: i64,
    skip: usize,
}

impl Cursor {
    fn parse(v: &str) -> Result<Self, FhirError> {
        let bad = || FhirError::bad(format!("_cursor is not one this server wrote: {v:?}"));
        let (t, n) = v.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            time: t.parse().map_err(|_| bad())?,
            skip: n.parse().map_err(|_| bad())?,
        })
    }

    fn render(self) -> String {
        format!("{}.{}", self.time, self.skip)
    }

    fn after(self, r: &StoredReading) -> Self {
        if r.time.0 == self.time {
            Self {
                time: self.time,
                skip: self.skip + 1,
            }
        } else {
            Self {
                time: r.time.0,
                skip: 1,
            }
        }
    }
}

/// Which readings a search matches.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub patient: PatientId,
    /// `None`: every metric.
    pub metric: Option<Metric>,
    /// A code that matches nothing.
    pub nothing: bool,
    pub vital_signs: Option<bool>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub updated_from: Option<Timestamp>,
    pub updated_to: Option<Timestamp>,
    pub descending: bool,
}

impl Filter {
    /// Every reading of a patient, oldest first.
    pub fn all(patient: PatientId) -> Self {
        Self {
            patient,
            metric: None,
            nothing: false,
            vital_signs: None,
            from: None,
            to: None,
            updated_from: None,
            updated_to: None,
            descending: false,
        }
    }

    fn keeps(&self, r: &StoredReading) -> bool {
        self.vital_signs
            .is_none_or(|v| v == r.metric.def().vital_sign)
            && self.updated_from.is_none_or(|t| r.hub_received >= t)
            && self.updated_to.is_none_or(|t| r.hub_received <= t)
    }

    fn empty(&self) -> bool {
        self.nothing
            || self.vital_signs == Some(false)
            || matches!((self.from, self.to), (Some(f), Some(t)) if f > t)
    }
}

/// Up to `want` matching readings from `start` (after skipping `skip_matches` matches), and
/// the cursor after the last one returned; `more` when at least one more match exists.
pub(super) struct Walked {
    pub rows: Vec<StoredReading>,
    pub more: bool,
    cursor: Option<Cursor>,
}

async fn walk(
    st: &AppState,
    f: &Filter,
    start: Option<Cursor>,
    mut skip_matches: usize,
    want: usize,
) -> Result<Walked, FhirError> {
    let mut out = Walked {
        rows: Vec::new(),
        more: false,
        cursor: start,
    };
    if f.empty() {
        return Ok(out);
    }
    let mut pos = start;
    loop {
        let step = want.saturating_add(1).clamp(STEP, 100_000);
        let skip = pos.map_or(0, |c| c.skip);
        let (from, to) = match (pos, f.descending) {
            (None, _) => (f.from, f.to),
            (Some(c), false) => (Some(Timestamp(c.time)), f.to),
            (Some(c), true) => (f.from, Some(Timestamp(c.time))),
        };
        let limit = skip.saturating_add(step);
        let rows = st
            .store
            .readings(ReadingQuery {
                patient: f.patient.clone(),
                metric: f.metric,
                from,
                to,
                limit,
                descending: f.descending,
            })
            .await?;
        let exhausted = rows.len() < limit;
        let mut cur = pos;
        for r in rows.into_iter().skip(skip) {
            let next = match cur {
                Some(c) => c.after(&r),
                None => Cursor {
                    time: r.time.0,
                    skip: 1,
                },
            };
            if f.keeps(&r) {
                if skip_matches > 0 {
                    skip_matches -= 1;
                } else if out.rows.len() == want {
                    out.more = true;
                    return Ok(out);
                } else {
                    out.rows.push(r);
                    out.cursor = Some(next);
                }
            }
            cur = Some(next);
        }
        if exhausted {
            return Ok(out);
        }
        pos = cur;
    }
}

/// Counts the matches of `f` (for `_summary=count`), a step at a time.
async fn count(st: &AppState, f: &Filter) -> Result<usize, FhirError> {
    let mut n = 0;
    let mut pos = None;
    loop {
        let w = walk(st, f, pos, 0, 50_000).await?;
        n += w.rows.len();
        if !w.more {
            return Ok(n);
        }
        pos = w.cursor;
    }
}

/// One page of a patient's readings: the rows and whether more follow, from a cursor when the
/// link has one, otherwise by counting `offset` matches from the start.
pub(super) async fn page_of(
    st: &AppState,
    f: &Filter,
    cursor: Option<&str>,
    offset: usize,
    count: usize,
) -> Result<(Walked, Option<String>), FhirError> {
    let w = match cursor {
        Some(c) => walk(st, f, Some(Cursor::parse(c)?), 0, count).await?,
        None => walk(st, f, None, offset, count).await?,
    };
    let next = w.more.then(|| w.cursor.map(Cursor::render)).flatten();
    Ok((w, next))
}

/// The filter of a search's parameters, for the patient given once it is resolved.
fn filter_of(p: &[(String, String)]) -> Result<impl FnOnce(PatientId) -> Filter, FhirError> {
    let (from, to) = date_range(p, "date")?;
    let (updated_from, updated_to) = date_range(p, "_lastUpdated")?;
    let code = code_param(p)?;
    let vital_signs = category_param(p)?;
    let descending = sort_param(p)?;
    Ok(move |patient| Filter {
        patient,
        metric: code.flatten(),
        nothing: matches!(code, Some(None)),
        vital_signs,
        from,
        to,
        updated_from,
        updated_to,
        descending,
    })
}

async fn search(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(
        &p,
        &[
            "patient",
            "patient:Patient",
            "subject",
            "subject:Patient",
            "code",
            "category",
            "date",
            "_lastUpdated",
            "_count",
            "_offset",
            "_cursor",
            "_sort",
            "_summary",
        ],
    )?;
    let pg = paging(&p)?;
    let cursor = p
        .iter()
        .rev()
        .find(|(k, _)| k == "_cursor")
        .map(|(_, v)| v.clone());
    let patient_id = required_patient(&p, "Observation")?;
    let filter = filter_of(&p)?;
    let patient = require_patient(&st, &u, &patient_id).await?;
    let f = filter(patient.id.clone());
    observation_bundle(
        &st,
        &headers,
        "Observation",
        &p,
        &pg,
        &f,
        cursor.as_deref(),
        &[],
    )
    .await
}

/// A searchset page of `f`'s Observations, `lead` (other resources) before them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn observation_bundle(
    st: &AppState,
    headers: &HeaderMap,
    path: &str,
    p: &[(String, String)],
    pg: &Paging,
    f: &Filter,
    cursor: Option<&str>,
    lead: &[Resource],
) -> Result<Response, FhirError> {
    if pg.summary_count {
        let total = lead.len() + count(st, f).await?;
        let links = vec![link(
            "self",
            format!("{}/{path}?{}", base(headers), query_string(p)),
        )];
        return Ok(searchset(Vec::new(), Some(total), links, pg));
    }
    let mut entries: Vec<Resource> = lead
        .iter()
        .skip(pg.offset)
        .take(pg.count)
        .cloned()
        .collect();
    let want = pg.count - entries.len();
    let obs_offset = pg.offset.saturating_sub(lead.len());
    let (w, next_cursor) = if want == 0 {
        let w = walk(st, f, None, 0, 0).await?;
        let more = w.more || lead.len() > pg.offset + pg.count;
        (Walked { more, ..w }, None)
    } else {
        page_of(st, f, cursor, obs_offset, want).await?
    };
    let more = w.more || lead.len() > pg.offset + pg.count;
    // The total is known without counting on the last page.
    let total = (!more && (!w.rows.is_empty() || obs_offset == 0))
        .then(|| lead.len() + obs_offset + w.rows.len());
    entries.extend(observations_of(&f.patient, &w.rows));
    let extra: Vec<(String, String)> = next_cursor
        .map(|c| vec![("_cursor".to_owned(), c)])
        .unwrap_or_default();
    let links = page_links(headers, path, p, pg, more, &extra);
    Ok(searchset(entries, total, links, pg))
}

async fn read(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let missing = || FhirError::not_found(format!("Observation/{id} is not known"));
    let key = vigil_fhir::ObservationKey::parse(&id).ok_or_else(missing)?;
    let patient = st
        .store
        .patients()
        .await?
        .into_iter()
        .map(|s| s.patient)
        .find(|p| vigil_fhir::patient_id(&p.id).starts_with(&key.patient))
        .ok_or_else(missing)?;
    crate::access::can_read_patient(&st, &u, &patient.id)
        .await
        .map_err(|_| missing())?;
    let rows = st
        .store
        .readings(ReadingQuery {
            patient: patient.id.clone(),
            metric: Some(key.metric),
            from: Some(key.time),
            to: Some(key.time),
            limit: 1000,
            descending: false,
        })
        .await?;
    let r = rows
        .iter()
        .find(|r| key.matches(&patient.id, &r.device))
        .ok_or_else(missing)?;
    Ok(super::ok(Resource::Observation(vigil_fhir::observation(
        &patient.id,
        r,
    ))))
}

async fn lastn(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(
        &p,
        &[
            "patient",
            "patient:Patient",
            "subject",
            "subject:Patient",
            "code",
            "category",
            "max",
        ],
    )?;
    let max = match p.iter().rev().find(|(k, _)| k == "max") {
        Some((_, v)) => parse_usize("max", v)?,
        None => 1,
    };
    if max == 0 || max > MAX_LASTN {
        return Err(FhirError::bad(format!(
            "max must be between 1 and {MAX_LASTN}"
        )));
    }
    let code = code_param(&p)?;
    let category = category_param(&p)?;
    let patient = require_patient(&st, &u, &required_patient(&p, "$lastn")?).await?;
    let mut latest = st.store.latest(&patient.id).await?;
    match code {
        Some(Some(m)) => latest.retain(|r| r.metric == m),
        Some(None) => latest.clear(),
        None => {}
    }
    if let Some(v) = category {
        latest.retain(|r| v && r.metric.def().vital_sign);
    }
    latest.sort_by_key(|r| r.metric.loinc());
    let rows = if max == 1 {
        latest
    } else {
        let mut rows = Vec::new();
        for r in &latest {
            rows.extend(
                st.store
                    .readings(ReadingQuery {
                        patient: patient.id.clone(),
                        metric: Some(r.metric),
                        from: None,
                        to: None,
                        limit: max,
                        descending: true,
                    })
                    .await?,
            );
        }
        rows
    };
    let total = rows.len() as u64;
    let url = format!("{}/Observation/$lastn?{}", base(&headers), query_string(&p));
    Ok(super::ok(Resource::Bundle(Bundle::searchset(
        observations_of(&patient.id, &rows),
        Some(total),
        vec![link("self", url)],
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        Timestamp::parse(s)
            .map(Timestamp::millis)
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn partial_dates_span_their_whole_period() {
        assert_eq!(
            date_span("2025"),
            Some((ms("2025-01-01T00:00:00Z"), ms("2026-01-01T00:00:00Z") - 1))
        );
        assert_eq!(
            date_span("2025-12"),
            Some((ms("2025-12-01T00:00:00Z"), ms("2026-01-01T00:00:00Z") - 1))
        );
        assert_eq!(
            date_span("2024-02"),
            Some((ms("2024-02-01T00:00:00Z"), ms("2024-03-01T00:00:00Z") - 1))
        );
        assert_eq!(
            date_span("2024-02-29"),
            Some((ms("2024-02-29T00:00:00Z"), ms("2024-03-01T00:00:00Z") - 1))
        );
        let t = ms("2024-02-29T10:00:05Z");
        assert_eq!(date_span("2024-02-29T10:00:05Z"), Some((t, t + 999)));
        assert_eq!(
            date_span("2024-02-29T10:00:05.250Z"),
            Some((t + 250, t + 250))
        );
        for bad in [
            "",
            "20",
            "2024-13",
            "2024-02-30",
            "yesterday",
            "2024-02-29T25:00:00Z",
        ] {
            assert_eq!(date_span(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefixes_combine_into_one_inclusive_range() {
        let p = |v: &[&str]| -> Vec<(String, String)> {
            v.iter()
                .map(|x| ("date".to_owned(), (*x).to_owned()))
                .collect()
        };
        let day = ms("2024-03-01T00:00:00Z");
        let (from, to) =
            date_range(&p(&["ge2024-03-01", "lt2024-03-02"]), "date").unwrap_or_default();
        assert_eq!(
            (from, to),
            (Some(Timestamp(day)), Some(Timestamp(day + 86_400_000 - 1)))
        );
        let (from, to) =
            date_range(&p(&["gt2024-03-01", "le2024-03-01"]), "date").unwrap_or_default();
        assert_eq!(
            (from, to),
            (
                Some(Timestamp(day + 86_400_000)),
                Some(Timestamp(day + 86_400_000 - 1))
            ),
            "an empty range"
        );
        assert!(date_range(&p(&["ap2024-03-01"]), "date").is_err());
        assert!(date_range(&p(&["ge"]), "date").is_err());
    }

    #[test]
    fn cursors_round_trip_and_count_readings_of_one_instant() {
        let c = Cursor { time: -5, skip: 3 };
        assert_eq!(Cursor::parse(&c.render()).ok(), Some(c));
        assert!(Cursor::parse("5").is_err());
        assert!(Cursor::parse("a.1").is_err());
    }
}
