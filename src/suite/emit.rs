//! `bench SUITE --emit slurm|k8s|github --shards N`: the job file that runs a suite over N
//! machines, so nobody hand-edits one. Each scheduler numbers its tasks its own way (Slurm's
//! array 1..N, Kubernetes' completion index 0..N-1, a GitHub matrix as listed); `--shard i/n` is
//! 1-based, and each file maps its index onto it. Every shard writes
//! `results/<suite>/shard-K-of-N.jsonl` and resumes it when run again; `gemma-fit report
//! results/<suite>/` merges them.

use crate::error::{Error, Result};

/// Which scheduler's job file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// An sbatch script for a Slurm job array.
    Slurm,
    /// A Kubernetes Indexed Job manifest.
    K8s,
    /// A GitHub Actions workflow with a shard matrix and a merge job.
    Github,
}

/// What the job runs.
#[derive(Debug, Clone)]
pub struct Job {
    /// The suite as `bench` was given it (a shipped name or a path).
    pub suite: String,
    /// The suite's own name: the results folder's.
    pub name: String,
    pub shards: usize,
    /// Further `bench` flags every shard passes (`--memory-limit 24GiB`, `--threads 8`).
    pub extra: Vec<String>,
}

impl Job {
    fn dir(&self) -> String {
        format!("results/{}", self.name)
    }

    /// `bench` for the shard whose 1-based index the shell expression `index` gives.
    fn command(&self, bin: &str, index: &str) -> Result<String> {
        let quote = |s: &str| {
            shlex::try_quote(s).map(|q| q.into_owned()).map_err(|e| {
                Error::BadInput(format!("--emit: cannot quote '{s}' for a shell: {e}"))
            })
        };
        let mut words = vec![bin.to_string(), "bench".into(), quote(&self.suite)?];
        for e in &self.extra {
            words.push(quote(e)?);
        }
        let n = self.shards;
        words.push(format!("--shard \"{index}/{n}\""));
        words.push(format!(
            "--out \"{}/shard-{index}-of-{n}.jsonl\" --resume",
            self.dir()
        ));
        Ok(words.join(" "))
    }
}

/// The job file of `kind` for `job`.
pub fn render(kind: Emit, job: &Job) -> Result<String> {
    if job.name.is_empty()
        || !job
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::BadInput(format!(
            "--emit: the suite's name '{}' must be letters, digits, '-', '_' or '.' (it names the results folder and the job)",
            job.name
        )));
    }
    match kind {
        Emit::Slurm => slurm(job),
        Emit::K8s => k8s(job),
        Emit::Github => github(job),
    }
}

fn slurm(job: &Job) -> Result<String> {
    let (name, n, dir) = (&job.name, job.shards, job.dir());
    let cmd = job.command("\"${GEMMA_FIT:-gemma-fit}\"", "${SLURM_ARRAY_TASK_ID}")?;
    Ok(format!(
        "#!/bin/bash
# The suite '{name}' over {n} shards as a Slurm job array, written by
# `gemma-fit bench {suite} --emit slurm --shards {n}`.
# Submit it from the folder the results should go to: sbatch gemma-fit-{name}.sbatch
# When every task has ended, merge: gemma-fit report {dir}/
# Slurm numbers the array's tasks 1..{n}, as --shard does. Each task writes its own file and
# resumes it when run again (a requeue, or `sbatch --array=K` for task K alone): the cases it
# holds are skipped. GEMMA_FIT names the binary if it is not on the nodes' PATH; on a GPU
# partition add `#SBATCH --gres=gpu:1`.
#SBATCH --job-name=gemma-fit-{name}
#SBATCH --array=1-{n}
#SBATCH --requeue
#SBATCH --output=gemma-fit-{name}-%A_%a.log
set -eu
mkdir -p {dir}
exec {cmd}
",
        suite = job.suite,
    ))
}

fn k8s(job: &Job) -> Result<String> {
    let (name, n, dir) = (&job.name, job.shards, job.dir());
    let cmd = job.command("gemma-fit", "$((JOB_COMPLETION_INDEX + 1))")?;
    let k8s_name = format!(
        "gemma-fit-{}",
        name.to_ascii_lowercase().replace(['_', '.'], "-")
    );
    Ok(format!(
        "# The suite '{name}' over {n} shards as a Kubernetes Indexed Job, written by
# `gemma-fit bench {suite} --emit k8s --shards {n}`.
# Apply it with: kubectl apply -f gemma-fit-{name}.yaml
# The pods' completion index runs 0..{n_1}, --shard from 1: hence the + 1. Each pod writes its
# own file on the shared volume and resumes it when restarted. When the Job completes, merge:
# gemma-fit report /results/{dir}/ (from a pod that mounts the volume).
# The image needs gemma-fit on its PATH; on GPU nodes add `nvidia.com/gpu: 1` to its limits.
apiVersion: batch/v1
kind: Job
metadata:
  name: {k8s_name}
spec:
  completionMode: Indexed
  completions: {n}
  parallelism: {n}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: OnFailure
      containers:
        - name: bench
          image: gemma-fit:latest
          workingDir: /results
          command: [\"sh\", \"-c\"]
          args:
            - 'mkdir -p {dir} && exec {cmd}'
          volumeMounts:
            - name: results
              mountPath: /results
      volumes:
        - name: results
          persistentVolumeClaim:
            claimName: gemma-fit-results
",
        suite = job.suite,
        n_1 = n - 1,
        backoff = 3 * n,
        cmd = cmd.replace('\'', "''"),
    ))
}

fn github(job: &Job) -> Result<String> {
    let (name, n, dir) = (&job.name, job.shards, job.dir());
    let cmd = job.command("target/release/gemma-fit", "${{ matrix.shard }}")?;
    let shards: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    Ok(format!(
        "# The suite '{name}' over {n} shards as a GitHub Actions matrix, written by
# `gemma-fit bench {suite} --emit github --shards {n}`.
# Save it as .github/workflows/gemma-fit-{name}.yml in the gemma-fit repository and run it from
# the Actions tab. The matrix lists the shards as --shard numbers them, 1..{n}; each job uploads
# its file, and the report job merges them (gemma-fit report {dir}/) into one artifact.
# On self-hosted GPU runners, set runs-on to their labels.
name: gemma-fit {name}
on: workflow_dispatch
jobs:
  bench:
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
      matrix:
        shard: [{shards}]
    steps:
      - uses: actions/checkout@v4
      - run: cargo build --release --locked
      - run: mkdir -p {dir} && {cmd}
      - uses: actions/upload-artifact@v4
        with:
          name: shard-${{{{ matrix.shard }}}}
          path: {dir}/shard-*.jsonl
  report:
    needs: bench
    if: always()
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/download-artifact@v4
        with:
          pattern: shard-*
          path: {dir}
          merge-multiple: true
      - run: cargo run --release --locked -- report {dir}
      - uses: actions/upload-artifact@v4
        with:
          name: report
          path: {dir}
",
        suite = job.suite,
        shards = shards.join(", "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(shards: usize) -> Job {
        Job {
            suite: "suites/my suite.toml".into(),
            name: "mine".into(),
            shards,
            extra: vec!["--memory-limit".into(), "24GiB".into()],
        }
    }

    #[test]
    fn each_file_maps_its_index_onto_the_one_based_shard() {
        let s = render(Emit::Slurm, &job(8)).unwrap();
        assert!(s.contains("#SBATCH --array=1-8\n"), "{s}");
        assert!(s.contains("--shard \"${SLURM_ARRAY_TASK_ID}/8\""), "{s}");
        assert!(
            s.contains("'suites/my suite.toml' --memory-limit 24GiB"),
            "{s}"
        );
        let k = render(Emit::K8s, &job(8)).unwrap();
        assert!(
            k.contains("--shard \"$((JOB_COMPLETION_INDEX + 1))/8\""),
            "{k}"
        );
        assert!(k.contains("completions: 8\n"), "{k}");
        // The suite's quotes doubled inside the YAML single-quoted scalar.
        assert!(k.contains("''suites/my suite.toml''"), "{k}");
        let g = render(Emit::Github, &job(3)).unwrap();
        assert!(g.contains("shard: [1, 2, 3]"), "{g}");
        assert!(g.contains("--shard \"${{ matrix.shard }}/3\""), "{g}");
        assert!(g.contains("name: shard-${{ matrix.shard }}"), "{g}");
    }

    #[test]
    fn a_name_that_cannot_name_a_folder_is_refused() {
        let mut j = job(2);
        j.name = "../x".into();
        assert!(render(Emit::Slurm, &j).is_err());
    }
}
