//! How both command lines (`braid` and a flow binary) print an error: `error: <top>`,
//! then one `  caused by: <source>` line per level of [`std::error::Error::source`],
//! skipping a level whose text the level above already contains verbatim (many
//! messages end with their cause, `read FILE: permission denied`).

use std::error::Error;
use std::fmt;

/// The error and its causes, as printed after `error: `.
pub(crate) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut above = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !above.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text.replace('\n', "\n    "));
        }
        above = text;
        cause = c.source();
    }
    out
}

/// Prints `error: ` and the chain on stderr; `prefix` replaces `error:` (e.g. in colour).
pub(crate) fn print_error_with(prefix: &str, e: &(dyn Error + 'static)) {
    eprintln!("{prefix} {}", chain(e));
}

/// Prints `error: ` and the chain on stderr.
pub(crate) fn print_error(e: &(dyn Error + 'static)) {
    print_error_with("error:", e);
}

/// Prints the chain and returns `code` as the exit code.
pub(crate) fn fail(e: &(dyn Error + 'static), code: u8) -> std::process::ExitCode {
    print_error(e);
    std::process::ExitCode::from(code)
}

/// What a command was doing when `source` failed: the top line of the chain.
#[derive(Debug)]
pub(crate) struct Context<E> {
    context: String,
    source: E,
}

impl<E> Context<E> {
    pub(crate) fn new(context: impl Into<String>, source: E) -> Self {
        Context { context: context.into(), source }
    }
}

impl<E> fmt::Display for Context<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl<E: Error + 'static> Error for Context<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Low {
        #[error("disk full")]
        Full,
    }

    #[derive(Debug, thiserror::Error)]
    enum Mid {
        /// Says its cause itself: the cause is not repeated.
        #[error("write blob abc: {0}")]
        Repeats(#[source] Low),
        /// Does not: the cause gets its line.
        #[error("write blob abc")]
        Hides(#[source] Low),
    }

    #[test]
    fn each_cause_gets_a_line_unless_the_level_above_says_it() {
        let e = Context::new("cannot open the store at ./.braid", Mid::Hides(Low::Full));
        assert_eq!(chain(&e), "cannot open the store at ./.braid\n  caused by: write blob abc\n  caused by: disk full");
        let e = Context::new("cannot open the store at ./.braid", Mid::Repeats(Low::Full));
        assert_eq!(chain(&e), "cannot open the store at ./.braid\n  caused by: write blob abc: disk full");
        assert_eq!(chain(&Low::Full), "disk full");
        let multi = Context::new("top", std::io::Error::other("line one\nline two"));
        assert_eq!(chain(&multi), "top\n  caused by: line one\n    line two");
    }
}
