//! Turning saphyr's syntax errors into positions an operator can act on.
//!
//! An unclosed `[`, `{` or quote is noticed by the parser only where the
//! text stops making sense, often several lines later, so its marker points
//! at an innocent line. For those cases the error is moved to the opening
//! bracket or quote and the parser's own position and words are kept in the
//! message; every other syntax error is reported where the parser put it.
//!
//! Flow collections are known from the events already delivered plus a
//! small scan of the text the scanner had read ahead (it looks ahead for
//! possible implicit keys, so brackets can be tokenized without an event).
//! Brackets are only blamed when a bracket-aware scan to the end of the file
//! never closes them; a file that closes them, even by accident in a plain
//! scalar, keeps today's position rather than being told something wrong.

use std::ops::ControlFlow;

use saphyr_parser::{Event, Parser, ScanError, Span};

use super::{Pos, YamlError, err};

/// saphyr's words for errors that an unclosed flow collection provokes once
/// the following block lines are read as flow content (checked against
/// saphyr-parser 0.3's parser and scanner), matched exactly; see also
/// [`FLOW_PARSER_PREFIX`].
const FLOW_SYMPTOMS: &[&str] = &[
    "while parsing a node, did not find expected node content",
    "illegal placement of ':' indicator",
    "invalid indentation in flow construct",
    "invalid indentation",
];

/// The start of the parser's "expected ',' or ']'" (or `'}'`) messages.
const FLOW_PARSER_PREFIX: &str = "while parsing a flow ";

/// saphyr's words when a quoted scalar never found its closing quote; the
/// marker of these is the opening quote.
const QUOTE_RUNS_ON: &[&str] = &[
    "while scanning a quoted scalar, found unexpected end of stream",
    "while scanning a quoted scalar, found unexpected document indicator",
    "invalid indentation in quoted scalar",
];

/// A quoted scalar closed by a later line's quote and followed by what was
/// meant to come after that quote.
const QUOTE_TRAILING: &str = "invalid trailing content after double-quoted scalar";

/// What the event loop remembers so a syntax error can be explained: the
/// spans of collections still open and where the last event ended.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    open: Vec<Span>,
    last_end: usize,
}

impl Tracker {
    /// Records one delivered event; cheap enough for the success path.
    pub(super) fn observe(&mut self, event: &Event<'_>, span: Span) {
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => self.open.push(span),
            Event::SequenceEnd | Event::MappingEnd => {
                self.open.pop();
            }
            _ => {}
        }
        self.last_end = self.last_end.max(span.end.index());
    }

    /// The error to report for a parser failure over `text`.
    pub(super) fn syntax_error(&self, text: &str, e: &ScanError) -> YamlError {
        let info = e.info();
        let noticed = Pos {
            line: e.marker().line(),
            col: e.marker().col() + 1,
        };
        if info == "recursion limit exceeded" {
            return err(
                noticed,
                format!("nesting deeper than the YAML parser allows ({info})"),
            );
        }
        // Only the error path pays for a char view: saphyr's indices count
        // characters, not bytes.
        let chars: Vec<char> = text.chars().collect();
        let at = e.marker().index();
        let explained = if QUOTE_RUNS_ON.contains(&info) {
            unclosed_quote(text, &chars, at, info)
        } else if info == QUOTE_TRAILING {
            late_closing_quote(&chars, at, noticed, info)
        } else if info.starts_with(FLOW_PARSER_PREFIX) || FLOW_SYMPTOMS.contains(&info) {
            self.unclosed_flow(&chars, at, noticed, info)
        } else {
            None
        };
        explained.unwrap_or_else(|| err(noticed, format!("YAML syntax error: {info}")))
    }

    /// The innermost flow collection still open where the parser stopped,
    /// if nothing after it in the file closes it.
    fn unclosed_flow(
        &self,
        chars: &[char],
        at: usize,
        noticed: Pos,
        info: &str,
    ) -> Option<YamlError> {
        // A flow collection's span ends just after its bracket (it starts
        // earlier when an anchor or tag comes first); block collections and
        // implicit single-pair mappings end elsewhere or have empty spans.
        let mut open: Vec<(usize, char)> = self
            .open
            .iter()
            .filter(|s| s.end.index() > s.start.index())
            .filter_map(|s| {
                let i = s.end.index() - 1;
                chars
                    .get(i)
                    .filter(|c| matches!(c, '[' | '{'))
                    .map(|&c| (i, c))
            })
            .collect();
        // Brackets the scanner read ahead of the last event.
        let from = self.last_end.min(at);
        let _ = walk_brackets(chars, from, at, open.len(), |i, c| {
            match c {
                '[' | '{' => open.push((i, c)),
                _ => {
                    if open.last().is_some_and(|&(_, o)| closes(o, c)) {
                        open.pop();
                    }
                }
            }
            ControlFlow::Continue(())
        });
        let &(start, bracket) = open.last()?;
        if closed_later(chars, start) {
            return None;
        }
        Some(err(
            pos_at(chars, start),
            format!(
                "YAML syntax error: unclosed `{bracket}` opened here (the parser gave up at {}: {info})",
                at_line_col(noticed)
            ),
        ))
    }
}

fn at_line_col(p: Pos) -> String {
    format!("line {}, column {}", p.line, p.col)
}

fn closes(open: char, close: char) -> bool {
    matches!((open, close), ('[', ']') | ('{', '}'))
}

/// Whether the collection opened at `start` is closed anywhere after it.
fn closed_later(chars: &[char], start: usize) -> bool {
    let mut stack: Vec<char> = Vec::new();
    let walked = walk_brackets(chars, start, chars.len(), 0, |_, c| {
        match c {
            '[' | '{' => stack.push(c),
            _ => {
                // A mismatched bracket closes nothing: `{a: [1}` leaves the
                // `[` open, which is the one the operator has to fix.
                if stack.last().is_some_and(|&o| closes(o, c)) {
                    stack.pop();
                    if stack.is_empty() {
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    });
    walked.is_break()
}

/// Calls `on` for each flow bracket in `chars[from..to]`, skipping quoted
/// scalars and comments. `depth` is how many flow collections are open at
/// `from`: inside one every bracket is an indicator, outside only one that
/// starts a token is (`foo[1]` is a plain scalar).
fn walk_brackets(
    chars: &[char],
    from: usize,
    to: usize,
    mut depth: usize,
    mut on: impl FnMut(usize, char) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let to = to.min(chars.len());
    let mut i = from;
    // At a token boundary a quote opens a scalar and `#` a comment; in the
    // middle of a plain scalar (`it's`, `a#b`) they are ordinary text.
    let mut boundary = true;
    while i < to {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => boundary = true,
            '#' if boundary => {
                while i < to && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '"' | '\'' if boundary => {
                i = quoted_end(chars, i).unwrap_or(to);
                boundary = false;
                continue;
            }
            '[' | '{' if boundary || depth > 0 => {
                depth += 1;
                on(i, c)?;
                boundary = true;
            }
            ']' | '}' if depth > 0 => {
                depth -= 1;
                on(i, c)?;
                boundary = false;
            }
            // JSON-like flow content may put a quote right after these.
            ',' | ':' if depth > 0 => boundary = true,
            _ => boundary = false,
        }
        i += 1;
    }
    ControlFlow::Continue(())
}

/// Index just past the closing quote of the quoted scalar opened at `open`.
fn quoted_end(chars: &[char], open: usize) -> Option<usize> {
    let quote = *chars.get(open)?;
    let mut i = open + 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' if quote == '"' => i += 2,
            '\'' if quote == '\'' && chars.get(i + 1) == Some(&'\'') => i += 2,
            c if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The opening quote of the quoted scalar whose closing quote is at `close`.
///
/// Inside a double-quoted scalar every `"` but the last is escaped by an odd
/// run of backslashes; inside a single-quoted one quotes come in pairs, so
/// the opener is the first of an odd run. Either way the scan cannot leave
/// the scalar, so comments and other scalars cannot mislead it.
fn opening_quote(chars: &[char], close: usize) -> Option<usize> {
    let quote = *chars.get(close)?;
    let mut i = close;
    while i > 0 {
        i -= 1;
        if chars[i] != quote {
            continue;
        }
        if quote == '"' {
            let backslashes = chars[..i].iter().rev().take_while(|&&c| c == '\\').count();
            if backslashes % 2 == 0 {
                return Some(i);
            }
        } else {
            let run = chars[..=i].iter().rev().take_while(|&&c| c == '\'').count();
            if run % 2 == 1 {
                return Some(i + 1 - run);
            }
            // An escaped pair (or several): resume before the whole run.
            i = i + 1 - run;
        }
    }
    None
}

/// A quoted scalar that ran on without a closing quote: saphyr's marker is
/// already the opening quote, so what is missing is where it gave up.
fn unclosed_quote(text: &str, chars: &[char], at: usize, info: &str) -> Option<YamlError> {
    let quote = *chars.get(at).filter(|c| matches!(c, '"' | '\''))?;
    let gave_up = if info.ends_with("end of stream") {
        pos_at(chars, chars.len())
    } else {
        gave_up_line(text, at, info)?
    };
    Some(err(
        pos_at(chars, at),
        format!(
            "YAML syntax error: unclosed `{quote}` opened here (the parser gave up at {}: {info})",
            at_line_col(gave_up)
        ),
    ))
}

/// The first line at which saphyr gives `info` for the scalar at `at`.
///
/// saphyr reports these errors at the opening quote and keeps the offending
/// line to itself, and which line offends depends on its indentation state.
/// Rather than imitate that, ask the parser: a prefix of the file that stops
/// before the offending line ends inside the scalar (an end-of-stream error),
/// one that includes it gives the same error again, so a binary search over
/// line prefixes finds the line in a few re-parses on the error path.
fn gave_up_line(text: &str, at: usize, info: &str) -> Option<Pos> {
    let line_ends: Vec<usize> = text
        .char_indices()
        .filter(|&(_, c)| c == '\n')
        .map(|(b, _)| b + 1)
        .chain(std::iter::once(text.len()))
        .collect();
    let reproduces = |lines: usize| {
        let prefix = &text[..line_ends[lines - 1]];
        Parser::new_from_str(prefix)
            .find_map(Result::err)
            .is_some_and(|e| e.info() == info && e.marker().index() == at)
    };
    // `lo` lines do not reproduce the error, `hi` lines do.
    let (mut lo, mut hi) = (0, line_ends.len());
    if !reproduces(hi) {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reproduces(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // `hi` is 1-based; report its first non-blank character.
    let start = if hi == 1 { 0 } else { line_ends[hi - 2] };
    let line = text[start..line_ends[hi - 1]].trim_end_matches(['\r', '\n']);
    let indent = line.chars().take_while(|c| matches!(c, ' ' | '\t')).count();
    Some(Pos {
        line: hi,
        col: if indent == line.chars().count() {
            1
        } else {
            indent + 1
        },
    })
}

/// A quoted scalar that closed only on a later line, at a quote that was
/// meant to open the next value, which then reads as trailing content.
/// A scalar closed on its own line is a genuine trailing-content mistake and
/// is left where saphyr put it.
fn late_closing_quote(chars: &[char], at: usize, noticed: Pos, info: &str) -> Option<YamlError> {
    let close = chars[..at.min(chars.len())]
        .iter()
        .rposition(|c| !matches!(c, ' ' | '\t'))
        .filter(|&i| matches!(chars[i], '"' | '\''))?;
    let open = opening_quote(chars, close)?;
    let (opened, closed) = (pos_at(chars, open), pos_at(chars, close));
    if opened.line == closed.line {
        return None;
    }
    Some(err(
        opened,
        format!(
            "YAML syntax error: the `{}` opened here is only closed at {}; is its closing quote missing? (the parser gave up at {}: {info})",
            chars[open],
            at_line_col(closed),
            at_line_col(noticed)
        ),
    ))
}

/// 1-based line and column of character index `idx`, counted as saphyr does.
fn pos_at(chars: &[char], idx: usize) -> Pos {
    let before = &chars[..idx.min(chars.len())];
    let line_start = before.iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1);
    Pos {
        line: before.iter().filter(|&&c| c == '\n').count() + 1,
        col: before.len() - line_start + 1,
    }
}
