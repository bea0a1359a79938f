//! Snapshot tests of `--help` for every command, so help text changes are reviewed.

use crate::common;

use common::*;

#[test]
fn help_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("dronectl", vec!["--help"]),
        ("new", vec!["new", "--help"]),
        ("new_app", vec!["new", "app", "--help"]),
        ("new_service", vec!["new", "service", "--help"]),
        ("templates", vec!["templates", "--help"]),
        ("validate", vec!["validate", "--help"]),
        ("config", vec!["config", "--help"]),
        ("completions", vec!["completions", "--help"]),
        ("build", vec!["build", "--help"]),
        ("up", vec!["up", "--help"]),
        ("logs", vec!["logs", "--help"]),
        ("dev", vec!["dev", "--help"]),
        ("deploy", vec!["deploy", "--help"]),
        ("rollout_status", vec!["rollout", "status", "--help"]),
        ("rollout_promote", vec!["rollout", "promote", "--help"]),
        ("scale", vec!["scale", "--help"]),
        ("render", vec!["render", "--help"]),
        ("secret", vec!["secret", "--help"]),
        ("secret_set", vec!["secret", "set", "--help"]),
        ("secret_list", vec!["secret", "list", "--help"]),
        ("ci_init", vec!["ci", "init", "--help"]),
        ("router", vec!["router", "--help"]),
    ] {
        let out = run(tmp.path(), &args);
        assert_code(&out, 0);
        insta::assert_snapshot!(format!("help_{name}"), stdout(&out));
    }
}

#[test]
fn version_names_the_git_revision() {
    let out = run(std::path::Path::new("."), &["--version"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with(concat!("dronectl ", env!("CARGO_PKG_VERSION"), " (")),
        "{text}"
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(std::path::Path::new("."), &["completions", shell]);
        assert_code(&out, 0);
        assert!(stdout(&out).contains("dronectl"), "{shell}");
        assert!(stdout(&out).contains("new"), "{shell}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = run(std::path::Path::new("."), &["no-such-command"]);
    assert_code(&out, 2);
    let out = run(std::path::Path::new("."), &["-o", "yaml", "validate"]);
    assert_code(&out, 2);
}

#[test]
fn never_reads_stdin() {
    // With stdin closed and no terminal, commands run to completion without prompting.
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["new", "app", "quiet-app", "--no-git"]);
    assert_code(&out, 0);
    let out = run(&tmp.path().join("quiet-app"), &["new", "service", "svc"]);
    assert_code(&out, 0);
}
