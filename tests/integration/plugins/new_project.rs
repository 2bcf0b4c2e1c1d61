//! `mailplug plugin new`: the project builds outside this repository with
//! `cargo build --release --target wasm32-wasip2` and passes
//! `mailplug plugin test --fixtures` on its sample right away.

use std::process::Command;

fn mailplug(cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mailplug"))
        .current_dir(cwd)
        .args(args)
        .env("MAILPLUG_DATA_DIR", super::cache_dir().parent().unwrap())
        .output()
        .unwrap()
}

#[test]
fn a_new_project_builds_outside_the_repository_and_passes_its_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mailplug(tmp.path(), &["plugin", "new", "acme-mail"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let project = tmp.path().join("acme-mail");
    // Self-contained: the only path dependency is the vendored SDK.
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[workspace]"), "{manifest}");
    assert_eq!(manifest.matches("path =").count(), 1, "{manifest}");
    assert!(manifest.contains(r#"path = "vendor/mailplug-sdk""#));
    assert!(
        project
            .join("vendor/mailplug-sdk/wit/provider.wit")
            .is_file()
    );
    assert!(project.join("README.md").is_file());
    // Every source file of the SDK is vendored, byte for byte.
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    for entry in std::fs::read_dir(sdk.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let copy = project
            .join("vendor/mailplug-sdk/src")
            .join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&copy).ok(),
            Some(std::fs::read(&path).unwrap()),
            "{} is not vendored by plugin new",
            path.display()
        );
    }

    // A target dir kept between runs; the project itself is new each time.
    let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-new-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = Command::new(cargo)
        .current_dir(&project)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/acme_mail.wasm");
    let wasm = wasm.to_str().unwrap();
    let test = |secret: &str| {
        mailplug(
            &project,
            &[
                "plugin",
                "test",
                wasm,
                "--fixtures",
                "fixtures",
                "--secret",
                secret,
                "--now",
                "1767268830",
            ],
        )
    };
    let ok = test("example-test-secret");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("acme-mail: 1 passed, 0 failed"), "{stdout}");
    // The sample is really signed: another secret fails it.
    let wrong = test("not-the-secret");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("FAIL  sample"));
    // The component reports the new id.
    let inspect = mailplug(&project, &["plugin", "inspect", wasm]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["describe"]["id"], "acme-mail", "{info}");
}

#[test]
fn bad_names_and_used_folders_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mailplug(tmp.path(), &["plugin", "new", "Acme_Mail"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lower-case"));
    std::fs::create_dir(tmp.path().join("used")).unwrap();
    std::fs::write(tmp.path().join("used/keep.txt"), "mine").unwrap();
    let out = mailplug(tmp.path(), &["plugin", "new", "acme", "--dir", "used"]);
    assert_eq!(out.status.code(), Some(73));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("used/keep.txt")).unwrap(),
        "mine"
    );
}
