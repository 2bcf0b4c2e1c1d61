//! `mailplug plugin test PLUGIN --fixtures DIR`: a failing case is named
//! with its diff and counted, the exit code says whether all passed, and
//! `--bless` writes the golden files.

use super::first_party::fixtures_run;
use super::own_fixtures;

const POSTMARK_SECRET: &str = "postmark-hook:pm-test-password-5c1d";

/// A copy of the postmark golden folder to edit.
fn postmark_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(own_fixtures().join("postmark")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

#[test]
fn a_wrong_golden_file_fails_with_its_case_diff_and_summary() {
    let tmp = postmark_copy();
    let golden = tmp.path().join("bounce_soft.expected.json");
    let text = std::fs::read_to_string(&golden).unwrap();
    assert!(text.contains("full@example.com"));
    std::fs::write(
        &golden,
        text.replace("full@example.com", "other@example.com"),
    )
    .unwrap();
    // A request with no golden file yet is a failure too.
    std::fs::copy(
        tmp.path().join("open.json"),
        tmp.path().join("new_case.json"),
    )
    .unwrap();
    std::fs::copy(
        tmp.path().join("open.headers.json"),
        tmp.path().join("new_case.headers.json"),
    )
    .unwrap();

    let output = fixtures_run("postmark", tmp.path(), POSTMARK_SECRET);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  bounce_soft"), "{stdout}");
    assert!(
        stdout.contains("other@example.com"),
        "the diff names the field: {stdout}"
    );
    assert!(stdout.contains("FAIL  new_case"), "{stdout}");
    assert!(stdout.contains("no golden file"), "{stdout}");
    assert!(stdout.contains("ok    open"), "{stdout}");
    assert!(stdout.contains(" passed, 2 failed, "), "{stdout}");
}

#[test]
fn bless_writes_the_golden_files_that_then_pass() {
    let tmp = postmark_copy();
    let golden = tmp.path().join("bounce_soft.expected.json");
    let original = std::fs::read_to_string(&golden).unwrap();
    std::fs::write(&golden, "[]").unwrap();
    std::fs::remove_file(tmp.path().join("click.expected.json")).unwrap();

    let dir = tmp.path().display().to_string();
    let output = super::cli_golden::mailplug(&[
        "plugin",
        "test",
        "postmark",
        "--fixtures",
        &dir,
        "--secret",
        POSTMARK_SECRET,
        "--now",
        &super::FIXTURE_NOW.to_string(),
        "--bless",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let blessed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    let want: serde_json::Value = serde_json::from_str(&original).unwrap();
    assert_eq!(blessed, want);
    assert!(tmp.path().join("click.expected.json").is_file());

    let output = fixtures_run("postmark", tmp.path(), POSTMARK_SECRET);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn an_empty_or_missing_folder_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let output = fixtures_run("postmark", tmp.path(), POSTMARK_SECRET);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no cases"));
    let output = fixtures_run("postmark", &tmp.path().join("absent"), POSTMARK_SECRET);
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--fixtures"));
}
