//! Small helpers the pages share: formatting, status classes, the page frame.

use maud::{DOCTYPE, Markup, html};

pub use crate::inspect::output::{cut, duration, duration_opt, size, time, time_opt};

/// The CSS class of a status word: `st-succeeded`, `st-lost`, ... (any status the
/// client returns gets a class; unknown words share the neutral style).
pub fn sclass(status: &str) -> String {
    let clean: String = status.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    format!("st st-{clean}")
}

/// A status badge.
pub fn badge(status: &str) -> Markup {
    html! { span class=(sclass(status)) { (status) } }
}

/// A path segment for a URL: names and ids are validated ASCII without `/`, but a
/// value is still percent-encoded, so nothing in it can change the URL's shape.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from pairs, each value encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    if kept.is_empty() { String::new() } else { format!("?{}", serde_urlencoded::to_string(kept).unwrap_or_default()) }
}

/// The page frame: header with navigation, the body, the script.
pub fn page(title: &str, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · braid" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "braid" }
                    nav {
                        a href="/" { "Runs" }
                        a href="/plans" { "Plans" }
                        a href="/api/v1/openapi.json" { "API" }
                    }
                }
                @if !crumbs.is_empty() {
                    div.crumbs {
                        @for (i, (label, href)) in crumbs.iter().enumerate() {
                            @if i > 0 { span.sep { "/" } }
                            @if href.is_empty() { span { (label) } } @else { a href=(href) { (label) } }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `/runs/flow/run`
pub fn run_href(flow: &str, run: &str) -> String {
    format!("/runs/{}/{}", seg(flow), seg(run))
}

pub fn step_href(flow: &str, run: &str, step: &str) -> String {
    format!("{}/{}", run_href(flow, run), seg(step))
}

pub fn task_href(flow: &str, run: &str, step: &str, task: u64) -> String {
    format!("{}/{task}", step_href(flow, run, step))
}

/// JSON as indented text for a `<pre>` (escaped when rendered).
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("fan_out-1.x"), "fan_out-1.x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(seg("<x>"), "%3Cx%3E");
    }

    #[test]
    fn status_classes_keep_only_safe_characters() {
        assert_eq!(sclass("lost"), "st st-lost");
        assert_eq!(sclass("a\" onclick=\"x"), "st st-aonclickx");
    }
}

/// A progress report as one line: `45.0% · 4500/10000 rows · 12.5 rows/s · message`
/// (plain text: the page escapes it).
pub fn progress_line(p: &braid_client::Progress) -> String {
    let mut parts = vec![format!("{:.1}%", p.percent)];
    if let Some(u) = &p.units {
        parts.push(format!("{}/{} {}", u.done, u.total, u.unit));
        if let Some(rate) = u.rate {
            parts.push(format!("{rate:.1} {}/s", u.unit));
        }
    }
    if !p.message.is_empty() {
        parts.push(p.message.clone());
    }
    parts.join(" · ")
}

#[cfg(test)]
mod progress_line_tests {
    use super::progress_line;

    #[test]
    fn a_progress_line_shows_units_and_their_rate_before_the_message() {
        let mut p = braid_client::Progress { percent: 45.0, message: "copying".into(), ..Default::default() };
        assert_eq!(progress_line(&p), "45.0% · copying");
        p.units =
            Some(braid_client::ProgressUnits { done: 4500, total: 10000, unit: "rows".into(), rate: Some(12.25) });
        assert_eq!(progress_line(&p), "45.0% · 4500/10000 rows · 12.2 rows/s · copying");
    }
}
