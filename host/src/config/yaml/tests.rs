//! Unit tests of the span-aware YAML loader.
use super::*;

fn one(text: &str) -> Document {
    let mut docs = parse(text, Limits::default()).unwrap();
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

#[test]
fn positions_point_at_keys_and_values() {
    let d = one("a: 1\nsmtp:\n  port: \"587\"\n  list: [x, y]\n");
    assert_eq!(d.key_pos("/smtp/port"), Pos { line: 3, col: 3 });
    assert_eq!(d.value_pos("/smtp/port"), Pos { line: 3, col: 9 });
    assert_eq!(d.value_pos("/smtp/list/1"), Pos { line: 4, col: 13 });
    // Missing fields fall back to the nearest ancestor.
    assert_eq!(d.key_pos("/smtp/host"), Pos { line: 2, col: 1 });
    assert_eq!(d.value["smtp"]["port"], Value::String("587".into()));
}

#[test]
fn core_schema_scalars_resolve() {
    let d = one("a: 587\nb: true\nc: ~\nd: 1.5\ne: '12'\nf: 0x1F\ng: hello\nh: .inf\n");
    assert_eq!(d.value["a"], 587);
    assert_eq!(d.value["b"], true);
    assert!(d.value["c"].is_null());
    assert_eq!(d.value["d"], 1.5);
    assert_eq!(d.value["e"], "12");
    assert_eq!(d.value["f"], 31);
    assert_eq!(d.value["g"], "hello");
    assert_eq!(d.value["h"], ".inf");
}

#[test]
fn multiple_documents_and_aliases() {
    let docs = parse("a: &x {k: 1}\nb: *x\n---\nc: 2\n", Limits::default()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].value["b"]["k"], 1);
    assert_eq!(docs[1].value["c"], 2);
    assert_eq!(docs[1].start.line, 4);
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        let _ = writeln!(
            text,
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
        );
    }
    let e = parse(&text, Limits::default()).unwrap_err();
    assert!(e.message.contains("alias"), "{e:?}");
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = parse(&text, Limits::default()).unwrap_err();
    assert!(e.message.contains("nesting deeper than"), "{e:?}");
    let block: String = (0..10_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let e = parse(&block, Limits::default()).unwrap_err();
    assert!(e.message.contains("nesting"), "{e:?}");
}

#[test]
fn duplicate_keys_are_errors() {
    let e = parse("a: 1\nb: 2\na: 3\n", Limits::default()).unwrap_err();
    assert_eq!(e.pos, Pos { line: 3, col: 1 });
    assert!(e.message.contains("duplicate key `a`"));
}

fn syntax_error(text: &str) -> YamlError {
    let e = parse(text, Limits::default()).unwrap_err();
    assert!(e.message.starts_with("YAML syntax error: "), "{e:?}");
    e
}

#[test]
fn unclosed_bracket_is_reported_where_it_opens() {
    let text = "kind: Connection\nname: alpha\nsmtp:\n  host: mail\n  port: 587\n\
                # tags follow\ntags: [smtp, primary\nfrom: ops@example.com\nto: x\n";
    let e = syntax_error(text);
    assert_eq!(e.pos, Pos { line: 7, col: 7 }, "{e:?}");
    assert!(e.message.contains("unclosed `[` opened here"), "{e:?}");
    // Where saphyr noticed, in its own words, so nothing is lost.
    assert!(
        e.message
            .contains("gave up at line 8, column 5: illegal placement of ':' indicator"),
        "{e:?}"
    );
    // At the end of the file too.
    let e = syntax_error("a: 1\nb: [1, 2\n\n# trailing comment\n");
    assert_eq!(e.pos, Pos { line: 2, col: 4 }, "{e:?}");
    assert!(e.message.contains("line 5, column 1"), "{e:?}");
    // Windows line ends count as one break, as saphyr counts them.
    let e = syntax_error("a: 1\r\nb: [1, 2\r\nc: 3\r\n");
    assert_eq!(e.pos, Pos { line: 2, col: 4 }, "{e:?}");
    let e = syntax_error("a: 1\r\nb: \"x\r\nc: 3\r\n");
    assert_eq!(e.pos, Pos { line: 2, col: 4 }, "{e:?}");
    assert!(e.message.contains("gave up at line 3, column 1"), "{e:?}");
}

#[test]
fn unclosed_brace_is_reported_where_it_opens() {
    let e = syntax_error("a: 1\nb: {x: 1,\n  y: 2\nc: 3\n");
    assert_eq!(e.pos, Pos { line: 2, col: 4 }, "{e:?}");
    assert!(e.message.contains("unclosed `{` opened here"), "{e:?}");
    assert!(e.message.contains("line 4, column 2"), "{e:?}");
}

#[test]
fn the_inner_unclosed_collection_is_blamed() {
    // The outer `]` does not close the `{`, so the `{` is what to fix.
    let e = syntax_error("a: [1, {x: 2, y: 3]\nb: 4\n");
    assert_eq!(e.pos, Pos { line: 1, col: 8 }, "{e:?}");
    assert!(e.message.contains("unclosed `{`"), "{e:?}");
    let e = syntax_error("a: {k: [1, 2}\nb: 3\n");
    assert_eq!(e.pos, Pos { line: 1, col: 8 }, "{e:?}");
    assert!(e.message.contains("unclosed `[`"), "{e:?}");
    // Closed inner collections, and brackets inside quotes and comments,
    // do not count.
    let e = syntax_error("a: [1, {x: 2}, \"]\", [3] # ]\nb: 4\n");
    assert_eq!(e.pos, Pos { line: 1, col: 4 }, "{e:?}");
    assert!(e.message.contains("unclosed `[`"), "{e:?}");
    // A collection the scanner read ahead of the last event.
    let e = syntax_error("a: [1, [2, [3\nb: 4\n");
    assert_eq!(e.pos, Pos { line: 1, col: 12 }, "{e:?}");
}

#[test]
fn unclosed_double_quote_is_reported_where_it_opens() {
    // Quotes in comments, in plain scalars and in closed scalars before it
    // do not mislead.
    let text = "# it's a \"test\" file\na: 'it''s fine'\nb: don't\nc: \"x\nd: 1\ne: 2\n";
    let e = syntax_error(text);
    assert_eq!(e.pos, Pos { line: 4, col: 4 }, "{e:?}");
    assert!(e.message.contains("unclosed `\"` opened here"), "{e:?}");
    assert!(e.message.contains("gave up at line 5, column 1"), "{e:?}");
    // Running into the end of the file.
    let e = syntax_error("- \"abc\n- x\n");
    assert_eq!(e.pos, Pos { line: 1, col: 3 }, "{e:?}");
    assert!(e.message.contains("line 3, column 1"), "{e:?}");
    // Running into the next document.
    let e = syntax_error("a: \"abc\n  def\n---\nb: 1\n");
    assert_eq!(e.pos, Pos { line: 1, col: 4 }, "{e:?}");
    assert!(e.message.contains("line 3, column 1"), "{e:?}");
    // Closed by the next line's opening quote: blame the first one.
    let e = syntax_error("a: \"hel\\\"lo\n  b: \"x\"\n");
    assert_eq!(e.pos, Pos { line: 1, col: 4 }, "{e:?}");
    assert!(
        e.message.contains("only closed at line 2, column 6"),
        "{e:?}"
    );
    assert!(e.message.contains("gave up at line 2, column 7"), "{e:?}");
}

#[test]
fn unclosed_single_quote_is_reported_where_it_opens() {
    let e = syntax_error("a: 1\nb: 'it''s\nc: 3\n");
    assert_eq!(e.pos, Pos { line: 2, col: 4 }, "{e:?}");
    assert!(e.message.contains("unclosed `'` opened here"), "{e:?}");
    assert!(e.message.contains("gave up at line 3, column 1"), "{e:?}");
    // Nested, where the scalar may continue on deeper lines.
    let e = syntax_error("a:\n  b: 'it''s\n    more\n  c: 'x'\n");
    assert_eq!(e.pos, Pos { line: 2, col: 6 }, "{e:?}");
    assert!(e.message.contains("gave up at line 4, column 3"), "{e:?}");
    // Closed by the next line's opening quote.
    let e = syntax_error("a: 'it''s\n  b: 'x'\n");
    assert_eq!(e.pos, Pos { line: 1, col: 4 }, "{e:?}");
    assert!(
        e.message
            .contains("`'` opened here is only closed at line 2, column 6"),
        "{e:?}"
    );
}

#[test]
fn other_syntax_errors_keep_the_parser_position() {
    let e = syntax_error("a: [1, @x]\n");
    assert_eq!(e.pos, Pos { line: 1, col: 8 }, "{e:?}");
    assert!(!e.message.contains("unclosed"), "{e:?}");
    let e = syntax_error("a: \"hello\" world\n");
    assert_eq!(e.pos, Pos { line: 1, col: 12 }, "{e:?}");
    assert_eq!(
        e.message,
        "YAML syntax error: invalid trailing content after double-quoted scalar"
    );
    // A mistake inside a multi-line flow collection that is closed later.
    let e = syntax_error("a: {\n  x: 1 y: 2\n}\n");
    assert_eq!(e.pos, Pos { line: 2, col: 9 }, "{e:?}");
    assert!(!e.message.contains("unclosed"), "{e:?}");
    assert_eq!(
        e.message,
        "YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'"
    );
    // saphyr already points bad escapes at the opening quote.
    let e = syntax_error("a: \"C:\\dir\"\n");
    assert_eq!(e.pos, Pos { line: 1, col: 4 }, "{e:?}");
    assert!(e.message.contains("unknown escape"), "{e:?}");
}

#[test]
fn pointer_tokens_are_escaped() {
    assert_eq!(pointer_push("/a", "b/c~d"), "/a/b~1c~0d");
}

/// One large scalar referenced many times: few nodes, many bytes.
fn amplification(scalar_bytes: usize, aliases: usize) -> String {
    let mut text = format!("a: &big \"{}\"\nb: [", "x".repeat(scalar_bytes));
    for i in 0..aliases {
        text.push_str(if i == 0 { "*big" } else { ", *big" });
    }
    text.push_str("]\n");
    text
}

#[test]
fn large_scalar_aliased_many_times_is_refused_by_size() {
    let text = amplification(100_000, 20_000);
    let e = parse(&text, Limits::default()).unwrap_err();
    assert!(
        e.message
            .contains("expands to more than 4194304 bytes with its aliases"),
        "{e:?}"
    );
    // Found on the `b:` line, at the first alias over the budget.
    assert_eq!(e.pos.line, 2, "{e:?}");
}

#[test]
fn size_budget_grows_with_the_file_and_allows_honest_reuse() {
    let limits = Limits::default();
    assert_eq!(limits.budget("short"), 4 * 1024 * 1024);
    assert_eq!(limits.budget(&"x".repeat(1024 * 1024)), 8 * 1024 * 1024);
    // A few aliases of a large value stay well inside 8x.
    let text = amplification(100_000, 3);
    let docs = parse(&text, limits).unwrap();
    assert_eq!(docs[0].value["b"][2].as_str().map(str::len), Some(100_000));
}

#[test]
fn anchor_copies_count_towards_the_size_budget() {
    // No alias at all, but every level keeps a copy of its subtree.
    let limits = Limits {
        min_expanded_bytes: 1000,
        expansion_ratio: 1,
        ..Limits::default()
    };
    let text = format!("a: &a [&b [&c [&d \"{}\"]]]\n", "y".repeat(300));
    let e = parse(&text, limits).unwrap_err();
    assert!(e.message.contains("bytes with its aliases"), "{e:?}");
    // The same file without anchors fits.
    let plain = text
        .replace("&a ", "")
        .replace("&b ", "")
        .replace("&c ", "");
    let plain = plain.replace("&d ", "");
    assert!(parse(&plain, limits).is_ok());
}

#[test]
fn duplicate_keys_are_quoted_as_an_excerpt() {
    let key = "k".repeat(10_000);
    // Explicit keys: an implicit key is limited to 1024 characters.
    let e = parse(&format!("? {key}\n: 1\n? {key}\n: 2\n"), Limits::default()).unwrap_err();
    assert!(e.message.len() < 200, "{}", e.message.len());
    assert!(e.message.contains("…`"), "{e:?}");
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::super::{Limits, parse};

    /// Whether `pos` lies within `text` (or just past its end, where
    /// "unexpected end of stream" is found). Lines are what the loader
    /// reports positions in (`yaml::within`): split at LF, a CR before the
    /// LF not counted; a lone CR is a character of its line, as editors show it.
    fn inside(text: &str, pos: super::Pos) -> bool {
        let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
        let widest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        pos.line >= 1 && pos.line <= lines.len() + 1 && pos.col >= 1 && pos.col <= widest + 2
    }

    fn check_any(text: &str) -> Result<(), TestCaseError> {
        match parse(text, Limits::default()) {
            Ok(_) => Ok(()),
            Err(e) => {
                prop_assert!(inside(text, e.pos), "{e:?} outside {text:?}");
                prop_assert!(!e.message.is_empty());
                Ok(())
            }
        }
    }

    /// Scalars that survive JSON → YAML: no floats (their text form is
    /// lossy), any string, integers across the i64 and u64 range.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// Block-style YAML with every scalar written as a JSON (= YAML
    /// double-quoted) scalar.
    fn block(value: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        let nested = |v: &Value| match v {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => false,
        };
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    out.push_str(&pad);
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if nested(v) {
                        out.push('\n');
                        block(v, indent + 2, out);
                    } else {
                        out.push(' ');
                        out.push_str(&v.to_string());
                        out.push('\n');
                    }
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for v in items {
                    out.push_str(&pad);
                    out.push('-');
                    if nested(v) {
                        out.push('\n');
                        block(v, indent + 2, out);
                    } else {
                        out.push(' ');
                        out.push_str(&v.to_string());
                        out.push('\n');
                    }
                }
            }
            other => {
                out.push_str(&pad);
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_and_errors_are_located(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            check_any(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn yaml_like_text_never_panics_and_errors_are_located(
            text in r##"([a-z0-9 ]{0,6}|[:\-\[\]{},&*!|>'"#?%@`~\\]|\n {0,4}|\r\n){0,48}"##,
        ) {
            check_any(&text)?;
        }

        #[test]
        fn json_documents_round_trip(value in json_value()) {
            let text = value.to_string();
            let docs = parse(&text, Limits::default())
                .map_err(|e| TestCaseError::fail(format!("{e:?} in {text:?}")))?;
            prop_assert_eq!(docs.len(), 1);
            prop_assert_eq!(&docs[0].value, &value);
        }

        #[test]
        fn block_documents_round_trip(value in json_value()) {
            let mut text = String::new();
            block(&value, 0, &mut text);
            let docs = parse(&text, Limits::default())
                .map_err(|e| TestCaseError::fail(format!("{e:?} in {text:?}")))?;
            prop_assert_eq!(docs.len(), 1);
            prop_assert_eq!(&docs[0].value, &value);
        }
    }
}
