//! The text of a case's outcome, in the two lengths commands and reports use.

use crate::result::Outcome;

/// The whole outcome on one line: "ok", "oom: …", "timeout after 600 s", "error: …".
pub fn line(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Oom { message } => format!("oom: {message}"),
        Outcome::Timeout { limit_s } => format!("timeout after {limit_s} s"),
        Outcome::Error { message } => format!("error: {message}"),
    }
}

/// A table cell's worth: "does not fit (oom)", "timeout (600 s)", "error: " and the first 60
/// characters of the message's first line.
pub fn cell(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Oom { .. } => "does not fit (oom)".into(),
        Outcome::Timeout { limit_s } => format!("timeout ({limit_s:.0} s)"),
        Outcome::Error { message } => {
            let first = message.lines().next().unwrap_or("");
            format!("error: {}", first.chars().take(60).collect::<String>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_words() {
        let oom = Outcome::Oom {
            message: "killed by the OS".into(),
        };
        assert_eq!(line(&oom), "oom: killed by the OS");
        assert_eq!(cell(&oom), "does not fit (oom)");
        let t = Outcome::Timeout { limit_s: 600.0 };
        assert_eq!(
            (line(&t), cell(&t)),
            ("timeout after 600 s".into(), "timeout (600 s)".into())
        );
        let long = Outcome::Error {
            message: "x".repeat(100),
        };
        assert_eq!(cell(&long).len(), "error: ".len() + 60);
    }
}
