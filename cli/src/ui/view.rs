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
