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

#[test]
fn syntax_errors_have_positions() {
    let e = parse("a: [1, 2\nb: 3\n", Limits::default()).unwrap_err();
    assert!(e.message.starts_with("YAML syntax error"), "{e:?}");
    assert!(e.pos.line >= 1);
}

#[test]
fn pointer_tokens_are_escaped() {
    assert_eq!(pointer_push("/a", "b/c~d"), "/a/b~1c~0d");
}
