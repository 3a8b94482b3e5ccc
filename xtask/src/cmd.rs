//! The commands xtask runs. Each is echoed before it runs as one shell line that reproduces
//! the step exactly when pasted in the workspace root: the environment variables the step
//! sets come first (`DISPATCH_BACKEND=epoll cargo test ...`), and a test variable inherited
//! from the caller's shell that the step must not see is removed with `env -u`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::project_root;

/// Variables that change what the test suites do. A step that does not set one runs without
/// it, so that `cargo xtask test` tests the same things in every shell.
const TEST_VARS: [&str; 5] = [
    "DISPATCH_BACKEND",
    "DISPATCH_CORE_TEST_BLOCK",
    "DISPATCH_CORE_TEST_CHILD",
    "DISPATCH_CORE_TEST_FILE_WORKERS",
    "DISPATCH_CORE_TEST_MASK",
];

/// One command: a program, its arguments, and the variables it adds to the environment.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Where it runs, when not in the workspace root.
    dir: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: &str, args: &[&str]) -> Cmd {
        Cmd {
            program: program.to_owned(),
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            envs: Vec::new(),
            dir: None,
        }
    }

    /// `cargo ARGS`. A leading `+toolchain` argument goes through rustup's `cargo` proxy.
    pub fn cargo(args: &[&str]) -> Cmd {
        Cmd::new("cargo", args)
    }

    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn args(mut self, args: &[&str]) -> Cmd {
        self.args.extend(args.iter().map(|&arg| arg.to_owned()));
        self
    }

    /// Runs the command in `dir` (the echoed line starts with `cd DIR &&`).
    pub fn dir(mut self, dir: &Path) -> Cmd {
        self.dir = Some(dir.to_owned());
        self
    }

    /// The test variables set in xtask's environment that this cargo command does not set.
    fn removed(&self) -> Vec<&'static str> {
        if self.program != "cargo" {
            return Vec::new();
        }
        TEST_VARS
            .into_iter()
            .filter(|&var| std::env::var_os(var).is_some())
            .filter(|&var| !self.envs.iter().any(|(key, _)| key == var))
            .collect()
    }

    /// The command as a shell line that reproduces it.
    pub fn line(&self) -> String {
        let mut words = Vec::new();
        if let Some(dir) = &self.dir {
            words.push(format!("cd {} &&", quote(&dir.to_string_lossy())));
        }
        let removed = self.removed();
        if !removed.is_empty() {
            words.push("env".to_owned());
            for var in removed {
                words.push(format!("-u {var}"));
            }
        }
        for (key, value) in &self.envs {
            words.push(format!("{key}={}", quote(value)));
        }
        words.push(self.program.clone());
        words.extend(self.args.iter().map(|arg| quote(arg)));
        words.join(" ")
    }

    fn command(&self) -> Command {
        // Under `cargo xtask`, $CARGO is the cargo running xtask; a `+toolchain` argument
        // needs rustup's proxy instead. rustup sets RUSTUP_TOOLCHAIN for xtask, so both pick
        // the toolchain the echoed line would.
        let toolchain_arg = self.args.first().is_some_and(|arg| arg.starts_with('+'));
        let program = match std::env::var("CARGO") {
            Ok(cargo) if self.program == "cargo" && !toolchain_arg => cargo,
            _ => self.program.clone(),
        };
        let mut command = Command::new(program);
        let dir = self.dir.clone().unwrap_or_else(project_root);
        command.args(&self.args).current_dir(dir);
        for var in self.removed() {
            command.env_remove(var);
        }
        command.envs(self.envs.iter().map(|(key, value)| (key, value)));
        command
    }

    /// Echoes the line, runs it, and fails naming it unless it succeeds.
    pub fn run(&self) -> Result<(), String> {
        let line = self.line();
        eprintln!("$ {line}");
        let status = self
            .command()
            .status()
            .map_err(|error| format!("{line}: {error}"))?;
        if !status.success() {
            return Err(format!("`{line}` failed ({status})"));
        }
        Ok(())
    }

    /// Echoes the line and runs it like [`Cmd::run`], returning its standard output instead of
    /// showing it.
    pub fn run_for_output(&self) -> Result<String, String> {
        let line = self.line();
        eprintln!("$ {line}");
        let output = self
            .command()
            .stderr(Stdio::inherit())
            .output()
            .map_err(|error| format!("{line}: {error}"))?;
        if !output.status.success() {
            return Err(format!("`{line}` failed ({})", output.status));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Echoes the line and runs it like [`Cmd::run`], handing each line of its standard
    /// output to `line` as it comes, which says whether to show it.
    pub fn run_filtered(&self, mut line: impl FnMut(&str) -> bool) -> Result<(), String> {
        use std::io::BufRead;
        let echoed = self.line();
        eprintln!("$ {echoed}");
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("{echoed}: {error}"))?;
        let stdout = child.stdout.take().expect("piped");
        for text in std::io::BufReader::new(stdout).lines() {
            let text = text.map_err(|error| format!("{echoed}: {error}"))?;
            if line(&text) {
                println!("{text}");
            }
        }
        let status = child.wait().map_err(|error| format!("{echoed}: {error}"))?;
        if !status.success() {
            return Err(format!("`{echoed}` failed ({status})"));
        }
        Ok(())
    }

    /// Echoes the line and starts the command with its standard input empty and its standard
    /// output and error piped, for output the caller reads as it comes.
    pub fn spawn_piped(&self) -> Result<Child, String> {
        let line = self.line();
        eprintln!("$ {line} </dev/null");
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("{line}: {error}"))
    }

    /// Runs without echoing and returns standard output, or `None` if it did not succeed: for
    /// questions (is this installed?), not for steps.
    pub fn query(&self) -> Option<String> {
        let output = self.command().stderr(Stdio::null()).output().ok()?;
        if !output.status.success() {
            return None;
        }
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// `word` quoted for a POSIX shell where it needs it.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_lines_carry_their_environment_and_quote_what_a_shell_would_split() {
        let doc = Cmd::cargo(&["doc", "--workspace"]).env("RUSTDOCFLAGS", "-D warnings");
        // `ends_with`: an `env -u` prefix appears when the shell running this test sets one of
        // the test variables.
        assert!(doc
            .line()
            .ends_with("RUSTDOCFLAGS='-D warnings' cargo doc --workspace"));
        let test = Cmd::cargo(&["test", "-p", "dispatch-loop"]).env("DISPATCH_BACKEND", "epoll");
        assert!(test
            .line()
            .ends_with("DISPATCH_BACKEND=epoll cargo test -p dispatch-loop"));
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("-Zsanitizer=address"), "-Zsanitizer=address");
    }
}
