//! Man pages and shell completions, generated from a binary's clap
//! definition, so that its `--help` text is their one source. Each binary
//! has a hidden way to call these (`pipevpn generate-man DIR`,
//! `pipevpnd --generate-man DIR`, and `generate-completions SHELL`), which
//! the package build runs (`packaging/build-deb.sh`).

use crate::{Error, Result};
pub use clap_complete::Shell;
use std::io::Write;
use std::path::Path;

/// The section of every page: commands for the administrator.
const SECTION: &str = "8";

/// Writes the page of `cmd` (`NAME.8`) and one for each visible subcommand
/// (`NAME-SUB.8`) into the directory `dir`, which must exist.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives each subcommand its display name (`pipevpn-up`) and usage line.
    cmd.build();
    // Every page's footer names the program and its version, as the main
    // page's does (a subcommand has no version of its own).
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    write_page(cmd, &source, dir)
}

fn write_page(cmd: clap::Command, source: &str, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub.clone(), source, dir)?;
    }
    let page = clap_mangen::Man::new(cmd).section(SECTION).source(source);
    let path = dir.join(page.get_filename());
    let mut text = Vec::new();
    page.render(&mut text)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| Error::sys(format!("writing {}", path.display()), e))
}

/// Writes the completion script of `cmd` for `shell` to `out`, without
/// its hidden subcommands and arguments.
pub fn write_completions(cmd: clap::Command, shell: Shell, out: &mut dyn Write) -> Result<()> {
    let mut cmd = without_hidden(&cmd);
    let name = cmd.get_name().to_string();
    // clap_complete panics when its writer fails: it writes into memory.
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut text);
    out.write_all(&text)
        .map_err(|e| Error::sys(format!("writing the {shell} completions"), e))
}

/// What completion needs of `cmd` (name, about, version, arguments,
/// subcommands), less what is hidden: clap_complete's scripts offer hidden
/// subcommands and arguments too, and these are the package build's and
/// the harness's, not the user's. `cmd` must not be built yet, so that the
/// copy makes its own help and version flags and propagates global ones.
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_string());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_string());
    }
    out.args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn example() -> Command {
        Command::new("tool")
            .version("1.2.3")
            .about("A tool")
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .action(ArgAction::Count)
                    .global(true),
            )
            .arg(
                Arg::new("secret-flag")
                    .long("secret-flag")
                    .hide(true)
                    .action(ArgAction::SetTrue),
            )
            .subcommand(Command::new("open").about("Open it").arg(Arg::new("path")))
            .subcommand(Command::new("onward").about("Go on"))
            .subcommand(Command::new("omitted").about("Internal").hide(true))
    }

    #[test]
    fn one_section_8_page_per_visible_command() {
        let tmp = crate::rundir::tests::TestDir::new("docs-man");
        let dir = &tmp.0;
        std::fs::create_dir_all(dir).unwrap();
        write_man_pages(example(), dir).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["tool-onward.8", "tool-open.8", "tool.8"]);
        let main = std::fs::read_to_string(dir.join("tool.8")).unwrap();
        let open = std::fs::read_to_string(dir.join("tool-open.8")).unwrap();
        assert!(main.starts_with(".ie"), "{main}");
        assert!(
            main.contains(".TH tool 8 ") && main.contains("\"tool 1.2.3\""),
            "{main}"
        );
        assert!(
            main.contains("tool\\-open(8)") && !main.contains("omitted"),
            "{main}"
        );
        assert!(!main.contains("secret"), "{main}");
        assert!(
            open.contains(".TH tool-open 8 ") && open.contains("Open it"),
            "{open}"
        );
        // The global flag is documented on the subcommand's page too.
        assert!(open.contains("verbose"), "{open}");
    }

    #[test]
    fn completions_offer_only_what_is_visible() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut text = Vec::new();
            write_completions(example(), shell, &mut text).unwrap();
            let text = String::from_utf8(text).unwrap();
            for visible in ["open", "onward", "verbose", "version"] {
                assert!(text.contains(visible), "{shell}: no {visible}:\n{text}");
            }
            for hidden in ["omitted", "secret-flag"] {
                assert!(!text.contains(hidden), "{shell}: offers {hidden}:\n{text}");
            }
        }
    }

    #[test]
    fn a_failing_writer_is_an_error_naming_the_shell() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = write_completions(example(), Shell::Zsh, &mut Full).unwrap_err();
        assert!(
            err.to_string().starts_with("writing the zsh completions: "),
            "{err}"
        );
        let err = write_man_pages(example(), Path::new("/nonexistent/dir")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/tool"), "{err}");
    }
}
