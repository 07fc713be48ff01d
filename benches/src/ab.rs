//! `anning-bench ab`: two builds of a command compared by alternating runs.
//!
//! This machine's speed moves by up to 2× within an hour, so a best-of-3 figure taken an
//! hour apart cannot tell a change of a few percent from the host. Every round in
//! `benches/README.md` was instead measured with the two binaries run in turn, pair by pair,
//! on the same input: drift then lands on both sides of a pair. This harness does that and
//! reports what the README quotes: the medians, the paired differences with a
//! distribution-free interval, and whether the two builds wrote the same output.
//!
//! ```text
//! anning-bench ab [--pairs N] [--warmup K] [--any-output] BIN_A BIN_B -- ARG...
//! ```
//!
//! Each run is `BIN ARG...` with `{out}` in an argument replaced by a file of that run's
//! own. The order alternates (A B, B A, A B, …) so that a steady drift in the host's speed
//! does not favour the side that runs first. Wall time comes from the clock around each
//! run, CPU time and peak RSS from `wait4`'s resource usage of that child alone.
//!
//! Every run's output is compared byte for byte with its build's first: a build whose output
//! changes from run to run is not deterministic, and the command fails at once. Then the two
//! builds' outputs are compared: if they differ the report says so and the command fails,
//! unless `--any-output` (two builds meant to differ). A run that exits non-zero fails the
//! command at once, naming the build and the status.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// What one run cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Seconds from spawn to reaping.
    pub wall: f64,
    /// User plus system CPU seconds of the child.
    pub cpu: f64,
    /// The child's peak resident set, bytes.
    pub max_rss: u64,
}

/// The options of one comparison.
#[derive(Debug, Clone)]
pub struct Plan {
    pub a: PathBuf,
    pub b: PathBuf,
    pub args: Vec<OsString>,
    pub pairs: usize,
    pub warmup: usize,
    /// Whether outputs may differ between the builds (each build must still agree with
    /// itself from run to run).
    pub any_output: bool,
}

const USAGE: &str =
    "usage: anning-bench ab [--pairs N] [--warmup K] [--any-output] BIN_A BIN_B -- ARG... ({out} in an ARG: a file of each run's own)";

impl Plan {
    pub fn parse(args: &[String]) -> Result<Plan> {
        let (mut pairs, mut warmup, mut any_output) = (8usize, 1usize, false);
        let mut bins = Vec::new();
        let mut it = args.iter();
        let mut rest = None;
        while let Some(a) = it.next() {
            match a.as_str() {
                "--pairs" => pairs = it.next().context(USAGE)?.parse().context("--pairs: a count of pairs")?,
                "--warmup" => warmup = it.next().context(USAGE)?.parse().context("--warmup: a count of runs")?,
                "--any-output" => any_output = true,
                "--" => {
                    rest = Some(it.by_ref().map(OsString::from).collect::<Vec<_>>());
                    break;
                }
                s if s.starts_with("--") => bail!("unknown option {s}\n{USAGE}"),
                _ => bins.push(PathBuf::from(a)),
            }
        }
        let (Some(args), [a, b]) = (rest, bins.as_slice()) else {
            bail!(USAGE);
        };
        if !(1..=1000).contains(&pairs) {
            bail!("--pairs {pairs}: between 1 and 1000");
        }
        Ok(Plan {
            a: a.clone(),
            b: b.clone(),
            args,
            pairs,
            warmup,
            any_output,
        })
    }
}

/// The two sides' costs, pair by pair, and what became of their outputs.
#[derive(Debug)]
pub struct Outcome {
    pub a: Vec<Cost>,
    pub b: Vec<Cost>,
    /// Whether B's outputs were byte-identical to A's (each side always agrees with itself,
    /// or the comparison fails).
    pub same_output: bool,
    /// Bytes of A's output (0 when the command writes no `{out}`).
    pub output_bytes: u64,
}

/// Runs the plan: warm-up runs of each side, then `pairs` pairs in alternating order. Fails
/// when a run fails or a build's output changes from run to run; whether the two builds
/// agree is in the outcome (see [`verdict`]).
pub fn run(plan: &Plan) -> Result<Outcome> {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("anning-ab-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let result = run_in(plan, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(plan: &Plan, dir: &Path) -> Result<Outcome> {
    let mut out = Outcome {
        a: Vec::new(),
        b: Vec::new(),
        same_output: true,
        output_bytes: 0,
    };
    // Each side's first output (`Some(None)`: its first run wrote none); every later run of
    // the side must write the same, or the build is not deterministic.
    let mut first: [Option<Option<PathBuf>>; 2] = [None, None];
    for i in 0..plan.warmup + plan.pairs {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (bin, label) = if side == 1 { (&plan.b, "B") } else { (&plan.a, "A") };
            let file = dir.join(format!("out-{label}"));
            let _ = std::fs::remove_file(&file);
            let cost = run_once(bin, &plan.args, &file).with_context(|| format!("{label} ({})", bin.display()))?;
            let wrote = file.exists().then_some(file);
            match &first[side] {
                None => {
                    first[side] = Some(
                        wrote
                            .map(|f| {
                                let keep = dir.join(format!("first-{label}"));
                                std::fs::rename(&f, &keep).map(|_| keep)
                            })
                            .transpose()?,
                    );
                }
                Some(kept) => {
                    let same = match (kept, &wrote) {
                        (Some(k), Some(w)) => same_file(k, w)?,
                        (None, None) => true,
                        _ => false,
                    };
                    if !same {
                        bail!(
                            "{label} ({}) wrote a different output from one run to the next: it is not deterministic",
                            bin.display()
                        );
                    }
                }
            }
            if i >= plan.warmup {
                if side == 1 { out.b.push(cost) } else { out.a.push(cost) }
            }
        }
    }
    let [Some(a), Some(b)] = &first else {
        unreachable!("every side ran at least once")
    };
    out.same_output = match (a, b) {
        (Some(a), Some(b)) => same_file(a, b)?,
        (None, None) => true,
        _ => false,
    };
    out.output_bytes = a.as_ref().map_or(Ok(0), |a| std::fs::metadata(a).map(|m| m.len()))?;
    Ok(out)
}

/// Fails when the builds' outputs differ and the plan does not allow it.
pub fn verdict(plan: &Plan, o: &Outcome) -> Result<()> {
    if !o.same_output && !plan.any_output {
        bail!(
            "the builds' outputs differ: B ({}) did not write what A ({}) wrote (pass --any-output when they are meant to)",
            plan.b.display(),
            plan.a.display()
        );
    }
    Ok(())
}

/// One run of `bin` with `{out}` in `args` replaced by `out`, reaped with `wait4`.
pub fn run_once(bin: &Path, args: &[OsString], out: &Path) -> Result<Cost> {
    let args: Vec<OsString> = args
        .iter()
        .map(|a| match a.to_str() {
            Some(s) if s.contains("{out}") => OsString::from(s.replace("{out}", &out.to_string_lossy())),
            _ => a.clone(),
        })
        .collect();
    let started = Instant::now();
    let child = Command::new(bin)
        .args(&args)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct; `wait4` fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (`child` is never waited on), and both
    // pointers are to live locals of the right types.
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = started.elapsed().as_secs_f64();
    if r != pid {
        bail!("waiting for {}: {}", bin.display(), std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let how = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        bail!("{} {:?} failed: {how}", bin.display(), args);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Cost {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        max_rss: usage.ru_maxrss.max(0) as u64 * 1024,
    })
}

/// Whether two files hold the same bytes.
fn same_file(x: &Path, y: &Path) -> Result<bool> {
    let (mut f, mut g) = (std::fs::File::open(x)?, std::fs::File::open(y)?);
    if f.metadata()?.len() != g.metadata()?.len() {
        return Ok(false);
    }
    let (mut p, mut q) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = f.read(&mut p)?;
        if n == 0 {
            return Ok(true);
        }
        g.read_exact(&mut q[..n])?;
        if p[..n] != q[..n] {
            return Ok(false);
        }
    }
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty());
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A distribution-free interval for the median of paired differences `d` (the sign test's):
/// `[d(k), d(n+1-k)]` of the sorted differences, with the largest `k` whose coverage
/// `1 − 2·P(Binomial(n, ½) ≤ k − 1)` is at least `confidence`. With too few pairs for that
/// (fewer than 6 at 95 %), the whole range and its coverage. Returns (low, high, coverage).
pub fn sign_interval(d: &[f64], confidence: f64) -> (f64, f64, f64) {
    assert!(!d.is_empty() && d.len() <= 1000);
    let mut v = d.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // cdf[j] = P(X ≤ j), X ~ Binomial(n, ½).
    let mut cdf = Vec::with_capacity(n + 1);
    let (mut pmf, mut acc) = (0.5f64.powi(n as i32), 0.0);
    for j in 0..=n {
        acc += pmf;
        cdf.push(acc);
        pmf = pmf * (n - j) as f64 / (j + 1) as f64;
    }
    let coverage = |k: usize| 1.0 - 2.0 * cdf[k - 1];
    let mut k = 1;
    while k < n.div_ceil(2) && coverage(k + 1) >= confidence {
        k += 1;
    }
    (v[k - 1], v[n - k], coverage(k))
}

/// The exact two-sided sign test: the chance of a split at least as uneven as `faster` of
/// `n` non-tied pairs if neither build were faster.
pub fn sign_test_p(faster: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let low = faster.min(n - faster);
    let (mut pmf, mut tail) = (0.5f64.powi(n as i32), 0.0);
    for j in 0..=low {
        tail += pmf;
        pmf = pmf * (n - j) as f64 / (j + 1) as f64;
    }
    (2.0 * tail).min(1.0)
}

/// The report, as printed.
pub fn report(plan: &Plan, o: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let name = |p: &Path| p.display().to_string();
    let _ = writeln!(
        s,
        "ab: {} pairs in alternating order (A B, B A, …) after {} warm-up run(s) of each\n  A = {}\n  B = {}",
        plan.pairs,
        plan.warmup,
        name(&plan.a),
        name(&plan.b)
    );
    let _ = writeln!(s, "{:>4}  {:>8}  {:>8}  {:>8}  {:>8}", "pair", "A wall", "B wall", "A cpu", "B cpu");
    for (i, (a, b)) in o.a.iter().zip(&o.b).enumerate() {
        let _ = writeln!(
            s,
            "{:>4}  {:>7.3}s  {:>7.3}s  {:>7.3}s  {:>7.3}s",
            i + 1,
            a.wall,
            b.wall,
            a.cpu,
            b.cpu
        );
    }
    for (what, get) in [
        ("wall", (|c: &Cost| c.wall) as fn(&Cost) -> f64),
        ("cpu (user + system)", |c: &Cost| c.cpu),
    ] {
        let a: Vec<f64> = o.a.iter().map(get).collect();
        let b: Vec<f64> = o.b.iter().map(get).collect();
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
        let (ma, mb, md) = (median(&a), median(&b), median(&d));
        let (lo, hi, cov) = sign_interval(&d, 0.95);
        let faster = d.iter().filter(|&&x| x < 0.0).count();
        let slower = d.iter().filter(|&&x| x > 0.0).count();
        let _ = writeln!(
            s,
            "{what}: median A {ma:.3} s, B {mb:.3} s; B − A per pair: median {md:+.3} s ({:+.1} % of A), {:.1} % interval [{lo:+.3}, {hi:+.3}] s; B faster in {faster} of {} pairs (sign test p = {:.3})",
            100.0 * md / ma,
            100.0 * cov,
            d.len(),
            sign_test_p(faster, faster + slower),
        );
    }
    let rss = |v: &[Cost]| v.iter().map(|c| c.max_rss).max().unwrap_or(0) as f64 / (1u64 << 20) as f64;
    let _ = writeln!(s, "peak RSS: A {:.0} MiB, B {:.0} MiB", rss(&o.a), rss(&o.b));
    let runs = 2 * (plan.pairs + plan.warmup);
    let _ = if o.output_bytes == 0 && o.same_output {
        writeln!(s, "outputs: none written to {{out}}")
    } else if o.same_output {
        writeln!(s, "outputs: identical in all {runs} runs ({} bytes)", o.output_bytes)
    } else {
        writeln!(s, "outputs: B's differ from A's (each build agreed with itself in every run)")
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    /// The coverage of `[d(k), d(n+1−k)]` counted over every pattern of signs around the
    /// true median: the interval misses it when fewer than `k` differences lie below it or
    /// fewer than `k` above.
    fn coverage_by_enumeration(n: usize, k: usize) -> f64 {
        let hits = (0u32..1 << n).filter(|m| {
            let below = m.count_ones() as usize;
            below >= k && n - below >= k
        });
        hits.count() as f64 / (1u64 << n) as f64
    }

    #[test]
    fn sign_interval_against_enumeration() {
        for n in 1..=16 {
            // Distinct differences, out of order: the interval is order statistics.
            let d: Vec<f64> = (0..n)
                .map(|i| if i % 2 == 0 { i as f64 } else { (3 * n - i) as f64 } - 3.0)
                .collect();
            let mut sorted = d.clone();
            sorted.sort_by(f64::total_cmp);
            for conf in [0.8, 0.9, 0.95, 0.99] {
                let (lo, hi, cov) = sign_interval(&d, conf);
                let k = sorted.iter().position(|&x| x == lo).unwrap() + 1;
                assert_eq!(hi, sorted[n - k], "n {n}: not symmetric");
                assert!((cov - coverage_by_enumeration(n, k)).abs() < 1e-12, "n {n} k {k}");
                // The largest such k: one more would fall short (or leave no interval).
                if k < n.div_ceil(2) {
                    assert!(coverage_by_enumeration(n, k + 1) < conf, "n {n} conf {conf}: k {k} not the largest");
                }
                if k > 1 {
                    assert!(cov >= conf);
                }
            }
        }
        // Figures one can check by hand: n = 10 at 95 %, k = 2 (1 − 2·11/1024).
        let d: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(sign_interval(&d, 0.95), (2.0, 9.0, 1.0 - 22.0 / 1024.0));
        // n = 5 cannot reach 95 %: the range, with what it covers.
        assert_eq!(sign_interval(&[5.0, 1.0, 4.0, 2.0, 3.0], 0.95), (1.0, 5.0, 1.0 - 2.0 / 32.0));
    }

    #[test]
    fn sign_test() {
        assert_eq!(sign_test_p(0, 8), 2.0 / 256.0);
        assert_eq!(sign_test_p(8, 8), 2.0 / 256.0);
        assert_eq!(sign_test_p(1, 8), 2.0 * 9.0 / 256.0);
        assert_eq!(sign_test_p(4, 8), 1.0);
        assert_eq!(sign_test_p(0, 0), 1.0);
    }

    #[test]
    fn options() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let p = Plan::parse(&s(&["--pairs", "3", "a", "b", "--", "replay", "{out}"])).unwrap();
        assert_eq!((p.pairs, p.warmup, p.any_output), (3, 1, false));
        assert_eq!((p.a.to_str(), p.b.to_str()), (Some("a"), Some("b")));
        assert_eq!(p.args, vec![OsString::from("replay"), OsString::from("{out}")]);
        assert!(Plan::parse(&s(&["a", "b"])).is_err(), "no --");
        assert!(Plan::parse(&s(&["a", "--", "x"])).is_err(), "one build");
        assert!(Plan::parse(&s(&["--pairs", "0", "a", "b", "--"])).is_err());
        assert!(Plan::parse(&s(&["--fast", "a", "b", "--"])).is_err());
    }

    /// Two scripts standing in for builds; each writes `what` to the file given as `$1`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn plan(a: PathBuf, b: PathBuf, pairs: usize, warmup: usize, any_output: bool) -> Plan {
        Plan {
            a,
            b,
            args: vec![OsString::from("{out}")],
            pairs,
            warmup,
            any_output,
        }
    }

    #[test]
    fn runs_compare_outputs() {
        let dir = std::env::temp_dir().join(format!("anning-ab-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let same_a = script(&dir, "a", "printf 'one\\ntwo\\n' > \"$1\"");
        let same_b = script(&dir, "b", "printf 'one\\ntwo\\n' > \"$1\"; : busy");
        let other = script(&dir, "c", "printf 'one\\nTWO\\n' > \"$1\"");
        let moving = script(&dir, "d", "date +%N > \"$1\"");
        let failing = script(&dir, "e", "exit 3");
        let silent = script(&dir, "f", ": writes nothing");

        for warmup in [0, 1] {
            let o = run(&plan(same_a.clone(), same_b.clone(), 3, warmup, false)).unwrap();
            assert_eq!((o.a.len(), o.b.len()), (3, 3));
            assert!(o.same_output);
            verdict(&plan(same_a.clone(), same_b.clone(), 3, warmup, false), &o).unwrap();
            assert_eq!(o.output_bytes, 8);
            assert!(o.a.iter().chain(&o.b).all(|c| c.wall > 0.0 && c.max_rss > 0));
            let text = report(&plan(same_a.clone(), same_b.clone(), 3, warmup, false), &o);
            assert!(text.contains("outputs: identical in all"), "{text}");

            // A different output fails the comparison, naming both builds ...
            let p = plan(same_a.clone(), other.clone(), 3, warmup, false);
            let o = run(&p).unwrap();
            assert!(!o.same_output);
            let e = verdict(&p, &o).unwrap_err();
            assert!(format!("{e:#}").contains("outputs differ"), "{e:#}");
            assert!(report(&p, &o).contains("outputs: B's differ"));
            // ... unless it is allowed.
            let p = plan(same_a.clone(), other.clone(), 2, warmup, true);
            assert!(verdict(&p, &run(&p).unwrap()).is_ok());
            // Writing nothing where the other wrote something is a difference too.
            let p = plan(same_a.clone(), silent.clone(), 2, warmup, false);
            assert!(verdict(&p, &run(&p).unwrap()).is_err());
            // A build that disagrees with itself fails either way, on either side.
            let e = run(&plan(same_a.clone(), moving.clone(), 2, warmup, true)).unwrap_err();
            assert!(format!("{e:#}").contains("not deterministic"), "{e:#}");
            let e = run(&plan(moving.clone(), same_a.clone(), 2, warmup, true)).unwrap_err();
            assert!(format!("{e:#}").contains("not deterministic"), "{e:#}");
        }
        let e = run(&plan(same_a.clone(), failing, 2, 0, false)).unwrap_err();
        assert!(format!("{e:#}").contains("exit status 3"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
