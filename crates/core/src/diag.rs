//! Diagnostics about input files: what is wrong, where (file, line, column,
//! the offending text) and what to do about it.

use std::fmt;
use std::ops::Range;

/// One problem found in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, relative to the project root (`roles/worker.toml`).
    pub file: String,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// What is wrong: lowercase, offending names in backticks.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

/// A resolved position in a file, with the text of its line for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The source line without its newline, for display: control
    /// characters shown as their symbols (`␀`), and a long line cut to the
    /// part around `column`, with `…` where it was cut.
    pub source_line: String,
    /// How many characters of the line were left out at its start, less
    /// the `…` that replaces them: the caret goes at `column - 1 - skipped`.
    pub skipped: usize,
    /// How many characters to underline, at least 1.
    pub width: usize,
}

/// The most characters of a source line shown. A line of a megabyte would
/// otherwise be copied to the terminal whole for one caret.
const MAX_LINE_SHOWN: usize = 120;

/// How many characters before the column a cut line keeps.
const CONTEXT_BEFORE: usize = 40;

impl Location {
    /// Resolves a byte span in `text` to a line, column and underline.
    pub fn from_span(text: &str, span: Range<usize>) -> Location {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.min(text.len())).max(start);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let full = text[line_start..line_end].trim_end_matches('\r');
        let width = text[start..end.min(line_end)].chars().count().max(1);
        let (source_line, skipped, width) = excerpt(full, column - 1, width);
        Location {
            line,
            column,
            source_line,
            skipped,
            width,
        }
    }
}

/// The part of `line` shown around character `col`, how many characters
/// before it were dropped (net of the `…`), and the underline width that
/// fits in it.
fn excerpt(line: &str, col: usize, width: usize) -> (String, usize, usize) {
    let len = line.chars().count();
    let (from, to) = if len <= MAX_LINE_SHOWN {
        (0, len)
    } else {
        let from = col.saturating_sub(CONTEXT_BEFORE).min(len - MAX_LINE_SHOWN);
        (from, from + MAX_LINE_SHOWN)
    };
    let mut shown = String::new();
    if from > 0 {
        shown.push('…');
    }
    shown.extend(line.chars().skip(from).take(to - from).map(visible));
    if to < len {
        shown.push('…');
    }
    let skipped = from.saturating_sub(1);
    let caret = col.saturating_sub(skipped);
    let room = shown.chars().count().saturating_sub(caret).max(1);
    (shown, skipped, width.min(room))
}

/// The most characters of a message or help line shown: they quote what
/// they are about, and that may be a 20,000-character key.
const MAX_MESSAGE_SHOWN: usize = 300;

/// `s`, cut to [`MAX_MESSAGE_SHOWN`] characters with a `…`.
fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_MESSAGE_SHOWN) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

/// Control characters as the symbols Unicode has for them (`␀` for NUL):
/// printed raw they would move the cursor or vanish. A tab stays a tab.
fn visible(c: char) -> char {
    match c {
        '\t' => c,
        '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
        '\u{7f}' => '\u{2421}',
        c if c.is_control() => '\u{fffd}',
        c => c,
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl Diagnostic {
    /// A problem with a file as a whole (it is missing, unreadable, ...).
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            location: None,
            message: message.into(),
            help: None,
        }
    }

    /// A problem at a byte span of a file whose text is `text`.
    pub fn at(
        file: impl Into<String>,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            location: Some(Location::from_span(text, span)),
            message: message.into(),
            help: None,
        }
    }

    /// Adds what to do about it.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// `file:line:column`, or only the file when the position is unknown.
    pub fn position(&self) -> String {
        match &self.location {
            Some(l) => format!("{}:{}:{}", self.file, l.line, l.column),
            None => self.file.clone(),
        }
    }
}

impl fmt::Display for Diagnostic {
    /// Renders in the compiler style people already read every day:
    ///
    /// ```text
    /// error: unknown key `pakages`
    ///   --> roles/worker.toml:5:2
    ///    |
    ///  5 | [pakages]
    ///    |  ^^^^^^^
    ///    = help: did you mean `packages`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", cut(&self.message))?;
        match &self.location {
            Some(l) => {
                let gutter = l.line.to_string().len();
                let pad = " ".repeat(gutter);
                writeln!(f, "{pad}--> {}", self.position())?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {}", l.line, l.source_line)?;
                let indent: String = l
                    .source_line
                    .chars()
                    .take(l.column.saturating_sub(1 + l.skipped))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{pad} | {indent}{}", "^".repeat(l.width))?;
                if let Some(help) = &self.help {
                    writeln!(f, "{pad} = help: {}", cut(help))?;
                }
            }
            None => {
                writeln!(f, "  --> {}", self.file)?;
                if let Some(help) = &self.help {
                    writeln!(f, "   = help: {}", cut(help))?;
                }
            }
        }
        Ok(())
    }
}

/// Every problem found in one run, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was found, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// The most problems printed in one report. Hostile input can produce
/// thousands (every role of a 10,000-role chain); the first ones say what
/// is wrong, and the count says how much.
const MAX_SHOWN: usize = 50;

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0.iter().take(MAX_SHOWN) {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        if n > MAX_SHOWN {
            writeln!(
                f,
                "error: {} more problems not shown; fix these and run again\n",
                n - MAX_SHOWN
            )?;
        }
        write!(
            f,
            "error: {n} problem{} found",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits (insert, delete, replace, or swap two neighbours) from `a` to
/// `b`: swapped letters (`emial`, `bsae`) are the commonest typo and count
/// as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let mut d = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                d = d.min(before[j - 1] + 1);
            }
            cur.push(d);
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        let l = Location::from_span(text, 8..9);
        assert_eq!((l.line, l.column, l.width), (2, 2, 1));
        assert_eq!(l.source_line, "bé = 2");
    }

    #[test]
    fn location_of_span_past_the_end_is_clamped() {
        let l = Location::from_span("x", 5..9);
        assert_eq!((l.line, l.column), (1, 2));
    }

    #[test]
    fn renders_compiler_style() {
        let d = Diagnostic::at(
            "roles/w.toml",
            "x = 1\n[pakages]\n",
            7..14,
            "unknown key `pakages`",
        )
        .help("did you mean `packages`?");
        assert_eq!(
            d.to_string(),
            "error: unknown key `pakages`\n --> roles/w.toml:2:2\n  |\n2 | [pakages]\n  |  ^^^^^^^\n  = help: did you mean `packages`?\n"
        );
    }

    #[test]
    fn control_characters_are_shown_as_symbols() {
        let l = Location::from_span("a = \"x\0y\"\n", 6..7);
        assert_eq!(l.source_line, "a = \"x␀y\"");
        assert_eq!((l.line, l.column, l.width), (1, 7, 1));
    }

    #[test]
    fn a_long_line_is_cut_around_the_column() {
        // `Z` is the 5001st character, where the span starts.
        let line = format!("k = \"{}Z{}\"", "x".repeat(4995), "y".repeat(5000));
        let l = Location::from_span(&line, 5000..5001);
        assert_eq!(l.column, 5001);
        assert_eq!(l.source_line.chars().count(), MAX_LINE_SHOWN + 2);
        assert!(l.source_line.starts_with('…') && l.source_line.ends_with('…'));
        let shown = Diagnostic::at("roles/w.toml", &line, 5000..5001, "m").to_string();
        let lines: Vec<&str> = shown.lines().collect();
        let caret = lines[4].chars().position(|c| c == '^').unwrap();
        assert_eq!(lines[3].chars().nth(caret), Some('Z'), "{shown}");
        assert!(shown.len() < 400);
    }

    #[test]
    fn a_long_report_is_cut_with_a_count() {
        let one = Diagnostic::file("roles/x.toml", "bad");
        let r = Diagnostics(vec![one; 60]).to_string();
        assert_eq!(r.matches("error: bad").count(), MAX_SHOWN);
        assert!(r.contains("error: 10 more problems not shown"));
        assert!(r.ends_with("error: 60 problems found"));
    }

    #[test]
    fn suggests_close_names_only() {
        let keys = ["packages", "services", "users"];
        assert_eq!(did_you_mean("pakages", keys), Some("packages"));
        assert_eq!(did_you_mean("user", keys), Some("users"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn swapped_letters_are_one_edit() {
        assert_eq!(edit_distance("emial", "email"), 1);
        assert_eq!(edit_distance("bsae", "base"), 1);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("abc", "ca"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(did_you_mean("emial", ["email", "to"]), Some("email"));
    }
}
