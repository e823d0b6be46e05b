//! What the app prints. With `--json`, standard output carries only JSON, one value per line
//! (one object per command; one line per event for `listen`), so scripts and tests can read it;
//! without it, text for a person. Whatever is meant for the person only (the visual hash,
//! prompts, progress, warnings) goes to standard error, so standard output stays parseable.
//!
//! Printing never panics: a closed output is ignored (`println!` would panic on it).

use std::io::Write;

use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// The result of a command or event: `value` with `--json`, else `text()`.
    pub fn emit(&self, value: &Value, text: impl FnOnce() -> String) {
        let line = if self.json { value.to_string() } else { text() };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// A failure: one line on standard error, and `{"error": ...}` on standard output with
    /// `--json`.
    pub fn error(&self, message: &str) {
        note(&format!("latchkey-app: error: {message}"));
        if self.json {
            self.emit(&json!({ "error": message }), String::new);
        }
    }
}

/// A line for the person, on standard error.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
