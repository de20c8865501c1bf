//! The shim and the agent-side runtime, with real processes, signals and files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_agent::logs::{LogQuery, read_log};
use ferry_agent::procfs::ProcId;
use ferry_agent::runtime::{
    self, AttemptState, ExitRecord, MountMode, MountSpec, ShimCommand, ShimSpec, StateRecord,
};
use nix::sys::signal::Signal;

/// A temporary directory whose containers are killed when the test ends, passed or failed.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.0.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let state: Option<StateRecord> = runtime::read_json(&entry.path().join("state.json"))
                .ok()
                .flatten();
            if let Some(state) = state {
                let _ = runtime::signal(&state, Signal::SIGKILL);
            }
        }
    }
}

fn tempdir() -> Scratch {
    Scratch(tempfile::tempdir().unwrap())
}

fn shim() -> ShimCommand {
    ShimCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_ferry-agent-shim")),
        args: vec![],
    }
}

fn spec(script: &str, workdir: &Path) -> ShimSpec {
    ShimSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            ),
            ("GREETING".into(), "hello from env".into()),
        ],
        working_dir: workdir.to_path_buf(),
        mounts: vec![],
        mount_mode: MountMode::Auto,
        run_as_user: None,
        run_as_group: None,
        ..Default::default()
    }
}

async fn wait_exited(dir: &Path, state: AttemptState) -> ExitRecord {
    let shim = match state {
        AttemptState::Exited(e) => return e,
        AttemptState::Running(s) => s.shim,
        AttemptState::Starting { shim } => shim,
        AttemptState::NotStarted => panic!("not started"),
    };
    tokio::time::timeout(Duration::from_secs(30), runtime::wait_exit(shim))
        .await
        .expect("the container should end");
    match runtime::inspect(dir).unwrap() {
        AttemptState::Exited(e) => e,
        other => panic!("expected an exit record, got {other:?}"),
    }
}

fn running(state: &AttemptState) -> StateRecord {
    match state {
        AttemptState::Running(s) => s.clone(),
        other => panic!("expected a running container, got {other:?}"),
    }
}

#[tokio::test]
async fn runs_a_process_and_records_output_and_exit_code() {
    let tmp = tempdir();
    let dir = tmp.path().join("attempt");
    let script = "echo err-line >&2; sleep 0.2; echo out-line; echo \"$GREETING in $(pwd)\"; printf no-newline; exit 3";
    let state = runtime::start(&shim(), &dir, &spec(script, tmp.path()))
        .await
        .unwrap();
    let exit = wait_exited(&dir, state).await;
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.reason, "Error");
    assert!(exit.started_at.unwrap() <= exit.finished_at);

    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(
        log.lines().any(|l| l.ends_with(" stdout F out-line")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.ends_with(" stderr F err-line")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.ends_with(" stdout P no-newline")),
        "{log}"
    );
    let served = read_log(&dir.join("log"), LogQuery::default())
        .await
        .unwrap();
    let served = String::from_utf8(served).unwrap();
    assert!(
        served.contains(&format!("hello from env in {}\n", tmp.path().display())),
        "{served}"
    );
    let stamped = read_log(
        &dir.join("log"),
        LogQuery {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let stamped = String::from_utf8(stamped).unwrap();
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{stamped}");
    assert_eq!(rest, "no-newline");
}

#[tokio::test]
async fn a_missing_program_is_a_start_error() {
    let tmp = tempdir();
    let dir = tmp.path().join("attempt");
    let mut s = spec("", tmp.path());
    s.argv = vec!["/no/such/program".into()];
    let state = runtime::start(&shim(), &dir, &s).await.unwrap();
    let exit = wait_exited(&dir, state).await;
    assert_eq!(exit.exit_code, 128);
    assert_eq!(exit.reason, "StartError");
    assert!(exit.message.unwrap().contains("/no/such/program"));
    let again = runtime::start(&shim(), &dir, &s).await;
    assert!(again.is_err(), "an attempt directory is never reused");

    // A shim that cannot be run at all is recorded as a start error too.
    let dir = tmp.path().join("no-shim");
    let missing = ShimCommand {
        program: "/no/such/shim".into(),
        args: vec![],
    };
    let AttemptState::Exited(exit) = runtime::start(&missing, &dir, &s).await.unwrap() else {
        panic!("expected a start error");
    };
    assert_eq!(exit.reason, "StartError");
    assert!(exit.message.unwrap().contains("/no/such/shim"));
}

#[tokio::test]
async fn sigterm_ends_a_cooperative_process_and_sigkill_a_stubborn_one() {
    let tmp = tempdir();
    // Cooperative: the default SIGTERM action ends it (exit 143).
    let dir = tmp.path().join("polite");
    let state = runtime::start(&shim(), &dir, &spec("sleep 300", tmp.path()))
        .await
        .unwrap();
    let rec = running(&state);
    assert!(rec.container.is_alive());
    runtime::signal(&rec, Signal::SIGTERM).unwrap();
    let exit = wait_exited(&dir, state).await;
    assert_eq!(exit.exit_code, 143, "{exit:?}");
    assert!(!rec.container.is_alive());

    // Stubborn: ignores SIGTERM, so only SIGKILL ends it (exit 137).
    let dir = tmp.path().join("stubborn");
    let script = "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done";
    let state = runtime::start(&shim(), &dir, &spec(script, tmp.path()))
        .await
        .unwrap();
    let rec = running(&state);
    wait_for_log(&dir, "ready").await;
    runtime::signal(&rec, Signal::SIGTERM).unwrap();
    wait_for_log(&dir, "got TERM").await;
    assert!(
        rec.container.is_alive(),
        "a trapped SIGTERM must not end it"
    );
    runtime::signal(&rec, Signal::SIGKILL).unwrap();
    let exit = wait_exited(&dir, state).await;
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
}

async fn wait_for_log(dir: &Path, needle: &str) {
    for _ in 0..300 {
        if std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{needle:?} never appeared in the log");
}

#[tokio::test]
async fn the_shim_is_detached_and_cleans_up_leftover_processes() {
    let tmp = tempdir();
    let dir = tmp.path().join("attempt");
    let pidfile = tmp.path().join("bg.pid");
    let script = format!(
        "sleep 300 & echo $! > {pf}; setsid sleep 301 & sleep 0.2; echo started; sleep 0.5",
        pf = pidfile.display()
    );
    let state = runtime::start(&shim(), &dir, &spec(&script, tmp.path()))
        .await
        .unwrap();
    let rec = running(&state);
    // Not our child, not in our session: the shim survives the agent.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", rec.shim.pid)).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (ppid, sid): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id() as i32);
    assert_eq!(sid, rec.shim.pid, "the shim leads its own session");
    let exit = wait_exited(&dir, state).await;
    assert_eq!(exit.exit_code, 0);
    let bg: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = ProcId::of(bg).map(|p| !p.is_alive()).unwrap_or(true);
    assert!(
        gone,
        "a background process of the container must not outlive it"
    );
}

#[tokio::test]
async fn state_is_recovered_from_disk_alone() {
    let tmp = tempdir();
    let dir = tmp.path().join("attempt");
    let state = runtime::start(&shim(), &dir, &spec("sleep 300", tmp.path()))
        .await
        .unwrap();
    let rec = running(&state);
    // A second reader (a restarted agent) sees the same process, not a new one.
    let again = runtime::inspect(&dir).unwrap();
    assert_eq!(running(&again), rec);
    runtime::signal(&rec, Signal::SIGKILL).unwrap();
    let exit = wait_exited(&dir, again).await;
    assert_eq!(exit.exit_code, 137);
    assert_eq!(runtime::inspect(&dir).unwrap(), AttemptState::Exited(exit));
}

#[tokio::test]
async fn volumes_appear_at_their_mount_paths() {
    let tmp = tempdir();
    let vol = tmp.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("greeting.txt"), "hi from the volume\n").unwrap();
    let mount_path = tmp.path().join("mnt/data");
    let dir = tmp.path().join("attempt");
    let mut s = spec(
        &format!("cat {}/greeting.txt", mount_path.display()),
        tmp.path(),
    );
    s.mounts = vec![MountSpec {
        source: vol.clone(),
        target: mount_path.clone(),
        read_only: true,
    }];
    let state = runtime::start(&shim(), &dir, &s).await.unwrap();
    let mode = match &state {
        AttemptState::Running(r) => r.mounts.mode.clone(),
        _ => String::new(),
    };
    let exit = wait_exited(&dir, state).await;
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    let out = String::from_utf8(
        read_log(&dir.join("log"), LogQuery::default())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out, "hi from the volume\n");
    println!("mount mode: {mode}");
    if mode == "namespace" {
        // The bind mount was private to the container: the host sees an empty mount point.
        assert!(std::fs::read_dir(&mount_path).unwrap().next().is_none());
        // And read-only was enforced.
        let dir = tmp.path().join("attempt-ro");
        let s = ShimSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("echo x > {}/new.txt", mount_path.display()),
            ],
            ..s.clone()
        };
        let state = runtime::start(&shim(), &dir, &s).await.unwrap();
        assert_ne!(
            wait_exited(&dir, state).await.exit_code,
            0,
            "a readOnly mount must refuse writes"
        );
        assert!(!vol.join("new.txt").exists());
    } else {
        println!(
            "mount namespaces unavailable here (mode {mode:?}): checked the symlink fallback only"
        );
    }
}
