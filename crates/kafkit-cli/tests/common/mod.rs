//! What the binary's end-to-end tests share: the `kafkit` command with a clean environment,
//! running it to success, and reading its JSON lines. Each test file uses part of it.
#![allow(dead_code)]

pub mod endpoint;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The `kafkit` binary with no `KAFKA_*` / `KAFKIT_*` variable of the test's environment:
/// only what each test sets reaches it. Logs are JSON.
pub fn kafkit() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kafkit"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KAFKA_") || name.starts_with("KAFKIT_") {
            command.env_remove(name);
        }
    }
    command.env("KAFKIT_LOG_FORMAT", "json");
    command
}

/// Runs `command` with `stdin` and asserts it succeeded, showing its stderr otherwise.
pub fn run(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kafkit");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kafkit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Standard output, one JSON value per line.
pub fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}
