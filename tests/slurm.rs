//! A suite sharded over a real Slurm cluster: one node on localhost (Debian's `slurm-wlm` and
//! `munge`, started here with a generated configuration and stopped by their pids). The job is
//! what `bench --emit slurm` writes (the README shows the same text); one array task is requeued
//! in the middle of a case and resumes; the merged results hold every case exactly once.
//!
//! Where Slurm is not installed the test is skipped with a message, except under `CI=true`
//! (`.ci/run` installs it). Where it is installed but the daemons cannot start, the test fails
//! saying why, unless `GEMMA_FIT_SKIP_SLURM=1`.
//!
//! Also here: the Kubernetes and GitHub Actions files `--emit` writes, parsed as YAML.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn gemma_fit() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("gemma-fit").unwrap()
}

/// What `bench SUITE --emit KIND --shards N` prints, run in `dir`.
fn emit_in(dir: &Path, suite: &str, kind: &str, shards: usize) -> String {
    let out = gemma_fit()
        .current_dir(dir)
        .args([
            "bench",
            suite,
            "--emit",
            kind,
            "--shards",
            &shards.to_string(),
        ])
        .assert()
        .success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

fn emit(suite: &str, kind: &str, shards: usize) -> String {
    emit_in(Path::new(env!("CARGO_MANIFEST_DIR")), suite, kind, shards)
}

/// The README shows what `bench ci --emit slurm --shards 4` prints, word for word: the recipe
/// has one source.
#[test]
fn the_readme_shows_the_emitted_slurm_script() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let script = emit("ci", "slurm", 4);
    assert!(
        readme.contains(&script),
        "README.md's scale-out section should hold `gemma-fit bench ci --emit slurm --shards 4`'s output:\n{script}"
    );
}

#[test]
fn the_kubernetes_and_github_files_parse_and_number_the_shards_from_one() {
    let k8s = emit("ci", "k8s", 5);
    let doc = &yaml_rust2::YamlLoader::load_from_str(&k8s).unwrap()[0];
    let spec = &doc["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    assert_eq!(spec["completions"].as_i64(), Some(5));
    let args = spec["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(
        args.contains("--shard \"$((JOB_COMPLETION_INDEX + 1))/5\""),
        "{args}"
    );
    // The command the container runs, as sh would split it: the index expression expands to
    // 1..5 for the pods' 0..4.
    for index in 0..5 {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("JOB_COMPLETION_INDEX={index}; echo \"$((JOB_COMPLETION_INDEX + 1))/5\""),
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{}/5", index + 1)
        );
    }

    let gh = emit("ci", "github", 3);
    let doc = &yaml_rust2::YamlLoader::load_from_str(&gh).unwrap()[0];
    let bench = &doc["jobs"]["bench"];
    let shards: Vec<i64> = bench["strategy"]["matrix"]["shard"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(shards, [1, 2, 3]);
    let runs: Vec<&str> = bench["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("--shard \"${{ matrix.shard }}/3\"")),
        "{runs:?}"
    );
    let report = &doc["jobs"]["report"];
    assert_eq!(report["needs"].as_str(), Some("bench"));
}

/// The daemons of a one-node cluster, stopped (by their pids) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Cluster {
    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn slurm(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// Starts munged, slurmctld and slurmd on localhost; Err says why they could not start.
    fn start() -> Result<Cluster, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("slurmd must run as root to start jobs as their user; this test runs as another user".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let key = d.join("munge.key");
        let bytes: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&key, bytes).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let run = |program: &str, args: &[String]| -> Result<(), String> {
            let out = Command::new(program)
                .args(args)
                .env("SLURM_CONF", d.join("slurm.conf"))
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("{program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let path = |name: &str| d.join(name).display().to_string();
        run(
            "munged",
            &[
                "--force".into(),
                format!("--key-file={}", path("munge.key")),
                format!("--socket={}", path("munge.sock")),
                format!("--pid-file={}", path("munged.pid")),
                format!("--log-file={}", path("munged.log")),
                format!("--seed-file={}", path("munge.seed")),
            ],
        )?;
        let host = String::from_utf8(
            Command::new("hostname")
                .arg("-s")
                .output()
                .map_err(|e| e.to_string())?
                .stdout,
        )
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| e.to_string())
        };
        let (ctld_port, d_port) = (port()?, port()?);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = d.join("slurm.conf");
        std::fs::create_dir_all(d.join("state")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(d.join("spool")).map_err(|e| e.to_string())?;
        std::fs::write(
            &conf,
            format!(
                "ClusterName=gemmafit\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\n\
                 SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\n\
                 AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={sock}\n\
                 StateSaveLocation={state}\nSlurmdSpoolDir={spool}\n\
                 SlurmctldPidFile={ctld_pid}\nSlurmdPidFile={d_pid}\n\
                 SlurmctldLogFile={ctld_log}\nSlurmdLogFile={d_log}\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
                 SchedulerType=sched/builtin\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
                 ReturnToService=2\nMpiDefault=none\nKillWait=5\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
                sock = path("munge.sock"),
                state = path("state"),
                spool = path("spool"),
                ctld_pid = path("slurmctld.pid"),
                d_pid = path("slurmd.pid"),
                ctld_log = path("slurmctld.log"),
                d_log = path("slurmd.log"),
            ),
        )
        .map_err(|e| e.to_string())?;
        let cluster = Cluster { dir, conf };
        let conf_arg = cluster.conf.display().to_string();
        run("slurmctld", &["-f".into(), conf_arg.clone()])
            .map_err(|e| format!("{e}\nslurmctld.log:\n{}", cluster.log("slurmctld")))?;
        run("slurmd", &["-f".into(), conf_arg])
            .map_err(|e| format!("{e}\nslurmd.log:\n{}", cluster.log("slurmd")))?;
        // The node must come up idle.
        let start = Instant::now();
        loop {
            let out = cluster
                .slurm("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .map_err(|e| e.to_string())?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "idle" {
                return Ok(cluster);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "the node did not come up (sinfo: '{state}' {})\nslurmctld.log:\n{}\nslurmd.log:\n{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    cluster.log("slurmctld"),
                    cluster.log("slurmd")
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for name in ["slurmd", "slurmctld", "munged"] {
            if let Some(pid) = self.pid(name) {
                // SAFETY: kill has no memory preconditions; the pid is the daemon's own.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let start = Instant::now();
                // SAFETY: as above, signal 0 only checks that the process exists.
                while unsafe { libc::kill(pid, 0) } == 0
                    && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The records of a results file as JSON values, and how many lines did not parse.
fn records(path: &Path) -> (Vec<serde_json::Value>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ok = Vec::new();
    let mut cut = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => ok.push(v),
            Err(_) => cut += 1,
        }
    }
    (ok, cut)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn a_suite_sharded_over_slurm_merges_into_every_case_once() {
    if common::which("slurmctld").is_none() || common::which("munged").is_none() {
        common::missing(
            "Slurm test: slurmctld or munged not installed (apt-get install slurm-wlm munge)",
        );
        return;
    }
    let cluster = match Cluster::start() {
        Ok(c) => c,
        Err(why) => {
            if std::env::var("GEMMA_FIT_SKIP_SLURM").is_ok_and(|v| v == "1") {
                eprintln!(
                    "SKIPPED (GEMMA_FIT_SKIP_SLURM=1) the Slurm daemons cannot start here: {why}"
                );
                return;
            }
            panic!(
                "the Slurm daemons cannot start here (set GEMMA_FIT_SKIP_SLURM=1 to skip): {why}"
            );
        }
    };
    let work = tempfile::tempdir().unwrap();
    let suite = work.path().join("suite.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/slurm-suite.toml"),
        &suite,
    )
    .unwrap();
    let shards = 3;
    let script = work.path().join("job.sbatch");
    std::fs::write(&script, emit_in(work.path(), "suite.toml", "slurm", shards)).unwrap();
    let submit = cluster
        .slurm("sbatch")
        .args(["--parsable"])
        .arg(&script)
        .current_dir(work.path())
        .env("GEMMA_FIT", env!("CARGO_BIN_EXE_gemma-fit"))
        .output()
        .unwrap();
    assert!(
        submit.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let job = String::from_utf8(submit.stdout).unwrap().trim().to_string();
    let dir = work.path().join("results/slurm-test");
    let shard = |k: usize| dir.join(format!("shard-{k}-of-{shards}.jsonl"));

    // Preemption: task 1 is requeued once its first case is recorded, in the middle of its
    // second, and released at once (a requeue otherwise waits two minutes to start again).
    wait_until("task 1's first record", Duration::from_secs(180), || {
        !records(&shard(1)).0.is_empty()
    });
    let requeue = cluster
        .slurm("scontrol")
        .args(["requeue", &format!("{job}_1")])
        .output()
        .unwrap();
    assert!(
        requeue.status.success(),
        "scontrol requeue: {}",
        String::from_utf8_lossy(&requeue.stderr)
    );
    assert_eq!(
        records(&shard(1)).0.len(),
        1,
        "task 1 ended before it could be requeued mid-case"
    );
    wait_until(
        "the requeued task to be pending",
        Duration::from_secs(30),
        || {
            let out = cluster
                .slurm("squeue")
                .args(["-h", "-j", &format!("{job}_1"), "-o", "%T"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("PENDING")
        },
    );
    let release = cluster
        .slurm("scontrol")
        .args(["update", &format!("JobId={job}_1"), "StartTime=now"])
        .output()
        .unwrap();
    assert!(
        release.status.success(),
        "{}",
        String::from_utf8_lossy(&release.stderr)
    );
    wait_until("every task to end", Duration::from_secs(300), || {
        let out = cluster
            .slurm("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim().is_empty()
    });

    // The requeued task ran again and resumed its file: it skipped the case it held.
    let log = std::fs::read_to_string(
        work.path()
            .join(format!("gemma-fit-slurm-test-{job}_1.log")),
    )
    .unwrap_or_default();
    assert!(
        log.contains("1 already recorded"),
        "task 1's log after the requeue:\n{log}"
    );

    // Each task ran its shard: the cases `--list --shard k/3` names, once each, and all of them
    // together are the matrix.
    let listed = |shard: Option<usize>| -> Vec<String> {
        let mut cmd = gemma_fit();
        cmd.args(["bench", suite.to_str().unwrap(), "--list"]);
        if let Some(k) = shard {
            cmd.args(["--shard", &format!("{k}/{shards}")]);
        }
        let out = cmd.assert().success();
        String::from_utf8_lossy(&out.get_output().stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    let mut keys = HashSet::new();
    let mut total = 0;
    for k in 1..=shards {
        let (recs, cut) = records(&shard(k));
        assert_eq!(
            recs.len(),
            listed(Some(k)).len(),
            "shard {k}: {recs:?} (and {cut} cut lines)"
        );
        for r in &recs {
            assert_eq!(r["outcome"]["status"], "ok", "{r}");
            assert!(
                keys.insert(r["key"].to_string()),
                "a case twice: {}",
                r["key"]
            );
        }
        total += recs.len();
    }
    assert_eq!(total, listed(None).len());

    // The merge: the folder of shard files, as `report` takes it.
    let out = work.path().join("report");
    gemma_fit()
        .arg("report")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let table = std::fs::read_to_string(out.join("fit-table.md")).unwrap();
    for ctx in ["256", "512", "1K"] {
        assert!(table.contains(ctx), "{table}");
    }
    drop(cluster);
}
