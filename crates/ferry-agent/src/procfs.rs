//! Process identity from `/proc`: a pid plus its start time, so that a recorded process is
//! never confused with a later one that reused its pid.

use std::io;

use serde::{Deserialize, Serialize};

/// A process, identified by pid and start time (clock ticks after boot, `/proc/PID/stat`
/// field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcId {
    /// The process id.
    pub pid: i32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `Ok(None)` when there is no such process.
pub fn stat(pid: i32) -> io::Result<Option<ProcStat>> {
    if pid <= 0 {
        return Ok(None);
    }
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ESRCH when the process vanishes between open and read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat"),
        )
    })
}

/// Parses the text of `/proc/PID/stat`. The command name may contain spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

impl ProcId {
    /// Identifies the live process `pid`.
    pub fn of(pid: i32) -> io::Result<Self> {
        match stat(pid)? {
            Some(s) => Ok(ProcId {
                pid,
                start_time: s.start_time,
            }),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no process {pid}"),
            )),
        }
    }

    /// True while this very process exists and has not exited (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        match stat(self.pid) {
            Ok(Some(s)) => s.start_time == self.start_time && s.state != 'Z' && s.state != 'X',
            _ => false,
        }
    }

    /// True while a process with this pid and start time exists, zombie or not: its pid (and
    /// process group id) cannot have been reused.
    pub fn exists(&self) -> bool {
        matches!(stat(self.pid), Ok(Some(s)) if s.start_time == self.start_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_parens_and_spaces() {
        let line = "1234 (my (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 98765);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn identifies_live_and_dead_processes() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let reused = ProcId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(
            !reused.is_alive(),
            "a different start time is a different process"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcId::of(child.id() as i32).unwrap_or(ProcId {
            pid: child.id() as i32,
            start_time: 0,
        });
        child.wait().unwrap();
        assert!(!id.is_alive());
        assert!(ProcId::of(-5).is_err());
    }
}
