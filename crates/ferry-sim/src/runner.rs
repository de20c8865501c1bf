//! Runs many experiments in parallel (one per seed × policy), with progress output.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::curves::discretise;
use crate::experiment::{PolicySetting, PreparedTrace, RunResult, run};

/// One run to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Policy and knowledge.
    pub setting: PolicySetting,
    /// Seed.
    pub seed: u64,
}

/// The jobs for every setting × seed.
pub fn jobs(settings: &[PolicySetting], seeds: &[u64]) -> Vec<Job> {
    settings
        .iter()
        .flat_map(|&setting| seeds.iter().map(move |&seed| Job { setting, seed }))
        .collect()
}

/// Runs the jobs on `threads` worker threads (0 = one per core). When `progress` is set,
/// prints one line per finished run to it. Results come back in job order.
pub fn run_all(
    prepared: &PreparedTrace,
    jobs: &[Job],
    tune_ratio: f64,
    threads: usize,
    progress: Option<&Mutex<dyn Write + Send>>,
) -> Vec<RunResult> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
    .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<RunResult>>> = Mutex::new(vec![None; jobs.len()]);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let result = run(prepared, job.setting, job.seed, tune_ratio);
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(out) = progress {
                        let u100 = discretise(&result).unallocated_pct[100];
                        let mut out = out.lock().expect("progress lock");
                        let _ = writeln!(
                            out,
                            "[{finished:>3}/{}] {:<10} {:<14} seed {:<4} unallocated@100% {:>6.2}%  failed {:>5}  {:>6.3}s  (elapsed {:.1}s)",
                            jobs.len(),
                            prepared.name,
                            job.setting.label(),
                            job.seed,
                            u100,
                            result.failed,
                            result.elapsed.as_secs_f64(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                    slots.lock().expect("results lock")[i] = Some(result);
                }
            });
        }
    });
    slots
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}
