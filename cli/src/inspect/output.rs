//! How `braid` prints: JSON or text, tables that fit the terminal, colour only on a
//! terminal and never with `NO_COLOR`, times and durations people read.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use braid_client::{RunStatus, TaskStatus, Timestamp};
use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};

use super::error::{Error, Result};

/// The output settings of one command.
#[derive(Debug, Clone)]
pub struct Out {
    pub json: bool,
    /// stdout is a terminal.
    pub tty: bool,
    /// ANSI colours on stdout.
    pub color: bool,
    /// The terminal's width in columns, when stdout is one.
    pub width: Option<u16>,
    /// stderr is a terminal (progress bars draw there).
    pub stderr_tty: bool,
}

impl Out {
    /// Looks at the terminal and `NO_COLOR` (set and non-empty turns colour off).
    pub fn detect(json: bool) -> Self {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let stderr_tty = std::io::stderr().is_terminal();
        let width = if tty { console::Term::stdout().size_checked().map(|(_, w)| w) } else { None };
        console::set_colors_enabled(tty && !no_color);
        console::set_colors_enabled_stderr(stderr_tty && !no_color);
        Out { json, tty, color: tty && !no_color, width, stderr_tty }
    }

    /// Writes `text` to stdout as is.
    pub fn print(&self, text: &str) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    /// Writes `text` and a newline.
    pub fn line(&self, text: &str) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        Ok(())
    }

    /// Prints one JSON document.
    pub fn json(&self, value: &serde_json::Value) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        self.line(&text)
    }

    /// A note for people on stderr (never mixed into stdout).
    pub fn note(&self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{text}");
    }

    /// The error line on stderr.
    /// `error: ` and the error with its causes, one `caused by:` line each.
    pub fn error(&self, e: &Error) {
        let prefix = if self.stderr_tty && console::colors_enabled_stderr() {
            console::style("error:").red().bold().for_stderr().to_string()
        } else {
            "error:".to_owned()
        };
        crate::report::print_error_with(&prefix, e);
    }

    /// A table with this header, laid out to fit the terminal.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut t = Table::new();
        t.load_preset(presets::NOTHING);
        t.force_no_tty();
        if self.color {
            t.enforce_styling();
        }
        match self.width {
            Some(w) => {
                t.set_width(w);
                t.set_content_arrangement(ContentArrangement::Dynamic);
            }
            None => {
                t.set_content_arrangement(ContentArrangement::Disabled);
            }
        }
        t.set_truncation_indicator("…");
        let cells: Vec<Cell> = header
            .iter()
            .map(|h| {
                let c = Cell::new(h);
                if self.color { c.add_attribute(Attribute::Bold) } else { c }
            })
            .collect();
        t.set_header(cells);
        for col in t.column_iter_mut() {
            col.set_padding((0, 2));
        }
        t
    }

    /// Prints a table; its lines carry no trailing blanks.
    pub fn table_out(&self, t: &Table) -> Result<()> {
        let mut text = String::new();
        for line in t.lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
        self.print(&text)
    }

    pub fn run_status(&self, s: RunStatus) -> Cell {
        self.colored(
            Cell::new(s.as_str()),
            match s {
                RunStatus::Succeeded => Some(Color::Green),
                RunStatus::Failed | RunStatus::Lost => Some(Color::Red),
                RunStatus::Running => Some(Color::Cyan),
                RunStatus::Cancelled => Some(Color::Yellow),
                RunStatus::Pending => None,
                _ => None,
            },
        )
    }

    pub fn task_status(&self, s: TaskStatus) -> Cell {
        self.colored(Cell::new(s.as_str()), task_color(s))
    }

    /// A number coloured when non-zero.
    pub fn count(&self, n: u64, color: Color) -> Cell {
        self.colored(Cell::new(n), (n > 0).then_some(color))
    }

    fn colored(&self, cell: Cell, color: Option<Color>) -> Cell {
        match color {
            Some(c) if self.color => cell.fg(c),
            _ => cell,
        }
    }

    /// `label value` lines, labels aligned.
    pub fn fields(&self, rows: &[(&str, String)]) -> Result<()> {
        let w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (label, value) in rows {
            let label = format!("{label:<w$}");
            let label = if self.color { console::style(label).bold().to_string() } else { label };
            text.push_str(&format!("{label}  {value}\n"));
        }
        self.print(&text)
    }

    /// A section heading before a table.
    pub fn heading(&self, text: &str) -> Result<()> {
        let text = if self.color { console::style(text).bold().underlined().to_string() } else { text.to_owned() };
        self.print(&format!("\n{text}\n"))
    }

    /// A status word coloured for a `fields` line.
    pub fn status_word(&self, word: &str, color: Option<console::Color>) -> String {
        match color {
            Some(c) if self.color => console::style(word).fg(c).to_string(),
            _ => word.to_owned(),
        }
    }
}

pub fn task_color(s: TaskStatus) -> Option<Color> {
    match s {
        TaskStatus::Succeeded => Some(Color::Green),
        TaskStatus::Failed | TaskStatus::Lost => Some(Color::Red),
        TaskStatus::Running => Some(Color::Cyan),
        TaskStatus::Cancelled => Some(Color::Yellow),
        TaskStatus::Pending => None,
        _ => None,
    }
}

pub fn run_console_color(s: RunStatus) -> Option<console::Color> {
    match s {
        RunStatus::Succeeded => Some(console::Color::Green),
        RunStatus::Failed | RunStatus::Lost => Some(console::Color::Red),
        RunStatus::Running => Some(console::Color::Cyan),
        RunStatus::Cancelled => Some(console::Color::Yellow),
        RunStatus::Pending => None,
        _ => None,
    }
}

pub fn task_console_color(s: TaskStatus) -> Option<console::Color> {
    match s {
        TaskStatus::Succeeded => Some(console::Color::Green),
        TaskStatus::Failed | TaskStatus::Lost => Some(console::Color::Red),
        TaskStatus::Running => Some(console::Color::Cyan),
        TaskStatus::Cancelled => Some(console::Color::Yellow),
        TaskStatus::Pending => None,
        _ => None,
    }
}

/// Local time, to the second: `2026-04-20 10:21:03`.
pub fn time(ts: Timestamp) -> String {
    let tz = jiff::tz::TimeZone::system();
    ts.to_jiff().to_zoned(tz).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn time_opt(ts: Option<Timestamp>) -> String {
    ts.map(time).unwrap_or_else(|| "-".to_owned())
}

/// `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

pub fn duration_opt(d: Option<Duration>) -> String {
    d.map(duration).unwrap_or_else(|| "-".to_owned())
}

/// `12 B`, `3.4 KiB`, `1.2 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
pub fn cut(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
