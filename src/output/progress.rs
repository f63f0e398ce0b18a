//! Progress bars on stderr, hidden when stderr is not a terminal (CI logs, pipes).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether bars are shown: stderr is a terminal.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar over the cases of a suite, with the elapsed time and an ETA.
pub fn cases(len: usize, show: bool) -> ProgressBar {
    steps(len, "cases", show)
}

/// A bar over `len` steps of work counted in `unit` ("cases", "chunks"), with the elapsed time
/// and an ETA.
pub fn steps(len: usize, unit: &str, show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, ETA {{eta}}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A spinner for work of unknown length (a frontier search).
pub fn spinner(show: bool) -> ProgressBar {
    if show {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    }
}
