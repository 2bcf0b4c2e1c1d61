//! `mailplug plugin test PLUGIN --fixtures DIR`: every case of a folder
//! through one plugin, a diff per failing case and a summary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{TEST_FAILED, TestArgs, emit, golden_diff, golden_write, outcome, request};
use crate::runtime::Plugin;

/// One recorded request of the folder.
struct Case {
    name: String,
    body: PathBuf,
    headers: Option<PathBuf>,
    expected: PathBuf,
}

/// The cases of `dir`, sorted by name: each `CASE.json` or `CASE.form`
/// beside a `CASE.headers.json` or a `CASE.expected.json` (other JSON
/// files, e.g. a key set, are not requests).
fn cases(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading --fixtures {}", dir.display()))?;
    let mut cases = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading --fixtures {}", dir.display()))?;
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        let Some(name) = file
            .strip_suffix(".json")
            .or_else(|| file.strip_suffix(".form"))
        else {
            continue;
        };
        if name.is_empty()
            || [".headers", ".expected", ".expect"]
                .iter()
                .any(|s| name.ends_with(s))
            || !entry.path().is_file()
        {
            continue;
        }
        let headers = dir.join(format!("{name}.headers.json"));
        let expected = dir.join(format!("{name}.expected.json"));
        if !headers.is_file() && !expected.is_file() {
            continue;
        }
        cases.push(Case {
            name: name.to_owned(),
            body: entry.path(),
            headers: headers.is_file().then_some(headers),
            expected,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// Runs every case of `dir`; exit 0 when all match (or were blessed).
pub(super) fn run(plugin: &Plugin, dir: &Path, test: &TestArgs) -> anyhow::Result<u8> {
    let cases = cases(dir)?;
    if cases.is_empty() {
        eprintln!(
            "mailplug: no cases in {} (expected CASE.json or CASE.form files)",
            dir.display()
        );
        return Ok(TEST_FAILED);
    }
    let id = &plugin.info().id;
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &cases {
        let failure = match run_case(plugin, case, test) {
            Ok(None) => None,
            Ok(Some(lines)) => Some(lines),
            Err(err) => Some(vec![format!("{err:#}")]),
        };
        match failure {
            None => {
                passed += 1;
                emit(&format!("ok    {}", case.name))?;
            }
            Some(lines) => {
                failed += 1;
                emit(&format!("FAIL  {}", case.name))?;
                for line in lines {
                    emit(&format!("      {line}"))?;
                }
            }
        }
    }
    let verb = if test.bless { "blessed" } else { "passed" };
    emit(&format!(
        "{id}: {passed} {verb}, {failed} failed, {} cases in {}",
        cases.len(),
        dir.display()
    ))?;
    Ok(if failed == 0 {
        super::super::exit::OK
    } else {
        TEST_FAILED
    })
}

/// `None` when the case matches its golden file (or was blessed), else why not.
fn run_case(plugin: &Plugin, case: &Case, test: &TestArgs) -> anyhow::Result<Option<Vec<String>>> {
    let request = request(test, &case.body, case.headers.as_deref())?;
    // A fresh instance per case: one case's trap cannot colour the next.
    let mut instance = plugin.instance();
    let (actual, _) = outcome(&mut instance, test, &request)
        .map_err(|e| anyhow::anyhow!("plugin `{}` failed: {e:#}", plugin.info().id))?;
    let rendered = serde_json::to_string_pretty(&actual)?;
    if test.bless {
        golden_write(&case.expected, &rendered)?;
        return Ok(None);
    }
    if !case.expected.is_file() {
        return Ok(Some(vec![format!(
            "no golden file {} (review the output, then write it with --bless)",
            case.expected.display()
        )]));
    }
    let differences = golden_diff(&case.expected, &actual)?;
    Ok((!differences.is_empty()).then_some(differences))
}
