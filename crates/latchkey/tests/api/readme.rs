//! The README's walkthrough, run as written: the shell block between its `walkthrough` markers
//! runs in bash (`set -euo pipefail`) from the directory of a running `latchkey serve`, with
//! the built `latchkey` and `latchkey-app` first on `PATH`, as after `cargo install`. Only
//! `URL` is given (the server listens on a free port, not 8080).

use std::process::{Command, Stdio};

use crate::cli::serve_command;

const LATCHKEY: &str = env!("CARGO_BIN_EXE_latchkey");

fn walkthrough() -> String {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("<!-- walkthrough:begin -->")
        .expect("the README marks its walkthrough");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("the README marks its walkthrough's end");
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .expect("a sh code block between the markers")
        .0;
    body.to_owned()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(LATCHKEY).parent().unwrap();
    assert!(
        bin_dir.join("latchkey-app").exists(),
        "latchkey-app is built beside latchkey (cargo test builds the workspace)"
    );
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut serve = Command::new(LATCHKEY);
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", &path);
    let server = serve_command(serve, &[]);

    let script = format!("set -euo pipefail\n{}", walkthrough());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", &path)
        .env("HOME", dir.path())
        .env("URL", &server.base)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for expected in [
        "added alice@example.com with a password",
        "\"session_id\"",
        "\"isCurrent\":true",
        "keepalive after logout: 401",
        "\"loggedin\":true",
        "login_succeeded",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} in:\n{stdout}\n{stderr}"
        );
    }
}
