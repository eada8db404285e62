//! The TypeScript receipts SDK (`receipts-sdk/typescript`, npm `hookwarden-receipts`) and its
//! example handler (`examples/typescript`): their `node --test` suite, run against this build's
//! gateway binary, so the README's one test command covers them. The suite itself is the
//! SDK's `npm test` (it builds the SDK, the example and the tests with `tsc`, then runs
//! `node --test`), and runs alone as `HOOKWARDEN_BIN=target/debug/hookwarden npm test --prefix
//! receipts-sdk/typescript`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Far above the suite's ~40 s: only a hung run gets here.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

const INSTALL_HINT: &str = "npm ci --prefix receipts-sdk/typescript && npm ci --prefix examples/typescript";

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the gateway package sits in the workspace")
}

/// Fails (never skips) when the npm dependencies are not installed, and says how to install them.
fn require_node_modules() {
    for package in ["receipts-sdk/typescript", "examples/typescript"] {
        let modules = workspace_root().join(package).join("node_modules");
        assert!(modules.is_dir(), "{} is missing: run {INSTALL_HINT}", modules.display());
    }
}

#[tokio::test]
async fn the_typescript_sdk_suite_passes_against_this_gateway() {
    require_node_modules();
    let mut command = tokio::process::Command::new("npm");
    command
        .args(["test", "--silent"])
        .current_dir(workspace_root().join("receipts-sdk/typescript"))
        .env("HOOKWARDEN_BIN", env!("CARGO_BIN_EXE_hookwarden"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // npm, the test runner and the gateways and handlers it starts share one group, so a
        // hung run can be ended whole.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| panic!("npm is needed for the TypeScript SDK's tests ({e})"));
    let group = child.id().expect("the child's pid");
    let output = match tokio::time::timeout(SUITE_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for npm test"),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &format!("-{group}")]).status();
            panic!("the TypeScript SDK's suite did not finish within {SUITE_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "npm test in receipts-sdk/typescript failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The runner's closing lines: a run that ran nothing is not a pass.
    let count = |label: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim_start_matches(['ℹ', '#', ' ']).strip_prefix(label)?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `{label}` line in the suite's output:\n{stdout}"))
    };
    assert!(count("pass ") > 0, "the suite passed no test:\n{stdout}");
    assert_eq!((count("fail "), count("skipped "), count("todo ")), (0, 0, 0), "{stdout}");
}
