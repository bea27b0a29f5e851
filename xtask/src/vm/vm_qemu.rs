//! Booting the guest under QEMU's TCG (the host's /dev/kvm is a nested PVM
//! that stock kernels cannot boot on), with a wall-clock limit, the serial
//! console saved to a file, and results carried back on an ext2 disk image.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Printed by `/init` once the results disk is written.
pub(crate) const DONE_MARKER: &str = "vmtest: results written";

pub(crate) struct Boot<'a> {
    pub(crate) vmlinuz: &'a Path,
    pub(crate) initrd: &'a Path,
    /// Raw disks in order: /dev/vda, /dev/vdb, ...
    pub(crate) disks: Vec<PathBuf>,
    pub(crate) memory: &'a str,
    pub(crate) timeout: Duration,
    pub(crate) console_log: &'a Path,
    /// Copy the console to our stdout as it arrives.
    pub(crate) echo: bool,
    /// Hand our stdin to the guest console (`cargo xtask vm`).
    pub(crate) interactive: bool,
}

pub(crate) struct Outcome {
    pub(crate) console: String,
    pub(crate) timed_out: bool,
}

impl Outcome {
    pub(crate) fn finished(&self) -> bool {
        self.console.contains(DONE_MARKER)
    }
}

/// Creates a sparse raw disk image of `mib` MiB (zeroed: a stale tar from an
/// earlier run must not be mistaken for this run's results).
pub(crate) fn sparse_disk(path: &Path, mib: u64) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(mib << 20)?;
    Ok(())
}

pub(crate) fn boot(b: &Boot) -> Result<Outcome> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // `-cpu max` includes LA57: the guest kernel runs with 5-level paging,
    // so kernel pointers start at 0xff00_0000_0000_0000 rather than
    // 0xffff_8000_0000_0000. `VM_CPU=max,la57=off` boots 4-level paging.
    let cpu = std::env::var("VM_CPU").unwrap_or_else(|_| "max".to_string());
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        &cpu,
        "-smp",
        "2",
        "-m",
        b.memory,
    ]);
    cmd.arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd);
    for d in &b.disks {
        cmd.arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", d.display()));
    }
    cmd.args([
        "-append",
        "console=ttyS0 quiet panic=-1",
        "-nographic",
        "-no-reboot",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if b.interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (install qemu-system-x86 from bookworm-backports)")?;
    let log = Arc::new(Mutex::new(
        fs::File::create(b.console_log)
            .with_context(|| format!("creating {}", b.console_log.display()))?,
    ));
    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut readers = Vec::new();
    let streams: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().context("qemu stdout")?),
        Box::new(child.stderr.take().context("qemu stderr")?),
    ];
    for mut s in streams {
        let (log, console, echo) = (log.clone(), console.clone(), b.echo);
        readers.push(thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = log.lock() {
                    let _ = l.write_all(&buf[..n]);
                }
                if let Ok(mut c) = console.lock() {
                    c.extend_from_slice(&buf[..n]);
                }
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }));
    }
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > b.timeout {
            timed_out = true;
            // The guest hung or is too slow: QEMU would run forever.
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    for r in readers {
        let _ = r.join();
    }
    let console = console
        .lock()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_default();
    Ok(Outcome { console, timed_out })
}

/// Creates the results disk: an ext2 file system the guest mounts on /out.
/// (A trace of a swap-heavy run is hundreds of MB: more than the guest's
/// RAM-backed root can hold, so it goes straight to disk.)
pub(crate) fn results_disk(path: &Path, mib: u64) -> Result<()> {
    sparse_disk(path, mib)?;
    let out = Command::new("mke2fs")
        .args(["-q", "-t", "ext2", "-F", "-m", "0"])
        .arg(path)
        .output()
        .context("running mke2fs (install e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "mke2fs failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Copies everything the guest left on the results disk into `dest`
/// (debugfs reads the image directly: no mount, no loop device).
pub(crate) fn extract_results(disk: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    fs::create_dir_all(dest)?;
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", dest.display()))
        .arg(disk)
        .output()
        .context("running debugfs (install e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "cannot read the results disk {}: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let _ = fs::remove_dir_all(dest.join("lost+found"));
    Ok(())
}
