//! Running the tools the lab is made of, with errors that say which command
//! failed and what it printed.

use std::process::{Command, Output};

use crate::LabError;

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, LabError> {
    let out = cmd.output().map_err(|source| LabError::Spawn {
        command: describe(cmd),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `run` for a program and its arguments.
pub(crate) fn run_args<S: AsRef<std::ffi::OsStr>>(
    program: &str,
    args: &[S],
) -> Result<Output, LabError> {
    run(Command::new(program).args(args))
}

/// Runs `nft -f -` with `script` on stdin, in namespace `ns` (or the root
/// namespace).
pub(crate) fn nft_script(ns: Option<&str>, script: &str) -> Result<(), LabError> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let command = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    child
        .stdin
        .take()
        .expect("stdin was piped above")
        .write_all(script.as_bytes())
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: format!("{command} <<EOF\n{script}EOF"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
