//! Golden-file comparison for `mailplug plugin test --expect`: every field
//! present in the expected JSON must match; fields it leaves out are not
//! compared (so golden files can omit host-assigned or irrelevant fields).

use serde_json::Value;

/// Differences between `expected` and `actual`, one readable line each.
pub fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    compare(expected, actual, &mut String::new(), &mut out);
    out
}

fn show(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "?".into())
}

fn compare(expected: &Value, actual: &Value, path: &mut String, out: &mut Vec<String>) {
    let here = if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.clone()
    };
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, want_value) in want {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match got.get(key) {
                    Some(got_value) => compare(want_value, got_value, path, out),
                    None => out.push(format!(
                        "{path}: expected {}, but the field is missing",
                        show(want_value)
                    )),
                }
                path.truncate(len);
            }
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                out.push(format!(
                    "{here}: expected {} items, got {}",
                    want.len(),
                    got.len()
                ));
            }
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                compare(w, g, path, out);
                path.truncate(len);
            }
            for (i, extra) in got.iter().enumerate().skip(want.len()) {
                out.push(format!("{here}[{i}]: unexpected item {}", show(extra)));
            }
            for (i, missing) in want.iter().enumerate().skip(got.len()) {
                out.push(format!("{here}[{i}]: missing item {}", show(missing)));
            }
        }
        (w, g) if w == g => {}
        (w, g) => out.push(format!("{here}: expected {}, got {}", show(w), show(g))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::diff;

    #[test]
    fn only_fields_present_in_expected_are_compared() {
        let expected = json!([{"kind": "bounced", "smtp_status": "550"}]);
        let actual = json!([{"kind": "bounced", "smtp_status": "550", "id": "x"}]);
        assert!(diff(&expected, &actual).is_empty());
    }

    #[test]
    fn mismatches_name_the_path() {
        let expected = json!([{"kind": "bounced", "smtp_status": "550"}]);
        let actual = json!([{"kind": "bounced", "smtp_status": null}, {"kind": "delivered"}]);
        let lines = diff(&expected, &actual);
        assert!(
            lines
                .iter()
                .any(|l| l == "[0].smtp_status: expected \"550\", got null"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("(top level): expected 1 items, got 2")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("(top level)[1]: unexpected item")),
            "{lines:?}"
        );
    }
}
