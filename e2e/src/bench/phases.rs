//! The benchmark's phases: what each one sends, how many streams send it, when it stops
//! (count or time, whichever first) and what it reports.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;

use super::client::{self, BenchBody, Connection, Expect, Target};
use super::content::{Content, Verifier};
use super::stats::{Progress, Recorder, Summary};

/// The phases in the order they run; names as on the command line.
pub const PHASES: &[&str] = &[
    "put",
    "get",
    "small-put",
    "small-get",
    "multipart",
    "mixed",
    "list",
];

/// Keys per ListObjectsV2 page.
const LIST_PAGE: usize = 1000;

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Arc<Target>,
    /// Every key the run writes starts with this.
    pub prefix: String,
    /// Concurrent streams (connections).
    pub concurrency: usize,
    /// Longest a phase may run; it stops claiming new operations after that.
    pub duration: Option<Duration>,
    /// `put`/`get`/`mixed`: objects and their size.
    pub objects: u64,
    pub object_size: u64,
    /// `small-put`/`small-get`.
    pub small_objects: u64,
    pub small_size: u64,
    /// `multipart`: one object of this size in parts of `part_size`.
    pub multipart_size: u64,
    pub part_size: u64,
    /// `mixed`: operations, 70% GETs of `put`'s objects and 30% PUTs of new ones.
    pub mixed_ops: u64,
    /// `list`: empty objects written, then listed `list_passes` times.
    pub list_keys: u64,
    pub list_passes: u64,
    /// Print progress on stderr.
    pub progress: bool,
}

/// Objects known to be written, by phase family; `None` means "assume all of them exist"
/// (written by an earlier run with the same prefix).
#[derive(Default)]
struct Written {
    objects: Option<Arc<Vec<u64>>>,
    small: Option<Arc<Vec<u64>>>,
}

/// The work of one operation of a phase.
enum Job {
    Put {
        prefix: String,
        size: u64,
        written: Mutex<Vec<u64>>,
    },
    Get {
        prefix: String,
        size: u64,
        indices: Arc<Vec<u64>>,
    },
    Mixed {
        get_prefix: String,
        indices: Arc<Vec<u64>>,
        put_prefix: String,
        size: u64,
    },
    PutPart {
        key: String,
        content: Content,
        part_size: u64,
        upload_id: String,
        etags: Mutex<BTreeMap<u64, String>>,
    },
    GetRange {
        key: String,
        content: Content,
        part_size: u64,
    },
}

fn object_key(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:08}")
}

/// SplitMix64: a reproducible choice per operation index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn put(conn: &mut Connection, key: &str, size: u64) -> client::Result<u64> {
    let content = Content::for_key(key, size);
    conn.request(
        Method::PUT,
        Some(key),
        &[],
        &[],
        BenchBody::generated(content, 0, size),
        Expect::Discard,
    )
    .await?;
    Ok(size)
}

async fn get(conn: &mut Connection, key: &str, size: u64) -> client::Result<u64> {
    let content = Content::for_key(key, size);
    let answer = conn
        .request(
            Method::GET,
            Some(key),
            &[],
            &[],
            BenchBody::empty(),
            Expect::Verify(Verifier::new(content)),
        )
        .await?;
    Ok(answer.received)
}

impl Job {
    /// Runs operation `i`; returns the body bytes it moved.
    async fn run(&self, conn: &mut Connection, i: u64) -> client::Result<u64> {
        match self {
            Job::Put {
                prefix,
                size,
                written,
            } => {
                let n = put(conn, &object_key(prefix, i), *size).await?;
                written.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                Ok(n)
            }
            Job::Get {
                prefix,
                size,
                indices,
            } => {
                let index = indices[(i % indices.len() as u64) as usize];
                get(conn, &object_key(prefix, index), *size).await
            }
            Job::Mixed {
                get_prefix,
                indices,
                put_prefix,
                size,
            } => {
                let roll = mix(i);
                if roll % 10 < 7 {
                    let index = indices[((roll >> 8) % indices.len() as u64) as usize];
                    get(conn, &object_key(get_prefix, index), *size).await
                } else {
                    put(conn, &object_key(put_prefix, i), *size).await
                }
            }
            Job::PutPart {
                key,
                content,
                part_size,
                upload_id,
                etags,
            } => {
                let start = i * part_size;
                let end = (start + part_size).min(content.len);
                let number = (i + 1).to_string();
                let answer = conn
                    .request(
                        Method::PUT,
                        Some(key),
                        &[("partNumber", &number), ("uploadId", upload_id)],
                        &[],
                        BenchBody::generated(*content, start, end),
                        Expect::Discard,
                    )
                    .await?;
                let etag = answer
                    .headers
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| client::Error::Protocol(format!("part {number}: no ETag")))?;
                etags
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i + 1, etag.to_string());
                Ok(end - start)
            }
            Job::GetRange {
                key,
                content,
                part_size,
            } => {
                let start = i * part_size;
                let end = (start + part_size).min(content.len);
                let range = format!("bytes={start}-{}", end - 1);
                let answer = conn
                    .request(
                        Method::GET,
                        Some(key),
                        &[],
                        &[("range", &range)],
                        BenchBody::empty(),
                        Expect::Verify(Verifier::range(*content, start, end)),
                    )
                    .await?;
                Ok(answer.received)
            }
        }
    }
}

/// Prints a progress line on stderr every second until dropped.
struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
    tty: bool,
}

impl Ticker {
    fn start(settings: &Settings, phase: &str, total: u64, progress: Arc<Progress>) -> Self {
        let tty = std::io::stderr().is_terminal();
        if !settings.progress {
            return Ticker { task: None, tty };
        }
        let phase = phase.to_string();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                // Without a terminal a line every 10 s is enough for a log.
                if !tty && !n.is_multiple_of(10) {
                    continue;
                }
                let secs = start.elapsed().as_secs_f64();
                let ops = progress.ops.load(Ordering::Relaxed);
                let errors = progress.errors.load(Ordering::Relaxed);
                let mb = progress.bytes.load(Ordering::Relaxed) as f64 / 1e6;
                let line = format!(
                    "[{phase}] {ops}/{total} ops  {errors} errors  {:.1} ops/s  {:.1} MB/s  {secs:.0} s",
                    ops as f64 / secs,
                    mb / secs
                );
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        });
        Ticker {
            task: Some(task),
            tty,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if self.tty {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        }
    }
}

/// Runs `total` operations of `job` on `streams` connections, or as many as fit in the
/// phase's time; returns the merged record and the wall time.
async fn drive(
    settings: &Settings,
    phase: &str,
    total: u64,
    streams: usize,
    job: Arc<Job>,
) -> (Recorder, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let _ticker = Ticker::start(settings, phase, total, Arc::clone(&progress));
    let start = Instant::now();
    let deadline = settings.duration.map(|d| start + d);
    let mut workers = Vec::with_capacity(streams);
    for _ in 0..streams.max(1) {
        let next = Arc::clone(&next);
        let job = Arc::clone(&job);
        let progress = Arc::clone(&progress);
        let mut conn = Connection::new(Arc::clone(&settings.target));
        workers.push(tokio::spawn(async move {
            let mut record = Recorder::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t0 = Instant::now();
                match job.run(&mut conn, i).await {
                    Ok(bytes) => {
                        record.success(t0.elapsed(), bytes);
                        progress.add(true, bytes);
                    }
                    Err(e) => {
                        record.failure(e.to_string(), e.is_verify());
                        progress.add(false, 0);
                    }
                }
            }
            record
        }));
    }
    let mut merged = Recorder::default();
    for w in workers {
        match w.await {
            Ok(r) => merged.merge(r),
            Err(e) => merged.failure(format!("worker failed: {e}"), false),
        }
    }
    (merged, start.elapsed())
}

/// Creates the bucket unless it is there already.
pub async fn ensure_bucket(target: &Arc<Target>) -> client::Result<()> {
    let mut conn = Connection::new(Arc::clone(target));
    match conn
        .request(
            Method::PUT,
            None,
            &[],
            &[],
            BenchBody::empty(),
            Expect::Discard,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(client::Error::Status { status, code, .. })
            if status == http::StatusCode::CONFLICT
                && (code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Runs the chosen phases in their order; a summary per measured phase.
pub async fn run(settings: &Settings, phases: &[String]) -> Vec<Summary> {
    let mut written = Written::default();
    let mut out = Vec::new();
    for &phase in PHASES {
        if !phases.iter().any(|p| p == phase) {
            continue;
        }
        match phase {
            "put" => {
                let s = put_phase(
                    settings,
                    "put",
                    "obj/",
                    settings.object_size,
                    settings.objects,
                )
                .await;
                written.objects = Some(s.1);
                out.push(s.0);
            }
            "get" => {
                let indices = known(&written.objects, settings.objects);
                out.push(get_phase(settings, "get", "obj/", settings.object_size, indices).await);
            }
            "small-put" => {
                let s = put_phase(
                    settings,
                    "small-put",
                    "small/",
                    settings.small_size,
                    settings.small_objects,
                )
                .await;
                written.small = Some(s.1);
                out.push(s.0);
            }
            "small-get" => {
                let indices = known(&written.small, settings.small_objects);
                out.push(
                    get_phase(
                        settings,
                        "small-get",
                        "small/",
                        settings.small_size,
                        indices,
                    )
                    .await,
                );
            }
            "multipart" => out.extend(multipart_phase(settings).await),
            "mixed" => {
                let indices = known(&written.objects, settings.objects);
                out.push(mixed_phase(settings, indices).await);
            }
            "list" => out.extend(list_phase(settings).await),
            _ => {}
        }
    }
    out
}

fn known(written: &Option<Arc<Vec<u64>>>, count: u64) -> Arc<Vec<u64>> {
    match written {
        Some(w) => Arc::clone(w),
        None => Arc::new((0..count).collect()),
    }
}

async fn put_phase(
    settings: &Settings,
    name: &str,
    dir: &str,
    size: u64,
    count: u64,
) -> (Summary, Arc<Vec<u64>>) {
    let job = Arc::new(Job::Put {
        prefix: format!("{}{dir}", settings.prefix),
        size,
        written: Mutex::new(Vec::new()),
    });
    let (record, elapsed) = drive(
        settings,
        name,
        count,
        settings.concurrency,
        Arc::clone(&job),
    )
    .await;
    let mut written = match &*job {
        Job::Put { written, .. } => {
            std::mem::take(&mut *written.lock().unwrap_or_else(|e| e.into_inner()))
        }
        _ => Vec::new(),
    };
    written.sort_unstable();
    let mut summary = record.summary(name, elapsed);
    summary.note = Some(format!("{} objects of {}", count, human(size)));
    (summary, Arc::new(written))
}

async fn get_phase(
    settings: &Settings,
    name: &str,
    dir: &str,
    size: u64,
    indices: Arc<Vec<u64>>,
) -> Summary {
    if indices.is_empty() {
        let mut r = Recorder::default();
        r.failure("nothing to read: no object was written".into(), false);
        return r.summary(name, Duration::ZERO);
    }
    let count = indices.len() as u64;
    let job = Arc::new(Job::Get {
        prefix: format!("{}{dir}", settings.prefix),
        size,
        indices,
    });
    let (record, elapsed) = drive(settings, name, count, settings.concurrency, job).await;
    let mut summary = record.summary(name, elapsed);
    summary.note = Some(format!("{count} objects of {}, verified", human(size)));
    summary
}

async fn mixed_phase(settings: &Settings, indices: Arc<Vec<u64>>) -> Summary {
    if indices.is_empty() {
        let mut r = Recorder::default();
        r.failure("nothing to read: no object was written".into(), false);
        return r.summary("mixed", Duration::ZERO);
    }
    let job = Arc::new(Job::Mixed {
        get_prefix: format!("{}obj/", settings.prefix),
        indices,
        put_prefix: format!("{}mixed/", settings.prefix),
        size: settings.object_size,
    });
    let (record, elapsed) = drive(
        settings,
        "mixed",
        settings.mixed_ops,
        settings.concurrency,
        job,
    )
    .await;
    let mut summary = record.summary("mixed", elapsed);
    summary.note = Some(format!(
        "70% GET / 30% PUT of {}",
        human(settings.object_size)
    ));
    summary
}

/// One large object uploaded in parts on all streams, then read back in part-sized
/// ranges on all streams.
async fn multipart_phase(settings: &Settings) -> Vec<Summary> {
    let key = format!("{}multipart/object", settings.prefix);
    let size = settings.multipart_size;
    let part_size = settings.part_size.max(1);
    let parts = size.div_ceil(part_size).max(1);
    let content = Content::for_key(&key, size);
    let mut conn = Connection::new(Arc::clone(&settings.target));

    let start = Instant::now();
    let created = conn
        .request(
            Method::POST,
            Some(&key),
            &[("uploads", "")],
            &[],
            BenchBody::empty(),
            Expect::Text,
        )
        .await
        .and_then(|a| {
            client::xml_value(&a.text, "UploadId")
                .ok_or_else(|| client::Error::Protocol("no UploadId in the answer".into()))
        });
    let upload_id = match created {
        Ok(id) => id,
        Err(e) => {
            let mut r = Recorder::default();
            r.failure(format!("create multipart upload: {e}"), false);
            return vec![r.summary("mp-put", start.elapsed())];
        }
    };
    let job = Arc::new(Job::PutPart {
        key: key.clone(),
        content,
        part_size,
        upload_id: upload_id.clone(),
        etags: Mutex::new(BTreeMap::new()),
    });
    let (mut record, _) = drive(
        settings,
        "mp-put",
        parts,
        settings.concurrency,
        Arc::clone(&job),
    )
    .await;
    let etags = match &*job {
        Job::PutPart { etags, .. } => {
            std::mem::take(&mut *etags.lock().unwrap_or_else(|e| e.into_inner()))
        }
        _ => BTreeMap::new(),
    };
    let complete = etags.len() as u64 == parts;
    let finished = if complete {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in &etags {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                etag.replace('&', "&amp;").replace('"', "&quot;")
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        conn.request(
            Method::POST,
            Some(&key),
            &[("uploadId", &upload_id)],
            &[],
            BenchBody::Bytes(Some(xml.into())),
            Expect::Text,
        )
        .await
        .and_then(|a| {
            // S3 may answer 200 and put the error in the body.
            if a.text.contains("<Error>") {
                Err(client::Error::Protocol(format!(
                    "complete: {}",
                    client::xml_value(&a.text, "Message").unwrap_or(a.text)
                )))
            } else {
                Ok(())
            }
        })
    } else {
        let _ = conn
            .request(
                Method::DELETE,
                Some(&key),
                &[("uploadId", &upload_id)],
                &[],
                BenchBody::empty(),
                Expect::Discard,
            )
            .await;
        Err(client::Error::Protocol(format!(
            "{} of {parts} parts uploaded; upload aborted",
            etags.len()
        )))
    };
    if let Err(e) = &finished {
        record.failure(format!("complete multipart upload: {e}"), false);
    }
    let mut put = record.summary("mp-put", start.elapsed());
    put.note = Some(format!(
        "1 object of {} in {parts} parts of {}",
        human(size),
        human(part_size)
    ));
    if finished.is_err() {
        return vec![put];
    }

    let job = Arc::new(Job::GetRange {
        key,
        content,
        part_size,
    });
    let (record, elapsed) = drive(settings, "mp-get", parts, settings.concurrency, job).await;
    let mut get = record.summary("mp-get", elapsed);
    get.note = Some(format!(
        "{parts} ranged GETs of {}, verified",
        human(part_size)
    ));
    vec![put, get]
}

/// Writes `list_keys` empty objects, then lists them `list_passes` times in pages of
/// 1000, checking every key arrives once and in order.
async fn list_phase(settings: &Settings) -> Vec<Summary> {
    let (mut fill, _) = put_phase(settings, "list-fill", "list/", 0, settings.list_keys).await;
    fill.note = Some(format!("{} empty objects", settings.list_keys));
    let prefix = format!("{}list/", settings.prefix);
    let mut conn = Connection::new(Arc::clone(&settings.target));
    let mut record = Recorder::default();
    let mut keys_listed = 0u64;
    let start = Instant::now();
    let deadline = settings.duration.map(|d| start + d);
    let progress = Arc::new(Progress::default());
    let _ticker = Ticker::start(
        settings,
        "list",
        settings.list_passes * settings.list_keys.div_ceil(LIST_PAGE as u64),
        Arc::clone(&progress),
    );
    'passes: for _ in 0..settings.list_passes {
        let mut token: Option<String> = None;
        let mut expected = 0u64;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break 'passes;
            }
            let max_keys = LIST_PAGE.to_string();
            let mut query = vec![
                ("list-type", "2"),
                ("prefix", prefix.as_str()),
                ("max-keys", max_keys.as_str()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let t0 = Instant::now();
            let page = conn
                .request(
                    Method::GET,
                    None,
                    &query,
                    &[],
                    BenchBody::empty(),
                    Expect::Text,
                )
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    record.failure(e.to_string(), false);
                    progress.add(false, 0);
                    continue 'passes;
                }
            };
            let keys = client::xml_values(&page.text, "Key");
            // Every key once, in order: a listing that skips or repeats is an error.
            let mut wrong = None;
            for k in &keys {
                if *k != object_key(&prefix, expected) {
                    wrong = Some(format!(
                        "listing: expected {} got {k}",
                        object_key(&prefix, expected)
                    ));
                    break;
                }
                expected += 1;
            }
            if let Some(w) = wrong {
                record.failure(w, true);
                progress.add(false, 0);
                continue 'passes;
            }
            record.success(t0.elapsed(), page.received);
            progress.add(true, page.received);
            keys_listed += keys.len() as u64;
            let truncated = client::xml_value(&page.text, "IsTruncated").as_deref() == Some("true");
            token = client::xml_value(&page.text, "NextContinuationToken");
            if !truncated || token.is_none() {
                if expected != settings.list_keys {
                    record.failure(
                        format!(
                            "listing ended after {expected} of {} keys",
                            settings.list_keys
                        ),
                        true,
                    );
                }
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let mut list = record.summary("list", elapsed);
    list.note = Some(format!(
        "{:.0} keys/s, {} pages of {LIST_PAGE}",
        keys_listed as f64 / elapsed.as_secs_f64().max(1e-9),
        list.ops
    ));
    vec![fill, list]
}

/// `64 MiB`, `4 KiB`, `100 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    for (unit, scale) in UNITS {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{} {unit}", bytes / scale);
        }
    }
    if bytes == 0 {
        return "0 B".into();
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1000), "1000 B");
        assert_eq!(human(10 << 30), "10 GiB");
    }

    #[test]
    fn the_mixed_phase_is_seventy_thirty() {
        let gets = (0..10_000u64).filter(|&i| mix(i) % 10 < 7).count();
        assert!((6800..7200).contains(&gets), "{gets}");
    }
}
