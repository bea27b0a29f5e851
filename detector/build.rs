//! Embeds the BPF object built by `cargo xtask build-ebpf`, so the binary
//! needs no loose file at run time. Without it the binary still builds (the
//! file-only commands work) and live commands say how to get it.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let object = std::env::var("DETECTOR_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../target/bpf/detector.bpf.o"));
    println!("cargo:rerun-if-env-changed=DETECTOR_BPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo::rustc-check-cfg=cfg(detector_bpf_embedded)");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("detector.bpf.o");
    match std::fs::read(&object) {
        Ok(bytes) => {
            let _ = std::fs::write(&out, bytes);
            println!("cargo:rustc-cfg=detector_bpf_embedded");
        }
        Err(_) => {
            let _ = std::fs::write(&out, []);
        }
    }
}
