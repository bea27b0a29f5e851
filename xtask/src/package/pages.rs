//! Man pages and shell completions, generated from the detector's own clap
//! definition ([`detector::cli::Cli`]) so that they list exactly the
//! subcommands and flags the binary accepts.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{roman, Roff};

/// One generated file: where it goes in the package and what it holds.
pub(super) struct Page {
    /// Path below the package root, e.g. `usr/share/man/man1/detector.1`
    /// (man pages are compressed later, with the `.gz` added then).
    pub(super) path: String,
    pub(super) text: Vec<u8>,
}

/// The command as users see it, built (subcommands named `detector-record`
/// and so on) and without clap's `help` subcommand, which needs no page.
fn command() -> clap::Command {
    let mut cmd = detector::cli::Cli::command()
        .bin_name("detector")
        .disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The version the package carries: the detector crate's, as `--version`
/// prints it.
pub(super) fn version() -> String {
    command()
        .get_version()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// `detector.1` and one page per visible subcommand (`detector-record.1`,
/// ...), each ending in the sections clap has no notion of: the files the
/// package installs (on the main page) and the other pages. `date` is the
/// source's date (YYYY-MM-DD), so that a rebuild of the same tree gives the
/// same pages.
pub(super) fn man_pages(date: &str) -> std::io::Result<Vec<Page>> {
    let cmd = command();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let sub_refs: Vec<String> = subs.iter().map(display_name).collect();
    let mut pages = Vec::with_capacity(subs.len() + 1);
    let mut main = render(&cmd, date)?;
    let mut extra = Roff::new();
    extra.control("SH", ["FILES"]);
    for (path, what) in FILES {
        extra.control("TP", []).text([roman(*path)]);
        extra.text([roman(*what)]);
    }
    see_also(
        &mut extra,
        &sub_refs.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // `to_roff`, not `render`: the page clap_mangen wrote already starts
    // with the apostrophe preamble `render` would repeat mid-page.
    main.extend_from_slice(extra.to_roff().as_bytes());
    pages.push(Page {
        path: "usr/share/man/man1/detector.1".into(),
        text: main,
    });
    for sub in &subs {
        let name = display_name(sub);
        let mut text = render(sub, date)?;
        let mut extra = Roff::new();
        see_also(&mut extra, &["detector"]);
        text.extend_from_slice(extra.to_roff().as_bytes());
        pages.push(Page {
            path: format!("usr/share/man/man1/{name}.1"),
            text,
        });
    }
    Ok(pages)
}

/// What the package puts where, for the main page's FILES section.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/detector/agent.toml",
        "Configuration of the agent the systemd unit runs (metrics address, flight recorder, \
         analyzer).",
    ),
    (
        "/var/lib/detector",
        "The agent's state: findings and snapshots (snapshots/), readable by root and the \
         service only.",
    ),
    (
        "/usr/lib/systemd/system/detector.service",
        "The hardened unit running the agent; not enabled on install \
         (systemctl enable --now detector).",
    ),
];

fn display_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn render(cmd: &clap::Command, date: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    // The footer names the package, not the subcommand (clap_mangen's
    // default would say `record 0.1.0`).
    clap_mangen::Man::new(cmd.clone())
        .date(date)
        .source(format!("detector {}", version()))
        .manual("detector manual")
        .render(&mut out)?;
    Ok(out)
}

fn see_also(roff: &mut Roff, pages: &[&str]) {
    roff.control("SH", ["SEE ALSO"]);
    let refs: Vec<String> = pages.iter().map(|p| format!("{p}(1)")).collect();
    roff.text([roman(refs.join(", "))]);
}

/// Completion scripts for bash, zsh and fish, at the paths each shell's
/// Debian package loads vendor completions from, with the shell's name.
pub(super) fn completions() -> Vec<(Shell, Page)> {
    [
        (
            Shell::Bash,
            "usr/share/bash-completion/completions/detector",
        ),
        (Shell::Zsh, "usr/share/zsh/vendor-completions/_detector"),
        (
            Shell::Fish,
            "usr/share/fish/vendor_completions.d/detector.fish",
        ),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut command(), "detector", &mut text);
        (
            shell,
            Page {
                path: path.into(),
                text,
            },
        )
    })
    .collect()
}

/// The subcommands that get a page of their own (`detector-record`, ...).
pub(super) fn subcommand_pages() -> Vec<String> {
    command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(display_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page_naming_its_flags() {
        let pages = man_pages("2026-01-01").unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.path.as_str()).collect();
        assert!(
            names.contains(&"usr/share/man/man1/detector.1"),
            "{names:?}"
        );
        for sub in subcommand_pages() {
            assert!(
                names.contains(&format!("usr/share/man/man1/{sub}.1").as_str()),
                "{sub}: {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let record = pages
            .iter()
            .find(|p| p.path.ends_with("/detector-record.1"))
            .unwrap();
        let text = String::from_utf8_lossy(&record.text);
        // The flags come from the clap definition (roff escapes dashes).
        assert!(text.contains("duration"), "{text}");
        assert!(text.contains("rotate"), "{text}");
        assert!(text.contains(".SH \"SEE ALSO\""), "{text}");
        assert!(
            text.contains(&format!(
                ".TH detector-record 1 2026-01-01 \"detector {}\"",
                version()
            )),
            "{text}"
        );
        let main = String::from_utf8_lossy(&pages[0].text);
        assert!(main.contains("/etc/detector/agent.toml"), "{main}");
        assert!(main.contains("detector\\-record(1)"), "{main}");
    }

    #[test]
    fn completions_know_every_subcommand() {
        let subs = subcommand_pages();
        for (_, page) in completions() {
            let text = String::from_utf8_lossy(&page.text);
            for sub in &subs {
                let name = sub.trim_start_matches("detector-");
                assert!(text.contains(name), "{}: no {name}", page.path);
            }
        }
    }
}
