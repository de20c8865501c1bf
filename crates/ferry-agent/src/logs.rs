//! Container log files: the on-disk format and how they are read back.
//!
//! Every container attempt writes one file in the CRI logging format the kubelet uses:
//!
//! ```text
//! 2025-01-02T03:04:05.123456789Z stdout F hello world
//! 2025-01-02T03:04:05.200000000Z stderr P first part of a very long line…
//! 2025-01-02T03:04:05.200000000Z stderr F …and its end
//! ```
//!
//! Each record is `TIMESTAMP STREAM TAG CONTENT\n`: an RFC 3339 timestamp with nanoseconds
//! taken when the shim read the bytes, `stdout` or `stderr`, `F` for a record that ends a line
//! or `P` for a partial one (lines longer than [`MAX_RECORD`] bytes, or a last line without a
//! newline), then the bytes the process wrote, without the newline.
//! Served logs ([`stream_log`]) are the concatenated contents, each full line ended by `\n`,
//! optionally prefixed with the line's timestamp (`timestamps=true`).

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// The longest content of one record; longer lines are split into partial records.
pub const MAX_RECORD: usize = 16 * 1024;

/// How often a followed log is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the bytes were read from the process.
    pub time: Timestamp,
    /// The stream they came from.
    pub stream: Stream,
    /// True for a record that does not end its line.
    pub partial: bool,
    /// The bytes, without the newline.
    pub content: &'a [u8],
}

/// Appends one record (with its trailing newline) to `out`.
pub fn format_record(
    out: &mut Vec<u8>,
    time: Timestamp,
    stream: Stream,
    partial: bool,
    content: &[u8],
) {
    out.extend_from_slice(
        format!(
            "{time:.9} {} {} ",
            stream.as_str(),
            if partial { 'P' } else { 'F' }
        )
        .as_bytes(),
    );
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Parses one record (a file line without its newline); `None` for a malformed line.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"");
    Some(Record {
        time,
        stream,
        partial,
        content,
    })
}

/// Splits the bytes a process wrote into records, carrying an unfinished line between calls.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `emit(content, partial)` for every finished record.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.pending.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    self.flush_long(&mut emit);
                    emit(&self.pending, false);
                    self.pending.clear();
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                    self.flush_long(&mut emit);
                }
            }
        }
    }

    /// Emits whole [`MAX_RECORD`] chunks of an over-long pending line as partial records.
    fn flush_long(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        while self.pending.len() > MAX_RECORD {
            let rest = self.pending.split_off(MAX_RECORD);
            emit(&self.pending, true);
            self.pending = rest;
        }
    }

    /// At end of stream: emits an unfinished last line as a partial record.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, true);
            self.pending.clear();
        }
    }
}

/// What part of a log to serve, and how (the kubelet's `containerLogs` query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep streaming new output until the container ends.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// Turns records into served text, tracking line starts for timestamp prefixes.
struct Renderer {
    timestamps: bool,
    since: Option<Timestamp>,
    at_line_start: bool,
    remaining: Option<u64>,
}

impl Renderer {
    /// Renders one file line into `out`; returns false once the byte limit is reached.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(rec) = parse_record(line) else {
            return true;
        };
        if let Some(since) = self.since
            && rec.time < since
        {
            return true;
        }
        let start = out.len();
        if self.timestamps && self.at_line_start {
            out.extend_from_slice(format!("{:.9} ", rec.time).as_bytes());
        }
        out.extend_from_slice(rec.content);
        if !rec.partial {
            out.push(b'\n');
        }
        self.at_line_start = !rec.partial;
        if let Some(remaining) = &mut self.remaining {
            let added = (out.len() - start) as u64;
            if added >= *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
                return false;
            }
            *remaining -= added;
        }
        true
    }
}

/// Offset of the start of the `n`-th last line of the log file (0 when it has fewer lines).
async fn tail_offset(file: &mut tokio::fs::File, len: u64, n: u64) -> io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    const CHUNK: u64 = 64 * 1024;
    let mut pos = len;
    let mut region: Vec<u8> = Vec::new();
    loop {
        let step = CHUNK.min(pos);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(pos)).await?;
        file.read_exact(&mut chunk).await?;
        chunk.extend_from_slice(&region);
        region = chunk;
        // Records wholly inside the region: skip a possibly cut first line unless at the start.
        let mut offset = 0usize;
        if pos > 0 {
            match region.iter().position(|&b| b == b'\n') {
                Some(nl) => offset = nl + 1,
                None => continue,
            }
        }
        let mut line_starts: Vec<u64> = Vec::new();
        let mut previous_ended_line = pos == 0;
        let mut cursor = offset;
        while cursor < region.len() {
            let end = region[cursor..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(region.len(), |p| cursor + p);
            let line = &region[cursor..end];
            if previous_ended_line {
                line_starts.push(pos + cursor as u64);
            }
            previous_ended_line = parse_record(line).is_none_or(|r| !r.partial);
            cursor = end + 1;
        }
        if line_starts.len() as u64 >= n {
            return Ok(line_starts[line_starts.len() - n as usize]);
        }
        if pos == 0 {
            return Ok(0);
        }
    }
}

/// Streams one log file as served text into `tx`.
///
/// Without `follow` it stops at the end of the file. With `follow` it keeps reading new
/// records until `finished()` returns true (the container ended) and the file is drained, or
/// until the receiver is dropped (the client went away).
pub async fn stream_log(
    path: PathBuf,
    query: LogQuery,
    finished: impl Fn() -> bool + Send,
    tx: mpsc::Sender<Vec<u8>>,
) -> io::Result<()> {
    let mut file = tokio::fs::File::open(&path).await?;
    let len = file.metadata().await?.len();
    let mut pos = match query.tail_lines {
        Some(n) => tail_offset(&mut file, len, n).await?,
        None => 0,
    };
    file.seek(SeekFrom::Start(pos)).await?;
    let mut renderer = Renderer {
        timestamps: query.timestamps,
        since: query.since,
        at_line_start: true,
        remaining: query.limit_bytes,
    };
    if renderer.remaining == Some(0) {
        return Ok(());
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut drained_after_finish = false;
    loop {
        let n = file.read(&mut buf).await?;
        if n > 0 {
            pos += n as u64;
            pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            let mut keep_going = true;
            let mut consumed = 0;
            while let Some(nl) = pending[consumed..].iter().position(|&b| b == b'\n') {
                let line = &pending[consumed..consumed + nl];
                consumed += nl + 1;
                if !renderer.line(line, &mut out) {
                    keep_going = false;
                    break;
                }
            }
            pending.drain(..consumed);
            if !out.is_empty() && tx.send(out).await.is_err() {
                return Ok(());
            }
            if !keep_going {
                return Ok(());
            }
            continue;
        }
        // End of file for now.
        if !query.follow || drained_after_finish {
            return Ok(());
        }
        if finished() {
            // One more read picks up whatever was written before the exit was recorded.
            drained_after_finish = true;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
        }
        // The file may have been truncated or replaced; never read past a shrunken end.
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.len() < pos
        {
            return Ok(());
        }
    }
}

/// Reads a whole log (no follow) as served text; for tests and small tools.
pub async fn read_log(path: &Path, query: LogQuery) -> io::Result<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel(16);
    let query = LogQuery {
        follow: false,
        ..query
    };
    let path = path.to_path_buf();
    let reader = tokio::spawn(async move { stream_log(path, query, || true, tx).await });
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    reader.await.map_err(io::Error::other)??;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        format_record(
            &mut out,
            ts("2025-01-02T03:04:05.1Z"),
            Stream::Stderr,
            true,
            b"a b c",
        );
        assert_eq!(out, b"2025-01-02T03:04:05.100000000Z stderr P a b c\n");
        let rec = parse_record(&out[..out.len() - 1]).unwrap();
        assert_eq!(rec.stream, Stream::Stderr);
        assert!(rec.partial);
        assert_eq!(rec.content, b"a b c");
        assert_eq!(rec.time, ts("2025-01-02T03:04:05.1Z"));
        let empty = parse_record(b"2025-01-02T03:04:05Z stdout F ").unwrap();
        assert_eq!(empty.content, b"");
        assert!(parse_record(b"not a record").is_none());
        assert!(parse_record(b"2025-01-02T03:04:05Z stdin F x").is_none());
    }

    #[test]
    fn splitter_handles_chunks_long_lines_and_unfinished_ends() {
        let mut s = LineSplitter::default();
        let mut got: Vec<(Vec<u8>, bool)> = Vec::new();
        s.push(b"hel", |c, p| got.push((c.to_vec(), p)));
        s.push(b"lo\nwor", |c, p| got.push((c.to_vec(), p)));
        s.push(b"ld\n\n", |c, p| got.push((c.to_vec(), p)));
        let long = vec![b'x'; MAX_RECORD * 2 + 5];
        s.push(&long, |c, p| got.push((c.to_vec(), p)));
        s.push(b"\ntail", |c, p| got.push((c.to_vec(), p)));
        s.finish(|c, p| got.push((c.to_vec(), p)));
        let shape: Vec<(usize, bool)> = got.iter().map(|(c, p)| (c.len(), *p)).collect();
        assert_eq!(
            shape,
            vec![
                (5, false),
                (5, false),
                (0, false),
                (MAX_RECORD, true),
                (MAX_RECORD, true),
                (5, false),
                (4, true)
            ]
        );
        assert_eq!(got[0].0, b"hello");
        assert_eq!(got[1].0, b"world");
    }

    async fn write_log(lines: &[(&str, &str, bool, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut out = Vec::new();
        for (t, stream, partial, content) in lines {
            let stream = if *stream == "stdout" {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            format_record(&mut out, ts(t), stream, *partial, content.as_bytes());
        }
        std::fs::write(&path, out).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn serves_tail_since_timestamps_and_limits() {
        let (_d, path) = write_log(&[
            ("2025-01-01T00:00:01Z", "stdout", false, "one"),
            ("2025-01-01T00:00:02Z", "stderr", true, "tw"),
            ("2025-01-01T00:00:02.5Z", "stderr", false, "o"),
            ("2025-01-01T00:00:03Z", "stdout", false, "three"),
        ])
        .await;
        let all = read_log(&path, LogQuery::default()).await.unwrap();
        assert_eq!(all, b"one\ntwo\nthree\n");
        let tail2 = read_log(
            &path,
            LogQuery {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            tail2, b"two\nthree\n",
            "a line split in partial records counts once"
        );
        let tail9 = read_log(
            &path,
            LogQuery {
                tail_lines: Some(9),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(tail9, all);
        let tail0 = read_log(
            &path,
            LogQuery {
                tail_lines: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(tail0, b"");
        let stamped = read_log(
            &path,
            LogQuery {
                timestamps: true,
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(stamped).unwrap(),
            "2025-01-01T00:00:02.000000000Z two\n2025-01-01T00:00:03.000000000Z three\n"
        );
        let since = read_log(
            &path,
            LogQuery {
                since: Some(ts("2025-01-01T00:00:02.9Z")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(since, b"three\n");
        let limited = read_log(
            &path,
            LogQuery {
                limit_bytes: Some(6),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(limited, b"one\ntw");
    }

    #[tokio::test]
    async fn tail_works_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut out = Vec::new();
        for i in 0..20_000 {
            format_record(
                &mut out,
                ts("2025-01-01T00:00:00Z"),
                Stream::Stdout,
                false,
                format!("line {i}").as_bytes(),
            );
        }
        std::fs::write(&path, out).unwrap();
        let tail = read_log(
            &path,
            LogQuery {
                tail_lines: Some(3000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let text = String::from_utf8(tail).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3000);
        assert_eq!(lines[0], "line 17000");
        assert_eq!(lines[2999], "line 19999");
    }

    #[tokio::test]
    async fn follow_streams_growth_until_finished() {
        let (_d, path) = write_log(&[("2025-01-01T00:00:01Z", "stdout", false, "first")]).await;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel(16);
        let flag = done.clone();
        let reader = tokio::spawn(stream_log(
            path.clone(),
            LogQuery {
                follow: true,
                ..Default::default()
            },
            move || flag.load(std::sync::atomic::Ordering::SeqCst),
            tx,
        ));
        assert_eq!(rx.recv().await.unwrap(), b"first\n");
        let mut more = Vec::new();
        format_record(
            &mut more,
            ts("2025-01-01T00:00:02Z"),
            Stream::Stdout,
            false,
            b"second",
        );
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(&more).unwrap();
        }
        assert_eq!(rx.recv().await.unwrap(), b"second\n");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            rx.recv().await.is_none(),
            "the stream ends once the container finished"
        );
        reader.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_stops_when_the_client_goes_away() {
        let (_d, path) = write_log(&[("2025-01-01T00:00:01Z", "stdout", false, "x")]).await;
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(stream_log(
            path,
            LogQuery {
                follow: true,
                ..Default::default()
            },
            || false,
            tx,
        ));
        assert_eq!(rx.recv().await.unwrap(), b"x\n");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("reader must notice the closed channel")
            .unwrap()
            .unwrap();
    }
}
