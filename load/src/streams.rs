//! Watchers: live-statistics streams held open on the event during a run, as the thousands
//! watching an on-sale's counter. Each is read to its end: the tool keeps every stream's last
//! message, to compare with the event's final counts, and measures how long each change took
//! from its commit (`changedAt`, the database's clock) to its arrival (this machine's clock).
//!
//! Opening many streams from one machine needs more than one source address (one address
//! has about 28,000 ephemeral ports towards one server port) and more open files than the
//! usual soft limit: [`raise_nofile_limit`], and `--stream-sources` to spread the streams
//! over 127.0.0.2, 127.0.0.3, … (on Linux all of 127.0.0.0/8 is the loopback).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Client;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;

use crate::report::{Latency, latency};

/// Raises this process's soft limit of open files to its hard limit, so thousands of streams
/// can be opened; returns the soft limit now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// The loopback source address of stream `i` among `sources` (127.0.0.2 upwards), or `None`
/// (the system's choice) when `sources` is 0.
pub fn source_address(i: usize, sources: usize) -> Option<IpAddr> {
    (sources > 0).then(|| {
        let k = 2 + (i % sources) as u32;
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + k))
    })
}

/// What the watchers saw, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Streams opened (each got its snapshot).
    pub opened: usize,
    /// Loopback source addresses they were opened from: `--stream-sources`, or the number of
    /// streams if that is fewer (0: the system's choice).
    pub sources: usize,
    /// Messages received, snapshots included.
    pub messages: u64,
    /// Streams whose last message shows the event's final counts.
    pub last_message_matches: usize,
    /// The others, a few of them described.
    pub last_message_mismatches: usize,
    pub mismatch_examples: Vec<String>,
    /// The event's counts the last messages were compared with (total, available, reserved,
    /// purchased): read once the streams had gone quiet, and the same when read again just
    /// after the last messages were taken. Later changes (the sweeper expiring holds) are not
    /// in them, so the verification's counts, read after, may differ. All 0 when they could
    /// not be read (`final_counts_unread`).
    pub final_counts: [i64; 4],
    /// Why the final counts could not be read (no answer, a 5xx, 408 or 429 until
    /// `--retry-seconds` ran out: the server gone): the last messages were then compared
    /// with nothing, neither matching nor mismatching, and the verification is incomplete.
    pub final_counts_unread: Option<String>,
    /// Streams that ended or failed before the run was over (with `--reconnect-streams`:
    /// that were not open again when it was).
    pub ended_early: usize,
    /// With `--reconnect-streams`: how often a stream that ended (its server killed, say)
    /// was opened again.
    pub reconnects: u64,
    /// From a change's commit (`changedAt`) to its message's arrival, over every message
    /// that carried a change.
    pub commit_to_message_ms: Latency,
    /// The server's resident memory before the streams were opened and once all were open,
    /// and the difference per stream (with `--server-pid`).
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_open_kib: Option<u64>,
    pub server_kib_per_stream: Option<f64>,
}

/// One stream's reading: its last message's data, and each change's delay in microseconds.
#[derive(Default)]
struct Heard {
    /// The last message's `data`, as JSON text.
    last: Option<String>,
    messages: u64,
    delays_us: Vec<u64>,
    ended: bool,
    reconnects: u64,
}

/// The open streams, each read by its own task.
pub struct Watchers {
    tasks: JoinSet<()>,
    heard: Vec<Arc<Mutex<Heard>>>,
    sources: usize,
    rss_before: Option<u64>,
    rss_open: Option<u64>,
}

/// The server's resident set size in KiB, from `/proc/{pid}/status`.
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl Watchers {
    /// Opens `count` streams on the event, round robin over `urls` and over `sources`
    /// loopback addresses, and waits until each has its snapshot. `server_pid` names the
    /// server process whose memory is read before and after. With `reconnect`, a stream that
    /// ends is opened again (every 500 ms until it is), as a browser's `EventSource` does.
    pub async fn open(
        urls: &[String],
        event_id: &str,
        count: usize,
        sources: usize,
        server_pid: Option<u32>,
        reconnect: bool,
    ) -> Result<Self, String> {
        let rss_before = server_pid.and_then(resident_kib);
        // Stream i comes from address i modulo `sources`: more addresses than streams would
        // go unused, and each costs a client of its own.
        let sources = sources.min(count);
        let clients = (0..sources.max(1))
            .map(|k| {
                let mut builder = Client::builder()
                    .pool_max_idle_per_host(0)
                    .tcp_nodelay(true);
                if let Some(address) = source_address(k, sources) {
                    builder = builder.local_address(address);
                }
                builder.build().map_err(|e| crate::with_causes(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut watchers = Self {
            tasks: JoinSet::new(),
            heard: Vec::with_capacity(count),
            sources,
            rss_before,
            rss_open: None,
        };
        let (snapshots, mut snapshot_seen) = tokio::sync::mpsc::channel::<()>(count.max(1));
        for i in 0..count {
            let url = format!("{}/events/{event_id}/stream", urls[i % urls.len()]);
            let response = clients[i % clients.len()]
                .get(&url)
                .send()
                .await
                .map_err(|e| {
                    // Streams opened before it: most likely the server's limit per address,
                    // which it answers before reading the request.
                    let hint = if i > 0 {
                        " (a server refuses connections from one address past its \
                         --max-connections-per-address, 1000 by default, with 429 \
                         TOO_MANY_CONNECTIONS before reading the request: start it with a \
                         higher limit or 0, or spread the streams over more --stream-sources)"
                    } else {
                        ""
                    };
                    format!("opening stream {i}: {}{hint}", crate::with_causes(&e))
                })?;
            if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(format!(
                    "opening stream {i}: 429: the server's --max-connections-per-address \
                     (1000 by default) is reached; start it with a higher limit, or 0, or \
                     spread the streams over more --stream-sources"
                ));
            }
            if !response.status().is_success() {
                return Err(format!("opening stream {i}: {}", response.status()));
            }
            let heard = Arc::new(Mutex::new(Heard::default()));
            watchers.heard.push(heard.clone());
            let snapshots = snapshots.clone();
            let again = reconnect.then(|| (clients[i % clients.len()].clone(), url));
            watchers.tasks.spawn(async move {
                read(response, &heard, Some(&snapshots)).await;
                let Some((client, url)) = again else {
                    return;
                };
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match client.get(&url).send().await {
                        Ok(response) if response.status().is_success() => {
                            {
                                let mut heard = heard.lock().expect("a stream's record");
                                heard.ended = false;
                                heard.reconnects += 1;
                            }
                            read(response, &heard, None).await;
                        }
                        _ => {}
                    }
                }
            });
        }
        drop(snapshots);
        for _ in 0..count {
            if snapshot_seen.recv().await.is_none() {
                break;
            }
        }
        watchers.rss_open = server_pid.and_then(resident_kib);
        Ok(watchers)
    }

    /// Messages heard so far, over every stream.
    fn messages(&self) -> u64 {
        self.heard
            .iter()
            .map(|h| h.lock().expect("a stream's record").messages)
            .sum()
    }

    /// Waits until no stream has heard anything for `quiet`, or until `deadline`.
    pub async fn wait_quiet(&self, quiet: Duration, deadline: tokio::time::Instant) {
        let mut last_total = u64::MAX;
        loop {
            tokio::time::sleep(quiet).await;
            let total = self.messages();
            if total == last_total || tokio::time::Instant::now() >= deadline {
                break;
            }
            last_total = total;
        }
    }

    /// Every stream's last message as heard so far.
    pub fn last_messages(&self) -> Vec<Option<String>> {
        self.heard
            .iter()
            .map(|h| h.lock().expect("a stream's record").last.clone())
            .collect()
    }

    /// Waits for the streams to go quiet, then reads the event's final counts with `read`
    /// (total, available, reserved, purchased) and takes every stream's last message; reads
    /// the counts once more, and when they moved meanwhile (the sweeper expiring holds after
    /// the run, another seller) waits and does it all again, up to `limit`. Then closes the
    /// streams and compares each one's last message with the counts that held still around
    /// it, so a change after the run is compared, not blamed on the streams. When `read`
    /// fails, the streams are closed all the same and the report says why in
    /// [`StreamReport::final_counts_unread`], so that the run's figures are still reported.
    pub async fn finish<F, R>(self, mut read: F, quiet: Duration, limit: Duration) -> StreamReport
    where
        F: FnMut() -> R,
        R: Future<Output = Result<[i64; 4], String>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        let read_quiet = async {
            loop {
                self.wait_quiet(quiet, deadline).await;
                let before = read().await?;
                let lasts = self.last_messages();
                let after = read().await?;
                if before == after || tokio::time::Instant::now() >= deadline {
                    break Ok::<_, String>((after, lasts));
                }
            }
        };
        let read = read_quiet.await;
        match read {
            Ok((counts, lasts)) => self.close(Ok(counts), &lasts).await,
            Err(unread) => self.close(Err(unread), &[]).await,
        }
    }

    /// Closes the streams and compares each one's last message, `lasts` (taken between two
    /// reads of the event that agreed), with the final `counts`; with none (`Err`: why they
    /// could not be read), compares nothing.
    async fn close(
        mut self,
        counts: Result<[i64; 4], String>,
        lasts: &[Option<String>],
    ) -> StreamReport {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}

        let (counts, unread) = match counts {
            Ok(counts) => (Some(counts), None),
            Err(unread) => (None, Some(unread)),
        };
        let mut report = StreamReport {
            opened: self.heard.len(),
            final_counts: counts.unwrap_or_default(),
            final_counts_unread: unread,
            sources: self.sources,
            server_rss_before_kib: self.rss_before,
            server_rss_open_kib: self.rss_open,
            server_kib_per_stream: match (self.rss_before, self.rss_open) {
                (Some(before), Some(open)) if !self.heard.is_empty() => {
                    Some(open.saturating_sub(before) as f64 / self.heard.len() as f64)
                }
                _ => None,
            },
            ..StreamReport::default()
        };
        let mut delays = Vec::new();
        for (i, heard) in self.heard.iter().enumerate() {
            let mut heard = heard.lock().expect("a stream's record");
            report.messages += heard.messages;
            delays.append(&mut heard.delays_us);
            if heard.ended {
                report.ended_early += 1;
            }
            report.reconnects += heard.reconnects;
            let Some(counts) = counts else {
                continue;
            };
            let last: Option<Value> = lasts[i]
                .as_deref()
                .and_then(|data| serde_json::from_str(data).ok());
            let shown = last.as_ref().map(|data| {
                let s = &data["statistics"];
                [
                    "totalTickets",
                    "remainingTickets",
                    "allocatedTickets",
                    "confirmedTickets",
                ]
                .map(|k| s[k].as_i64().unwrap_or(-1))
            });
            if shown == Some(counts) {
                report.last_message_matches += 1;
            } else {
                report.last_message_mismatches += 1;
                if report.mismatch_examples.len() < 5 {
                    let shown = match shown {
                        Some([total, available, reserved, purchased]) => format!(
                            "total {total}, available {available}, reserved {reserved}, \
                             purchased {purchased}"
                        ),
                        None => "no readable message".to_owned(),
                    };
                    let [total, available, reserved, purchased] = counts;
                    report.mismatch_examples.push(format!(
                        "stream {i} ended on {shown}; the event's final counts were total \
                         {total}, available {available}, reserved {reserved}, purchased \
                         {purchased}"
                    ));
                }
            }
        }
        delays.sort_unstable();
        report.commit_to_message_ms = latency(&delays);
        report
    }
}

/// Reads one stream until it ends, keeping its last message and each change's delay; tells
/// `snapshot` (the first opening of a stream) when its first message came.
///
/// Thousands of these run on the machine whose server they measure, so a message costs only
/// what its record needs: its `data` line is kept as text (parsed once, at the end, for the
/// comparison with the final counts), and only `changedAt` is read from it, by a search.
async fn read(
    mut response: reqwest::Response,
    heard: &Mutex<Heard>,
    snapshot: Option<&tokio::sync::mpsc::Sender<()>>,
) {
    let mut buffer = Vec::<u8>::new();
    let mut first = true;
    // A message sent for check-ins alone repeats the sale change it shows: its delay was
    // counted with the message that first carried that change.
    let mut last_change = None;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            _ => break,
        };
        let arrived = OffsetDateTime::now_utc();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let data = buffer[..end]
                .split(|b| *b == b'\n')
                .find_map(|line| line.strip_prefix(b"data:"))
                .map(|data| String::from_utf8_lossy(data).trim().to_owned());
            buffer.drain(..end + 2);
            let Some(data) = data else {
                continue; // a keep-alive comment
            };
            let change = changed_at(&data);
            let delay = change
                .filter(|changed| Some(*changed) != last_change)
                .map(|changed| (arrived - changed).whole_microseconds().max(0) as u64);
            last_change = change.or(last_change);
            {
                let mut record = heard.lock().expect("a stream's record");
                record.messages += 1;
                record.delays_us.extend(delay);
                record.last = Some(data);
            }
            if first {
                first = false;
                if let Some(snapshot) = snapshot {
                    let _ = snapshot.send(()).await;
                }
            }
        }
    }
    heard.lock().expect("a stream's record").ended = true;
    if first && let Some(snapshot) = snapshot {
        // Never had its snapshot: let the opener go on all the same.
        let _ = snapshot.send(()).await;
    }
}

/// The `changedAt` of a stats message's JSON text (`"changedAt":"<RFC 3339>"`, as the server
/// writes it, compact), found without parsing the rest.
fn changed_at(data: &str) -> Option<OffsetDateTime> {
    const FIELD: &str = "\"changedAt\":\"";
    let from = data.find(FIELD)? + FIELD.len();
    let text = &data[from..from + data[from..].find('"')?];
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Watchers that heard `lasts`, one stream each, with no task left to read them.
    fn heard(lasts: &[&str]) -> Watchers {
        let heard = lasts
            .iter()
            .map(|last| {
                Arc::new(Mutex::new(Heard {
                    last: Some((*last).to_owned()),
                    messages: 1,
                    ..Heard::default()
                }))
            })
            .collect();
        Watchers {
            tasks: JoinSet::new(),
            heard,
            sources: 0,
            rss_before: None,
            rss_open: None,
        }
    }

    #[tokio::test]
    async fn streams_whose_final_counts_cannot_be_read_are_reported_compared_with_nothing() {
        let watchers = heard(&[r#"{"statistics":{"totalTickets":5}}"#; 2]);
        let read = || async { Err::<[i64; 4], _>("reading the event back: refused".to_owned()) };
        let report = watchers
            .finish(read, Duration::from_millis(10), Duration::from_secs(1))
            .await;
        assert_eq!(report.opened, 2);
        assert_eq!(report.messages, 2);
        assert_eq!(
            report.final_counts_unread.as_deref(),
            Some("reading the event back: refused")
        );
        assert_eq!(
            (report.last_message_matches, report.last_message_mismatches),
            (0, 0)
        );
    }

    #[tokio::test]
    async fn streams_are_compared_with_the_final_counts_read() {
        let shown = r#"{"statistics":{"totalTickets":5,"remainingTickets":3,"allocatedTickets":2,"confirmedTickets":0}}"#;
        let report = heard(&[shown, r#"{"statistics":{}}"#])
            .finish(
                || async { Ok([5, 3, 2, 0]) },
                Duration::from_millis(10),
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(report.final_counts_unread, None);
        assert_eq!(report.final_counts, [5, 3, 2, 0]);
        assert_eq!(
            (report.last_message_matches, report.last_message_mismatches),
            (1, 1)
        );
    }

    #[test]
    fn changed_at_is_read_from_a_message_without_parsing_it() {
        let data = r#"{"eventId":"e","statistics":{"totalTickets":5},"changedAt":"2026-12-01T10:00:00.123456Z","lastEvent":null}"#;
        let expected = OffsetDateTime::parse("2026-12-01T10:00:00.123456Z", &Rfc3339).unwrap();
        assert_eq!(changed_at(data), Some(expected));
        assert_eq!(changed_at(r#"{"statistics":{}}"#), None);
        assert_eq!(changed_at(r#"{"changedAt":"not a time"}"#), None);
        assert_eq!(changed_at(r#"{"changedAt":"2026-12-01T10:00:00Z"#), None);
    }
}
