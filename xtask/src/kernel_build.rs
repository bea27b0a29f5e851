//! `cargo xtask build-kernel`: the fault-injected test kernel (`6.12-inject`).
//!
//! Debian's `linux-source-6.12` tarball, unpacked under `target/kernel/`,
//! patched with `xtask/kernel/patches/*.patch` (which bring two fixed races
//! back for tasks named `inj-*`), configured as `tinyconfig` plus
//! `xtask/kernel/config.fragment` plus `olddefconfig`, checked line by line
//! against the fragment, and built into a `bzImage` with everything the guest
//! needs built in (no modules).
//!
//! The result is cached in `target/kernel/6.12-inject-<key>/`, where the key
//! hashes the source package version, the patches, the fragment and the
//! recipe below: unchanged inputs reuse the kernel, any change builds anew.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Where Debian's `linux-source-6.12` package puts the tarball.
pub(crate) const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// Bumped whenever the build steps below change what comes out, so a cached
/// kernel from an older recipe is not reused.
const RECIPE: &str = "tinyconfig+fragment+olddefconfig bzImage v1";
const CACHE_PREFIX: &str = "6.12-inject-";
/// Written last: a cache directory without it is an interrupted build.
const STAMP: &str = "build.ok";

#[derive(clap::Args, Default)]
pub(crate) struct Args {
    /// Source tarball (Debian's linux-source-6.12).
    #[arg(long, default_value = SOURCE_TARBALL)]
    pub source: PathBuf,
    /// Rebuild even when a cached kernel matches the inputs.
    #[arg(long)]
    pub force: bool,
    /// Keep the unpacked source and the object tree (a few GB) next to the
    /// kernel, for debugging a patch.
    #[arg(long)]
    pub keep_tree: bool,
}

/// A built (or cached) kernel.
pub(crate) struct Built {
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
    /// Debian version of the source package it was built from.
    pub source_version: String,
    pub patches: usize,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `target/` (or `$CARGO_TARGET_DIR`).
pub(crate) fn target_dir(ws: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
}

fn kernel_dir(ws: &Path) -> PathBuf {
    ws.join("xtask/kernel")
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let b = ensure(args)?;
    println!(
        "kernel: {} ({} {} + {} patches) in {}",
        b.release,
        SOURCE_PACKAGE,
        b.source_version,
        b.patches,
        b.bzimage.display()
    );
    Ok(())
}

/// One option line of a config fragment: `CONFIG_X=value`, or
/// `# CONFIG_X is not set` (value `None`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    pub name: String,
    pub value: Option<String>,
}

/// Every option a fragment (or a `.config`) sets or unsets; comments and
/// blank lines are skipped.
pub(crate) fn parse_config(text: &str) -> Vec<Setting> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("# ") {
                let name = rest.strip_suffix(" is not set")?;
                return name.starts_with("CONFIG_").then(|| Setting {
                    name: name.to_string(),
                    value: None,
                });
            }
            let (name, value) = l.split_once('=')?;
            name.starts_with("CONFIG_").then(|| Setting {
                name: name.to_string(),
                value: Some(value.to_string()),
            })
        })
        .collect()
}

/// The fragment lines the final `.config` does not honour, one sentence
/// each (an option `olddefconfig` dropped because a dependency is missing,
/// or one that does not exist in this source).
pub(crate) fn config_mismatches(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashMap<String, Option<String>> = parse_config(config)
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    let mut out = Vec::new();
    for want in parse_config(fragment) {
        // An option absent from .config is off (its dependencies are not met).
        let got = have.get(&want.name).cloned().flatten();
        let got_on = got.as_deref().is_some_and(|v| v != "n");
        let ok = match &want.value {
            None => !got_on,
            Some(v) if v == "n" => !got_on,
            Some(v) => got.as_deref() == Some(v.as_str()),
        };
        if !ok {
            out.push(format!(
                "{} should be {} but the configured kernel has {}",
                want.name,
                want.value.as_deref().unwrap_or("unset"),
                got.as_deref()
                    .unwrap_or("it unset (a dependency is missing?)")
            ));
        }
    }
    out
}

/// Cache key over everything that decides the kernel: the recipe, the
/// source package version and every input file (name and content).
pub(crate) fn cache_key(source_version: &str, inputs: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for part in [RECIPE.as_bytes(), source_version.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (name, data) in inputs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Version of the installed source package, or (not installed through dpkg)
/// the tarball's size and mtime, which still change with its content.
fn source_version(tarball: &Path) -> Result<String> {
    let meta = fs::metadata(tarball).with_context(|| {
        format!(
            "{} is missing; install {SOURCE_PACKAGE} from bookworm-backports (`bash .ci/setup`)",
            tarball.display()
        )
    })?;
    if tarball == Path::new(SOURCE_TARBALL) {
        if let Ok(out) = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", SOURCE_PACKAGE])
            .output()
        {
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !v.is_empty() {
                return Ok(v);
            }
        }
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(format!("file:{}:{}", meta.len(), mtime))
}

/// The patches (sorted: their names give the order) and the fragment.
fn inputs(ws: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let dir = kernel_dir(ws).join("patches");
    let mut patches: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    Ok((patches, kernel_dir(ws).join("config.fragment")))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Children's user+sys CPU time so far (`cutime`+`cstime` in
/// /proc/self/stat: every waited-for descendant, make's compilers included).
fn children_cpu() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    children_cpu_from_stat(&stat)
}

fn children_cpu_from_stat(stat: &str) -> Option<Duration> {
    // Fields after the parenthesised comm (which may hold spaces): field 3
    // is the state; cutime and cstime are fields 16 and 17, in USER_HZ
    // ticks (100 per second on Linux).
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    Some(Duration::from_millis((cutime + cstime) * 10))
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("starting {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st}); see its output above");
    }
    Ok(())
}

fn make(src: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", build.display()))
        .arg("ARCH=x86_64")
        .arg("-s");
    c
}

/// Builds the kernel, or returns the cached one when its inputs are unchanged.
pub(crate) fn ensure(args: &Args) -> Result<Built> {
    let ws = workspace_root();
    let tarball = &args.source;
    let version = source_version(tarball)?;
    let (patches, fragment_path) = inputs(&ws)?;
    let fragment = fs::read_to_string(&fragment_path)
        .with_context(|| format!("reading {}", fragment_path.display()))?;
    let mut files = Vec::new();
    for p in &patches {
        files.push((file_name(p), fs::read(p)?));
    }
    files.push((file_name(&fragment_path), fragment.clone().into_bytes()));
    let key = cache_key(&version, &files);
    let root = target_dir(&ws).join("kernel");
    let dir = root.join(format!("{CACHE_PREFIX}{key}"));
    let built = |dir: &Path| -> Result<Built> {
        let release = fs::read_to_string(dir.join("kernel.release"))
            .context("cached kernel without kernel.release")?
            .trim()
            .to_string();
        Ok(Built {
            dir: dir.to_path_buf(),
            bzimage: dir.join("bzImage"),
            release,
            source_version: version.clone(),
            patches: patches.len(),
        })
    };
    if !args.force && dir.join(STAMP).exists() && dir.join("bzImage").exists() {
        eprintln!("kernel: using the cached build in {}", dir.display());
        return built(&dir);
    }

    // Build in a scratch directory and rename it at the end, so an
    // interrupted build never looks like a cached one.
    let work = root.join(format!("{CACHE_PREFIX}{key}.tmp"));
    for d in [&work, &dir] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
    }
    fs::create_dir_all(&work)?;
    let start = Instant::now();
    let cpu0 = children_cpu();
    eprintln!(
        "kernel: unpacking {} ({SOURCE_PACKAGE} {version})",
        tarball.display()
    );
    run_cmd(
        Command::new("tar")
            .arg("-xJf")
            .arg(tarball)
            .arg("-C")
            .arg(&work),
        "tar (unpacking the kernel source)",
    )?;
    let src = fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("Makefile").exists())
        .with_context(|| format!("{} holds no kernel source tree", tarball.display()))?;
    for p in &patches {
        let out = Command::new("patch")
            .args(["-p1", "--batch", "--forward", "--quiet", "-i"])
            .arg(p)
            .current_dir(&src)
            .output()
            .context("running patch (install the `patch` package)")?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout);
            bail!(
                "patch {} does not apply to {SOURCE_PACKAGE} {version}; update it for this source \
                 (patch said: {})",
                file_name(p),
                said.lines().next().unwrap_or("nothing")
            );
        }
    }
    eprintln!("kernel: applied {} patches", patches.len());
    let build = work.join("build");
    fs::create_dir_all(&build)?;
    run_cmd(make(&src, &build).arg("tinyconfig"), "make tinyconfig")?;
    run_cmd(
        Command::new(src.join("scripts/kconfig/merge_config.sh"))
            .arg("-m")
            .arg("-O")
            .arg(&build)
            .arg(build.join(".config"))
            .arg(&fragment_path)
            .env("ARCH", "x86_64")
            .current_dir(&src)
            .stdout(std::process::Stdio::null()),
        "merging the config fragment",
    )?;
    run_cmd(make(&src, &build).arg("olddefconfig"), "make olddefconfig")?;
    let config = fs::read_to_string(build.join(".config"))?;
    let bad = config_mismatches(&fragment, &config);
    if !bad.is_empty() {
        bail!(
            "the kernel config does not honour {}:\n  {}",
            fragment_path.display(),
            bad.join("\n  ")
        );
    }
    let jobs = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1);
    eprintln!(
        "kernel: building bzImage with -j{jobs} (config verified: {} options)",
        parse_config(&fragment).len()
    );
    run_cmd(
        make(&src, &build).arg(format!("-j{jobs}")).arg("bzImage"),
        "the kernel build (make bzImage)",
    )?;
    let release = fs::read_to_string(build.join("include/config/kernel.release"))
        .context("the build wrote no kernel.release")?;
    fs::copy(build.join("arch/x86/boot/bzImage"), work.join("bzImage"))?;
    fs::copy(build.join(".config"), work.join("config"))?;
    // vmlinux (symbols, debug info) to decode guest stack traces.
    fs::copy(build.join("vmlinux"), work.join("vmlinux"))?;
    fs::write(work.join("kernel.release"), &release)?;
    if !args.keep_tree {
        fs::remove_dir_all(&build)?;
        fs::remove_dir_all(&src)?;
    }
    let wall = start.elapsed();
    let cpu = match (cpu0, children_cpu()) {
        (Some(a), Some(b)) => format!("{:.0?} CPU (user+sys)", b.saturating_sub(a)),
        _ => "CPU time unknown".to_string(),
    };
    let summary = format!(
        "{} from {SOURCE_PACKAGE} {version} + {} patches: {:.0?} wall, {cpu}, -j{jobs}\n",
        release.trim(),
        patches.len(),
        wall
    );
    fs::write(work.join(STAMP), &summary)?;
    fs::rename(&work, &dir)?;
    eprint!("kernel: built {summary}");
    // One kernel is enough: older builds of other inputs are dead weight.
    for e in fs::read_dir(&root)?.flatten() {
        let p = e.path();
        let name = file_name(&p);
        if name.starts_with(CACHE_PREFIX) && p != dir && !name.ends_with(".tmp") {
            let _ = fs::remove_dir_all(&p);
        }
    }
    built(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_lines_parse() {
        let s = parse_config(
            "# comment\nCONFIG_A=y\n# CONFIG_B is not set\n\nCONFIG_C=\"x y\"\nNOT_CONFIG=1\n",
        );
        assert_eq!(
            s,
            vec![
                Setting {
                    name: "CONFIG_A".into(),
                    value: Some("y".into())
                },
                Setting {
                    name: "CONFIG_B".into(),
                    value: None
                },
                Setting {
                    name: "CONFIG_C".into(),
                    value: Some("\"x y\"".into())
                },
            ]
        );
    }

    #[test]
    fn a_dropped_option_is_named() {
        let frag = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=8\nCONFIG_D=y\n";
        let good = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=8\nCONFIG_D=y\n";
        assert!(config_mismatches(frag, good).is_empty());
        // B absent counts as unset; D dropped; C changed.
        let bad = "CONFIG_A=y\nCONFIG_C=4\n# CONFIG_D is not set\n";
        let m = config_mismatches(frag, bad);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("CONFIG_C should be 8"), "{m:?}");
        assert!(m[1].starts_with("CONFIG_D should be y"), "{m:?}");
        let on = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=8\nCONFIG_D=y\n";
        assert!(config_mismatches(frag, on)[0].starts_with("CONFIG_B should be unset"));
    }

    #[test]
    fn cache_key_follows_every_input() {
        let files = vec![
            ("0001.patch".to_string(), b"a".to_vec()),
            ("config.fragment".to_string(), b"CONFIG_A=y".to_vec()),
        ];
        let k = cache_key("6.12.117-1", &files);
        assert_eq!(k.len(), 16);
        assert_eq!(k, cache_key("6.12.117-1", &files));
        assert_ne!(k, cache_key("6.12.118-1", &files));
        let mut changed = files.clone();
        changed[0].1 = b"b".to_vec();
        assert_ne!(k, cache_key("6.12.117-1", &changed));
        let mut renamed = files.clone();
        renamed[0].0 = "0002.patch".into();
        assert_ne!(k, cache_key("6.12.117-1", &renamed));
    }

    #[test]
    fn children_cpu_reads_cutime_and_cstime() {
        // pid (comm with spaces) state ppid ... utime stime cutime cstime ...
        let stat = "42 (x task) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 1500 250 20 0 1 0";
        assert_eq!(
            children_cpu_from_stat(stat),
            Some(Duration::from_millis(17_500))
        );
        assert_eq!(children_cpu_from_stat("garbage"), None);
    }
}
