//! Span-aware YAML loading: YAML text → JSON values plus a map from JSON
//! Pointer to source position, with hard limits on nesting and alias
//! expansion so hostile files fail fast instead of exhausting memory.
//!
//! The tree is built iteratively from `saphyr-parser` events, so depth is
//! bounded by our limit, never by the call stack. Alias expansion is bounded
//! twice: by node count (many small nodes) and by expanded size in bytes (a
//! few large scalars referenced many times); both are charged before an
//! anchored value is copied, so a refused file never allocates its expansion.

use std::collections::HashMap;
use std::fmt::Write as _;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

use super::diagnostic::excerpt;

mod unclosed;

/// A 1-based line and column in the source text (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub col: usize,
}

impl Pos {
    fn of(span: Span) -> Self {
        Self {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// Limits applied while building documents.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum nesting of sequences and mappings.
    pub max_depth: usize,
    /// Maximum number of nodes in a file after alias expansion.
    pub max_nodes: usize,
    /// Expanded size allowed per byte of source text (see [`Limits::budget`]).
    pub expansion_ratio: usize,
    /// Expanded size allowed whatever the file's size, in bytes.
    pub min_expanded_bytes: usize,
}

/// What one node costs in the size budget on top of its text: a rough
/// figure for the JSON structure around it (quotes, separators, brackets).
const NODE_BYTES: usize = 8;

impl Limits {
    /// The expanded-size budget for `text`: `expansion_ratio` times its
    /// length, but never less than `min_expanded_bytes`. The size of a tree
    /// is the bytes of its scalars and keys plus [`NODE_BYTES`] per node,
    /// counting every alias expansion and every stored anchor copy.
    pub fn budget(&self, text: &str) -> usize {
        text.len()
            .saturating_mul(self.expansion_ratio)
            .max(self.min_expanded_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        // A connection document has tens of nodes; these bounds leave room for
        // large provider `options` while refusing alias bombs and deep nests
        // long before they cost memory or recursion depth downstream.
        // The size budget: 8x the file or 4 MiB, whichever is larger, so a
        // file under the 1 MiB limit never expands beyond 8 MiB of values.
        Self {
            max_depth: 64,
            max_nodes: 100_000,
            expansion_ratio: 8,
            min_expanded_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A YAML problem that stops the whole file from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where the problem was found.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, Copy)]
struct NodeSpan {
    key: Option<Pos>,
    value: Pos,
}

/// One YAML document as a JSON value, with source positions.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's content.
    pub value: Value,
    /// Position of the document's first node.
    pub start: Pos,
    spans: HashMap<String, NodeSpan>,
}

impl Document {
    /// Position of the key naming `pointer` (or of its value when it has no
    /// key, e.g. a sequence item). Falls back to the nearest ancestor that
    /// exists in the source, e.g. for a missing field or inside an alias.
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer, |s| s.key.unwrap_or(s.value))
    }

    /// Position of the value at `pointer`, with the same fallback as [`Self::key_pos`].
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer, |s| s.value)
    }

    fn lookup(&self, pointer: &str, pick: impl Fn(&NodeSpan) -> Pos) -> Pos {
        if let Some(span) = self.spans.get(pointer) {
            return pick(span);
        }
        // A node that is not in the source (a missing field, or one inside
        // an alias) is reported at the key of its nearest ancestor that is:
        // `smtp:` for a missing `smtp.host`, which is where the operator
        // adds it, rather than at the first child of `smtp`.
        let mut p = pointer;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if let Some(span) = self.spans.get(p) {
                return span.key.unwrap_or(span.value);
            }
        }
        self.start
    }
}

/// Appends one JSON Pointer reference token to `base`.
pub fn pointer_push(base: &str, token: &str) -> String {
    let mut out = String::with_capacity(base.len() + token.len() + 1);
    out.push_str(base);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// Encodes one JSON Pointer reference token (`~` → `~0`, `/` → `~1`).
pub fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Decodes one JSON Pointer reference token (`~1` → `/`, `~0` → `~`).
pub fn pointer_unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

enum Frame {
    Seq {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
        start: Pos,
        nodes_before: usize,
        bytes_before: usize,
    },
    Map {
        map: Map<String, Value>,
        pointer: String,
        anchor: usize,
        start: Pos,
        nodes_before: usize,
        bytes_before: usize,
        key: Option<(String, Pos)>,
    },
}

/// The cost of a finished subtree, remembered with its anchor so an alias
/// is charged before the value is copied.
#[derive(Debug, Clone, Copy)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    spans: HashMap<String, NodeSpan>,
    anchors: HashMap<usize, (Value, Cost)>,
    nodes: usize,
    /// Size of the tree built so far, aliases expanded.
    bytes: usize,
    /// Size of the anchor copies kept for later aliases.
    anchor_bytes: usize,
    /// Limit on `bytes + anchor_bytes`.
    budget: usize,
    root: Option<(Value, Pos)>,
}

fn err(pos: Pos, message: impl Into<String>) -> YamlError {
    YamlError {
        pos,
        message: message.into(),
    }
}

impl Builder {
    fn new(limits: Limits, budget: usize) -> Self {
        Self {
            limits,
            stack: Vec::new(),
            spans: HashMap::new(),
            anchors: HashMap::new(),
            nodes: 0,
            bytes: 0,
            anchor_bytes: 0,
            budget,
            root: None,
        }
    }

    /// Charges `cost` to the file, failing once either budget is exceeded.
    fn count(&mut self, cost: Cost, pos: Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(cost.nodes);
        if self.nodes > self.limits.max_nodes {
            return Err(err(
                pos,
                format!(
                    "document expands to more than {} nodes (alias/anchor bomb?)",
                    self.limits.max_nodes
                ),
            ));
        }
        self.bytes = self.bytes.saturating_add(cost.bytes);
        self.check_size(pos)
    }

    fn check_size(&self, pos: Pos) -> Result<(), YamlError> {
        if self.bytes.saturating_add(self.anchor_bytes) > self.budget {
            return Err(err(
                pos,
                format!(
                    "document expands to more than {} bytes with its aliases (alias/anchor bomb?)",
                    self.budget
                ),
            ));
        }
        Ok(())
    }

    /// Pointer of the node about to start under the current top frame.
    fn child_pointer(&self, pos: Pos) -> Result<String, YamlError> {
        match self.stack.last() {
            None => Ok(String::new()),
            Some(Frame::Seq { items, pointer, .. }) => {
                Ok(pointer_push(pointer, &items.len().to_string()))
            }
            Some(Frame::Map {
                key: Some((k, _)),
                pointer,
                ..
            }) => Ok(pointer_push(pointer, k)),
            Some(Frame::Map { key: None, .. }) => Err(err(
                pos,
                "mapping keys must be plain values, not sequences or mappings",
            )),
        }
    }

    fn open(&mut self, seq: bool, anchor: usize, pos: Pos) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(err(
                pos,
                format!("nesting deeper than {} levels", self.limits.max_depth),
            ));
        }
        self.count(
            Cost {
                nodes: 1,
                bytes: NODE_BYTES,
            },
            pos,
        )?;
        let pointer = self.child_pointer(pos)?;
        // Taken after this node's own charge, which `close` adds back.
        let nodes_before = self.nodes;
        let bytes_before = self.bytes;
        self.stack.push(if seq {
            Frame::Seq {
                items: Vec::new(),
                pointer,
                anchor,
                start: pos,
                nodes_before,
                bytes_before,
            }
        } else {
            Frame::Map {
                map: Map::new(),
                pointer,
                anchor,
                start: pos,
                nodes_before,
                bytes_before,
                key: None,
            }
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let (value, anchor, start, nodes_before, bytes_before) = match self.stack.pop() {
            Some(Frame::Seq {
                items,
                anchor,
                start,
                nodes_before,
                bytes_before,
                ..
            }) => (
                Value::Array(items),
                anchor,
                start,
                nodes_before,
                bytes_before,
            ),
            Some(Frame::Map {
                map,
                anchor,
                start,
                nodes_before,
                bytes_before,
                ..
            }) => (
                Value::Object(map),
                anchor,
                start,
                nodes_before,
                bytes_before,
            ),
            None => return Err(err(Pos::default(), "unbalanced YAML events")),
        };
        let subtree = Cost {
            nodes: self.nodes.saturating_sub(nodes_before).saturating_add(1),
            bytes: self
                .bytes
                .saturating_sub(bytes_before)
                .saturating_add(NODE_BYTES),
        };
        self.push(value, start, anchor, subtree)
    }

    /// Places a completed node into its parent (or as the document root).
    fn push(
        &mut self,
        value: Value,
        pos: Pos,
        anchor: usize,
        subtree: Cost,
    ) -> Result<(), YamlError> {
        if anchor != 0 {
            // The copy kept for aliases is memory too: charged before it is made.
            self.anchor_bytes = self.anchor_bytes.saturating_add(subtree.bytes);
            self.check_size(pos)?;
            let old = self.anchors.insert(anchor, (value.clone(), subtree));
            if let Some((_, old)) = old {
                self.anchor_bytes = self.anchor_bytes.saturating_sub(old.bytes);
            }
        }
        match self.stack.last_mut() {
            None => {
                self.spans.insert(
                    String::new(),
                    NodeSpan {
                        key: None,
                        value: pos,
                    },
                );
                self.root = Some((value, pos));
            }
            Some(Frame::Seq { items, pointer, .. }) => {
                let p = pointer_push(pointer, &items.len().to_string());
                self.spans.insert(
                    p,
                    NodeSpan {
                        key: None,
                        value: pos,
                    },
                );
                items.push(value);
            }
            Some(Frame::Map {
                map, pointer, key, ..
            }) => match key.take() {
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        Value::Null => "null".to_owned(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        Value::Array(_) | Value::Object(_) => {
                            return Err(err(
                                pos,
                                "mapping keys must be plain values, not sequences or mappings",
                            ));
                        }
                    };
                    if map.contains_key(&k) {
                        return Err(err(
                            pos,
                            format!("duplicate key `{}` in this mapping", excerpt(&k)),
                        ));
                    }
                    *key = Some((k, pos));
                }
                Some((k, key_pos)) => {
                    let p = pointer_push(pointer, &k);
                    self.spans.insert(
                        p,
                        NodeSpan {
                            key: Some(key_pos),
                            value: pos,
                        },
                    );
                    map.insert(k, value);
                }
            },
        }
        Ok(())
    }

    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), YamlError> {
        let Some(subtree) = self.anchors.get(&id).map(|(_, cost)| *cost) else {
            return Err(err(pos, "alias refers to an unknown anchor"));
        };
        // Charged first: a refused expansion is never copied.
        self.count(subtree, pos)?;
        let Some(value) = self.anchors.get(&id).map(|(value, _)| value.clone()) else {
            return Err(err(pos, "alias refers to an unknown anchor"));
        };
        // Aliased nodes keep the alias position; lookups deeper inside fall
        // back to it, which is where an operator would look.
        self.push(value, pos, 0, subtree)
    }

    fn finish_document(&mut self, fallback: Pos) -> Document {
        let (value, start) = self.root.take().unwrap_or((Value::Null, fallback));
        // Anchors do not cross documents; their copies are freed here.
        self.anchors.clear();
        self.anchor_bytes = 0;
        Document {
            value,
            start,
            spans: std::mem::take(&mut self.spans),
        }
    }
}

fn is_core_tag(tag: &Tag, suffix: &str) -> bool {
    (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:") && tag.suffix == suffix
}

/// Resolves a plain scalar per the YAML 1.2 core schema.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = digits.parse::<u64>()
            && !s.starts_with('-')
        {
            return Value::Number(u.into());
        }
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    let looks_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

/// Parses every document in `text`.
///
/// Explicitly empty documents (a lone `---`) come back as `Value::Null`.
pub fn parse(text: &str, limits: Limits) -> Result<Vec<Document>, YamlError> {
    let mut builder = Builder::new(limits, limits.budget(text));
    let mut docs = Vec::new();
    let mut doc_start = Pos::default();
    let mut tracker = unclosed::Tracker::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| within(text, tracker.syntax_error(text, &e)))?;
        tracker.observe(&event, span);
        let pos = Pos::of(span);
        match event {
            Event::DocumentStart(_) => {
                doc_start = pos;
            }
            Event::DocumentEnd => docs.push(builder.finish_document(doc_start)),
            Event::SequenceStart(anchor, _) => builder.open(true, anchor, pos)?,
            Event::MappingStart(anchor, _) => builder.open(false, anchor, pos)?,
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Alias(id) => builder.alias(id, pos)?,
            Event::Scalar(text, style, anchor, tag) => {
                let cost = Cost {
                    nodes: 1,
                    bytes: text.len().saturating_add(NODE_BYTES),
                };
                builder.count(cost, pos)?;
                let value = match (&tag, style) {
                    (Some(t), _) if is_core_tag(t, "str") => Value::String(text.into_owned()),
                    (_, ScalarStyle::Plain) => resolve_plain(&text),
                    _ => Value::String(text.into_owned()),
                };
                builder.push(value, pos, anchor, cost)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
    Ok(docs)
}

/// Moves an error's position onto the text: saphyr can place a marker past
/// the end of its line (e.g. after unprintable characters), which an editor
/// cannot jump to. The line is kept, the column clamped to one past its end.
fn within(text: &str, mut e: YamlError) -> YamlError {
    let mut lines = text.split('\n');
    let count = text.split('\n').count();
    e.pos.line = e.pos.line.clamp(1, count.max(1));
    let width = lines
        .nth(e.pos.line - 1)
        .map_or(0, |l| l.trim_end_matches('\r').chars().count());
    e.pos.col = e.pos.col.clamp(1, width + 1);
    e
}

/// Renders a JSON Pointer for humans: the empty root pointer becomes `/`.
pub fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

/// Renders a scalar found in YAML for messages (strings unquoted).
pub fn scalar_text(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::String(s) => out.push_str(s),
        other => {
            let _ = write!(out, "{other}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
