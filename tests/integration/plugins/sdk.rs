//! The guest SDK as shipped: its vendored WIT equals the contract the host
//! is built against, and the template stays short.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The SDK carries a copy of `wit/` so that it packages and builds outside
/// this repository; a change to the contract must reach both.
#[test]
fn sdk_wit_copy_equals_the_top_level_contract() {
    let top = repo().join("wit");
    let sdk = repo().join("plugins/sdk/wit");
    let names = |dir: &PathBuf| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let files = names(&top);
    assert!(!files.is_empty());
    assert_eq!(
        files,
        names(&sdk),
        "plugins/sdk/wit lists other files than wit/"
    );
    for name in &files {
        assert!(
            std::fs::read(top.join(name)).unwrap() == std::fs::read(sdk.join(name)).unwrap(),
            "plugins/sdk/wit/{name} differs from wit/{name}: copy wit/ into plugins/sdk/wit/"
        );
    }
}

/// Lines that are neither blank nor comments.
fn lines_of_code(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

#[test]
fn the_template_plugin_stays_under_60_lines_of_code() {
    let text = std::fs::read_to_string(repo().join("plugins/template/src/lib.rs")).unwrap();
    let loc = lines_of_code(&text);
    assert!(
        loc < 60,
        "plugins/template/src/lib.rs has {loc} lines of code"
    );
    assert!(loc > 20, "the template should still be a complete plugin");
}
