//! The operator's offline tools, run as a person would: `config check`, shell completions and
//! the manual page, all generated from the same definitions as the commands themselves.

use std::process::Output;

use tokio::process::Command;

async fn hookwarden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookwarden"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("HOOKWARDEN_ADMIN_TOKEN")
        .output()
        .await
        .expect("run hookwarden")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn config_check_prints_what_the_example_config_resolves_to_without_its_secrets() {
    let out = hookwarden(&["config", "check", "examples/hookwarden.toml"]).await;
    assert!(out.status.success(), "{out:?}");
    let report = text(&out.stdout);
    let last = report.lines().last().unwrap_or_default();
    assert_eq!(last, "examples/hookwarden.toml: valid, 3 source(s); secrets redacted");
    for shown in ["sources stripe", "sources github", "sources acme", "timeout        30s", "30s, 2m, 8m"] {
        assert!(report.contains(shown), "missing `{shown}` in:\n{report}");
    }
    for secret in ["hw_admin_example_token", "whsec_example_stripe_endpoint_secret", "example-github-webhook-secret"] {
        assert!(!report.contains(secret), "`{secret}` printed:\n{report}");
    }

    let json = hookwarden(&["config", "check", "examples/hookwarden.toml", "--json"]).await;
    let resolved: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON only");
    assert_eq!(resolved["sources"][0]["verifier"]["kind"], "stripe");
    assert_eq!(resolved["delivery"]["lease"], "1m");
}

#[tokio::test]
async fn config_check_refuses_what_serve_would_refuse_with_the_reason_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[database]\nurl = \"sqlite://x.db\"\n[delivery]\ntimeout = \"60s\"\n", "delivery.lease"),
        ("[database]\nurl = \"mysql://root@db/x\"\n", "database.url"),
        ("[database]\nurl = \"sqlite://x.db\"\n[server]\nlisten = \"nowhere\"\n", "invalid config"),
    ];
    for (i, (toml, reason)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = hookwarden(&["config", "check", path.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(2), "{toml}: {out:?}");
        assert!(text(&out.stderr).contains(reason), "{toml}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "nothing printed as resolved for a refused config");
        assert!(!text(&out.stderr).contains("root@"), "credentials withheld: {}", text(&out.stderr));
    }
}

#[tokio::test]
async fn completions_and_the_manual_page_cover_every_command() {
    let bash = hookwarden(&["completions", "bash"]).await;
    assert!(bash.status.success());
    let script = text(&bash.stdout);
    assert!(script.contains("complete -F _hookwarden"), "{script}");
    let man = hookwarden(&["man"]).await;
    assert!(man.status.success());
    let page = text(&man.stdout);
    assert!(page.contains(".TH hookwarden 1"), "{page}");
    let help = text(&hookwarden(&["--help"]).await.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 8, "{help}");
    for command in commands {
        assert!(script.contains(command), "completion lacks `{command}`");
        assert!(page.contains(command), "manual page lacks `{command}`");
    }
}

#[tokio::test]
async fn a_closed_pipe_ends_a_printing_command_quietly() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"))
        .args(["man"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}
