//! The operator console in a real browser: Debian's `chromium`, driven by `playwright-core`
//! (tests/browser, `npm ci --prefix tests/browser`; it downloads no browser of its own),
//! against a real gateway process and database. Each test prepares the gateway's state here
//! and runs one scenario script (`tests/browser/<name>.mjs`), which fails on any assertion,
//! any script error and any console error the scenario did not provoke on purpose.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::replay::{confirm, outage, spec};
use crate::support::{ADMIN_TOKEN, Db, Gateway, Receiver, TestDb};

/// Far above a scenario's few seconds: only a hung browser gets here.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// One browser at a time: two cores are shared with the rest of the suite.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser"))
}

/// Runs `tests/browser/<name>.mjs` against `gateway` with `env`; fails (never skips) without
/// node, chromium or the npm packages, saying what to install.
pub(crate) async fn scenario(name: &str, gateway: &Gateway, env: &[(&str, String)]) {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: `apt-get install chromium chromium-driver`");
    let _one_at_a_time = BROWSER.lock().await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(format!("{name}.mjs"))
        .current_dir(browser_dir())
        .env("GATEWAY_URL", gateway.url(""))
        .env("CHROMIUM", &chromium)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| panic!("node is needed for the browser tests ({e})"));
    let group = child.id().expect("the child's pid");
    let output = match tokio::time::timeout(SCENARIO_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for node"),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &format!("-{group}")]).status();
            panic!("the browser scenario {name} did not finish within {SCENARIO_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "browser scenario {name} failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(&format!("scenario {name}: passed")), "scenario {name} did not say it passed:\n{stdout}");
}

/// Sign in by keyboard (a wrong token refused), the session cookie's attributes, the CSP on
/// every response, a forged cross-site POST refused, sign-out, and the gap on the chart.
#[tokio::test]
async fn signing_in_and_out_with_the_guards_around_sessions() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "ord", 6).await;
    for id in &ids[..2] {
        confirm(&gw, id).await;
    }
    scenario(
        "signin",
        &gw,
        &[("ADMIN_TOKEN", ADMIN_TOKEN.to_string()), ("EXPECT_CONFIRMED", "2".into()), ("EXPECT_UNKNOWN", "4".into())],
    )
    .await;
}
