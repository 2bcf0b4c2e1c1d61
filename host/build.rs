//! Builds the plugins/ workspace for wasm32-wasip2 and stages the
//! components in OUT_DIR: first-party plugins are embedded in the binary
//! (`runtime::builtin`), test guests are exposed to tests through
//! `MAILPLUG_TEST_GUESTS_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "wasm32-wasip2";
/// Built artifacts staged into OUT_DIR (crate names with `-` → `_`).
const FIRST_PARTY: &[&str] = &[
    "custom_smtp",
    "sendgrid",
    "postmark",
    "resend",
    "mailgun",
    "mailjet",
    "postal",
    "sparkpost",
    "brevo",
    "mandrill",
    "amazon_ses",
];
const TEST_GUESTS: &[&str] = &[
    "hostile",
    "oversized",
    "wrong_shape",
    "example_provider",
    "nonce",
    "smtp_only",
    "webhook_only",
    "contract_v0",
];
/// Inputs of the inner build; `plugins/target` must stay out of this list.
const WATCHED: &[&str] = &[
    "plugins/Cargo.toml",
    "plugins/Cargo.lock",
    "plugins/.cargo",
    "plugins/sdk",
    "plugins/custom-smtp",
    "plugins/sendgrid",
    "plugins/postmark",
    "plugins/resend",
    "plugins/mailgun",
    "plugins/template",
    "plugins/test-guests",
    "wit",
];

/// Variables describing the outer build that must not reach the inner one
/// (flags, wrappers such as clippy-driver, target/profile selection).
fn leaks_from_outer_build(name: &str) -> bool {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_OFFLINE",
        "CARGO_TERM_COLOR",
    ];
    if KEEP.contains(&name)
        || name.starts_with("CARGO_HTTP_")
        || name.starts_with("CARGO_REGISTRIES_")
    {
        return false;
    }
    name.starts_with("CARGO_")
        || name.starts_with("__CARGO")
        || name.starts_with("CLIPPY_")
        || matches!(
            name,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTC"
                | "RUSTDOC"
                | "TARGET"
                | "HOST"
                | "OUT_DIR"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
        )
}

fn target_installed(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return true; // let the inner build report whatever is wrong
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    sysroot.is_empty()
        || Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .is_dir()
}

fn main() -> ExitCode {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir.join("..");
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    for path in WATCHED {
        println!("cargo::rerun-if-changed={}", root.join(path).display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if !target_installed(&rustc) {
        eprintln!(
            "error: the {TARGET} target is not installed; the provider plugins are built for it.\n\
             run `rustup target add {TARGET}` and build again"
        );
        return ExitCode::FAILURE;
    }

    let target_dir = plugins.join("target");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&plugins);
    for (name, _) in env::vars_os() {
        if name.to_str().is_some_and(leaks_from_outer_build) {
            cmd.env_remove(&name);
        }
    }
    let output = match cmd.output() {
        Ok(output) => output,
        Err(err) => {
            eprintln!("error: could not run `{cargo} build` for plugins/: {err}");
            return ExitCode::FAILURE;
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("error: building the plugins/ workspace for {TARGET} failed:\n{stderr}");
        if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `std`")
        {
            eprintln!("hint: run `rustup target add {TARGET}`");
        }
        return ExitCode::FAILURE;
    }

    let built = target_dir.join(TARGET).join("release");
    let guests = out_dir.join("test-guests");
    if let Err(err) = std::fs::create_dir_all(&guests) {
        eprintln!("error: cannot create {}: {err}", guests.display());
        return ExitCode::FAILURE;
    }
    let stage = |name: &str, dest: &Path| {
        let from = built.join(format!("{name}.wasm"));
        std::fs::copy(&from, dest.join(format!("{name}.wasm")))
            .map_err(|err| eprintln!("error: cannot stage {}: {err}", from.display()))
            .is_ok()
    };
    let staged = FIRST_PARTY.iter().all(|name| stage(name, &out_dir))
        && TEST_GUESTS.iter().all(|name| stage(name, &guests));
    if !staged {
        return ExitCode::FAILURE;
    }
    println!(
        "cargo::rustc-env=MAILPLUG_TEST_GUESTS_DIR={}",
        guests.display()
    );
    ExitCode::SUCCESS
}
