//! The Python SDK's own test suite (receipts-sdk/python/tests, pytest) against this build's
//! gateway: the shared test vectors, the client's retry rules, the outbox on SQLite and
//! PostgreSQL, the status probe, and the example handler end to end (real gateway, real
//! handler processes, kill -9 included). Run here so that the README's single test command
//! runs it; `HOOKWARDEN_BIN=target/debug/hookwarden python3 -m pytest receipts-sdk/python/tests`
//! runs it alone.

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_sdk_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the gateway package sits in the workspace");
    let output = Command::new("python3")
        .args(["-m", "pytest", "receipts-sdk/python/tests", "-q", "-p", "no:cacheprovider"])
        .current_dir(root)
        .env("HOOKWARDEN_BIN", env!("CARGO_BIN_EXE_hookwarden"))
        .env("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in the source tree
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed: {e}; then python3 -m pip install -r receipts-sdk/python/requirements-dev.txt")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("---- pytest receipts-sdk/python/tests ----\n{stdout}{stderr}");
    assert!(
        output.status.success(),
        "the Python SDK's tests failed ({}); pytest's output is above. Missing packages? \
         python3 -m pip install -r receipts-sdk/python/requirements-dev.txt",
        output.status
    );
}
