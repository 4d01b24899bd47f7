//! How `braid` prints: JSON or text, tables that fit the terminal, colour only on a
//! terminal and never with `NO_COLOR`, times and durations people read.

use std::io::{BufWriter, IsTerminal, StdoutLock, Write};
use std::time::Duration;

use braid_client::{RunStatus, Tag, TaskStatus, Timestamp};
use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::{Map, Value};

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

    /// Stdout for a JSON document written as it is read (see [`JsonStream`]).
    pub fn json_stream(&self) -> JsonStream<BufWriter<StdoutLock<'static>>> {
        JsonStream::new(BufWriter::with_capacity(64 * 1024, std::io::stdout().lock()))
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
        let mut t = self.headless_table();
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

    /// A table without a header (more rows of one printed before), laid out the same;
    /// set each column's padding to `(0, 2)` once its rows are in.
    pub fn headless_table(&self) -> Table {
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

/// One pretty-printed JSON document written in parts as they are read, byte for byte
/// what [`Out::json`] prints for the whole value (`serde_json::to_string_pretty` and a
/// newline): the elements of its one long array are serialized straight to the writer,
/// one at a time, so memory holds one element, not the document.
///
/// The first element is read before anything is written, so an error that comes
/// instead of any element (an unknown name) leaves stdout empty; an error after that
/// ends the output where it was.
pub struct JsonStream<W: Write> {
    w: W,
}

impl<W: Write> JsonStream<W> {
    pub fn new(w: W) -> Self {
        JsonStream { w }
    }

    /// A top-level array of `items`.
    pub fn array<T: Serialize>(mut self, items: impl Iterator<Item = Result<T>>) -> Result<()> {
        let mut items = items.peekable();
        if let Some(Err(_)) = items.peek() {
            return items.next().map_or(Ok(()), |r| r.map(drop));
        }
        self.write_array(items, 0)?;
        self.finish()
    }

    /// A top-level object: the fields of `head` and the field `key` holding an array of
    /// `items`, in key order (the order `serde_json`'s map keeps and prints).
    pub fn object_with_array<T: Serialize>(
        mut self,
        head: &Map<String, Value>,
        key: &str,
        items: impl Iterator<Item = Result<T>>,
    ) -> Result<()> {
        let mut items = items.peekable();
        if let Some(Err(_)) = items.peek() {
            return items.next().map_or(Ok(()), |r| r.map(drop));
        }
        self.w.write_all(b"{")?;
        let mut items = Some(items);
        let mut first = true;
        let mut field = |this: &mut Self, k: &str| -> Result<()> {
            let sep: &[u8] = if first { b"\n  " } else { b",\n  " };
            this.w.write_all(sep)?;
            first = false;
            serde_json::to_writer(&mut this.w, k).map_err(std::io::Error::from)?;
            this.w.write_all(b": ")?;
            Ok(())
        };
        for (k, v) in head.iter().filter(|(k, _)| k.as_str() != key) {
            if k.as_str() > key
                && let Some(items) = items.take()
            {
                field(&mut self, key)?;
                self.write_array(items, 1)?;
            }
            field(&mut self, k)?;
            self.value_at(v, 1)?;
        }
        if let Some(items) = items.take() {
            field(&mut self, key)?;
            self.write_array(items, 1)?;
        }
        self.w.write_all(b"\n}")?;
        self.finish()
    }

    /// `[`, each item at `depth + 1`, `]`, as `PrettyFormatter` lays out an array at `depth`.
    fn write_array<T: Serialize>(&mut self, items: impl Iterator<Item = Result<T>>, depth: usize) -> Result<()> {
        self.w.write_all(b"[")?;
        let mut any = false;
        for item in items {
            let item = item?;
            let sep: &[u8] = if any { b",\n" } else { b"\n" };
            self.w.write_all(sep)?;
            self.indent(depth + 1)?;
            self.value_at(&item, depth + 1)?;
            any = true;
        }
        if any {
            self.w.write_all(b"\n")?;
            self.indent(depth)?;
        }
        self.w.write_all(b"]")?;
        Ok(())
    }

    /// `value` pretty-printed as it is when nested `depth` levels deep.
    fn value_at(&mut self, value: &impl Serialize, depth: usize) -> Result<()> {
        let mut f = PrettyFormatter::new();
        // The formatter keeps its nesting level to itself: open `depth` arrays on a sink
        // so its next line breaks are indented as at that depth.
        for _ in 0..depth {
            f.begin_array(&mut std::io::sink())?;
        }
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut self.w, f)).map_err(std::io::Error::from)?;
        Ok(())
    }

    fn indent(&mut self, depth: usize) -> Result<()> {
        for _ in 0..depth {
            self.w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// The newline after the document, and everything out of the buffer.
    fn finish(mut self) -> Result<()> {
        self.w.write_all(b"\n")?;
        self.w.flush()?;
        Ok(())
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

/// A run's tags for a text line: `nightly, v1.2, "owner: data team"`. Tags are free text,
/// so one with a space, comma or quote is quoted (and its quotes escaped), and a reader
/// can tell where each ends; `--json` gives them exactly.
pub fn tags_text<'a>(tags: impl IntoIterator<Item = &'a Tag>) -> String {
    tags.into_iter()
        .map(|t| {
            let s = t.as_str();
            if s.contains([' ', ',', '"', '\\']) { format!("{s:?}") } else { s.to_owned() }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn a_streamed_document_is_byte_for_byte_what_serde_json_prints_for_the_whole() {
        let items = [
            json!({"z": [1, {"a": []}], "a": {}, "m": "quote \" newline \n tab \t é ✓", "n": null, "f": 0.1, "x": [[]]}),
            json!([]),
            json!(3),
            json!({"deep": {"deeper": [{"deepest": [1.5e300, -0.0, true]}]}}),
        ];
        let heads =
            [json!({}), json!({"a": 1}), json!({"zz": [1], "a": {"b": []}}), json!({"items": "replaced", "j": 1})];
        for head in heads {
            for n in 0..=items.len() {
                let mut whole = head.clone();
                whole["items"] = Value::Array(items[..n].to_vec());
                let want = serde_json::to_string_pretty(&whole).unwrap() + "\n";
                let mut buf = Vec::new();
                JsonStream::new(&mut buf)
                    .object_with_array(&object(head.clone()), "items", items[..n].iter().map(Ok))
                    .unwrap();
                assert_eq!(String::from_utf8(buf).unwrap(), want, "head {head}, {n} items");

                let want = serde_json::to_string_pretty(&items[..n]).unwrap() + "\n";
                let mut buf = Vec::new();
                JsonStream::new(&mut buf).array(items[..n].iter().map(Ok)).unwrap();
                assert_eq!(String::from_utf8(buf).unwrap(), want, "{n} items");
            }
        }
    }

    #[test]
    fn an_error_instead_of_the_first_element_writes_nothing_and_a_later_one_stops_the_document() {
        let mut buf = Vec::new();
        let items = vec![Err(Error::Failed("gone".into())), Ok(json!(1))];
        assert!(JsonStream::new(&mut buf).array(items.into_iter()).is_err());
        assert!(buf.is_empty());
        let items = vec![Ok(json!(1)), Err(Error::Failed("gone".into()))];
        assert!(JsonStream::new(&mut buf).array(items.into_iter()).is_err());
        assert_eq!(String::from_utf8(buf).unwrap(), "[\n  1");
    }
}
