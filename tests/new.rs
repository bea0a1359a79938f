//! `dronectl new app` and `dronectl new service`: what they write, and that bad input
//! writes nothing and exits 2.

mod common;

use std::path::Path;

use common::*;

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The files a JSON run reports, in order.
fn reported_files(out: &std::process::Output) -> Vec<String> {
    json_lines(out)
        .iter()
        .filter(|e| e["event"] == "file" || e["event"] == "modified")
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn new_app_creates_a_repository_with_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["new", "app", "shop"]);
    assert_code(&out, 0);
    let dir = tmp.path().join("shop");
    for f in ["dronectl.yaml", "Cargo.toml", "README.md", ".gitignore"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let repo = git2::Repository::open(&dir).unwrap();
    let head = repo.head().unwrap();
    assert_eq!(head.shorthand().unwrap(), "main");
    let commit = head.peel_to_commit().unwrap();
    assert!(commit.message().unwrap().contains("shop"));
    assert!(
        repo.statuses(None).unwrap().is_empty(),
        "the initial commit holds everything"
    );
    // The manifest it writes is valid.
    assert_code(&run(&dir, &["validate"]), 0);
    // No staging directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("shop")]);
}

#[test]
fn new_app_file_list_and_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        &["-o", "json", "new", "app", "shop", "--dry-run"],
    );
    assert_code(&out, 0);
    let files: Vec<String> = reported_files(&out)
        .iter()
        .map(|f| f.replace(&tmp.path().display().to_string(), "<tmp>"))
        .collect();
    insta::assert_json_snapshot!("new_app_files", files);
    assert!(!tmp.path().join("shop").exists(), "dry run wrote nothing");
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["exit_code"], 0);
}

#[test]
fn new_app_refuses_non_empty_dirs_and_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    std::fs::write(tmp.path().join("taken/file"), "keep me").unwrap();
    let before = snapshot_tree(tmp.path());
    for args in [
        vec!["new", "app", "taken"],
        vec!["new", "app", "Bad_Name"],
        vec!["new", "app", "ok", "--name", "-x"],
        vec!["new", "app", "ok", "--template", "rust-http"],
        vec!["new", "app", "ok", "--set", "no-equals"],
    ] {
        let out = run(tmp.path(), &args);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            snapshot_tree(tmp.path()),
            before,
            "{args:?} changed the directory"
        );
    }
}

#[test]
fn new_service_registers_everywhere() {
    let (_tmp, app) = new_app("shop");
    let out = run(
        &app,
        &[
            "new",
            "service",
            "order-api",
            "--port",
            "9000",
            "--route",
            "/api/orders/",
            "--set",
            "description=Orders",
        ],
    );
    assert_code(&out, 0);
    assert!(app.join("services/order-api/Cargo.toml").is_file());
    let manifest = std::fs::read_to_string(app.join("dronectl.yaml")).unwrap();
    assert!(
        manifest.contains("  order-api:\n    path: services/order-api\n"),
        "{manifest}"
    );
    assert!(manifest.contains("/api/orders"));
    assert!(manifest.contains("port: 9000"));
    let cargo = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("\"services/order-api\""), "{cargo}");
    // The comments of the template's manifest survive the edit.
    assert!(manifest.contains("# dronectl new service <name> adds entries here"));
    // Validate agrees, and sees the service.
    let out = run(&app, &["-o", "json", "validate"]);
    assert_code(&out, 0);
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(summary["result"]["valid"], true);
    // From a subdirectory, the app is found upwards.
    let out = run(
        &app.join("services/order-api/src"),
        &["new", "service", "billing", "--template", "rust-worker"],
    );
    assert_code(&out, 0);
    let manifest = std::fs::read_to_string(app.join("dronectl.yaml")).unwrap();
    let billing = manifest.split("  billing:\n").nth(1).unwrap();
    assert!(
        !billing.contains("routes"),
        "workers have no routes: {billing}"
    );
    assert_eq!(
        std::fs::read_dir(&app)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".dronectl"))
            .count(),
        0
    );
}

#[test]
fn new_service_dry_run_lists_files_and_writes_nothing() {
    let (_tmp, app) = new_app("shop");
    let before = snapshot_tree(&app);
    for template in ["rust-http", "rust-worker"] {
        let out = run(
            &app,
            &[
                "-o",
                "json",
                "new",
                "service",
                "ratings",
                "--template",
                template,
                "--dry-run",
            ],
        );
        assert_code(&out, 0);
        insta::assert_json_snapshot!(
            format!("new_service_files_{template}"),
            reported_files(&out)
        );
        assert_eq!(snapshot_tree(&app), before);
    }
    let out = run(&app, &["new", "service", "ratings", "--dry-run"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("would create services/ratings/Cargo.toml"),
        "{}",
        stdout(&out)
    );
    assert_eq!(snapshot_tree(&app), before);
}

#[test]
fn new_service_bad_input_exits_2_and_changes_nothing() {
    let (tmp, app) = new_app("shop");
    assert_code(&run(&app, &["new", "service", "ratings"]), 0);
    std::fs::create_dir_all(app.join("services/occupied")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), app.join("escape")).unwrap();
    let before = snapshot_tree(&app);
    let long = "a".repeat(64);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["Ratings"], "lowercase"),
        (vec!["1ratings"], "must start with a lowercase letter"),
        (vec!["my_service"], "contains `_`"),
        (vec![&long], "at most 63"),
        (vec!["../x"], "contains `.`"),
        (vec!["/abs"], "contains `/`"),
        (vec!["router"], "reserved"),
        (vec!["type"], "reserved"),
        (vec!["tokio"], "depends on"),
        (vec!["ratings"], "already exists"),
        (vec!["occupied"], "already exists"),
        (
            vec!["other", "--path", "../outside"],
            "leaves the app directory",
        ),
        (vec!["other", "--path", "/tmp/outside"], "absolute"),
        (
            vec!["other", "--path", "escape/x"],
            "outside the app directory",
        ),
        (
            vec!["other", "--path", "services/ratings/sub"],
            "overlaps the directory of service `ratings`",
        ),
        (
            vec!["other", "--route", "/api/ratings"],
            "already owned by service `ratings`",
        ),
        (vec!["other", "--route", "api/x"], "must start with `/`"),
        (vec!["other", "--route", "/api/../x"], "segment"),
        (vec!["other", "--port", "0"], "invalid port"),
        (vec!["other", "--port", "70000"], "invalid port"),
        (
            vec!["other", "--template", "nope"],
            "unknown template `nope`; available: rust-http, rust-worker",
        ),
        (vec!["other", "--template", "app"], "unknown template"),
        (vec!["other", "--set", "=x"], "invalid --set"),
        (
            vec!["other", "--template-dir", "/nonexistent"],
            "cannot read templates in /nonexistent",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["new", "service"];
        full.extend(&args);
        let out = run(&app, &full);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in:\n{err}"
        );
        assert_eq!(snapshot_tree(&app), before, "{args:?} changed the app");
    }
    // An app whose manifest is invalid is refused as a whole.
    let manifest = app.join("dronectl.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("    path: services/ratings", "    pth: services/ratings"),
    )
    .unwrap();
    let before = snapshot_tree(&app);
    let out = run(&app, &["new", "service", "other"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("dronectl.yaml:"), "{}", stderr(&out));
    assert_eq!(snapshot_tree(&app), before);
    // Outside any app.
    let out = run(tmp.path(), &["new", "service", "other"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("no dronectl.yaml found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn template_dir_overrides_embedded_templates() {
    let (tmp, app) = new_app("shop");
    let templates = tmp.path().join("my-templates/tiny");
    std::fs::create_dir_all(templates.join("files/src")).unwrap();
    std::fs::write(
        templates.join("template.toml"),
        "description = \"A tiny one\"\nkind = \"service\"\ndefault_port = 7000\n",
    )
    .unwrap();
    std::fs::write(templates.join("manifest.yaml.tera"), "path: {{ path }}\nport: {{ port }}\nroutes: [\"{{ route }}\"]\nenv: { GREETING: \"{{ vars.greeting | default(value='hi') }}\" }\n").unwrap();
    std::fs::write(templates.join("files/dot-env.tera"), "NAME={{ name }}\n").unwrap();
    std::fs::write(templates.join("files/src/raw.txt"), "{{ not rendered }}\n").unwrap();
    let dir = tmp.path().join("my-templates");
    let dir = dir.to_str().unwrap();
    let out = run(&app, &["templates", "--template-dir", dir]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("tiny"), "{}", stdout(&out));
    let out = run(
        &app,
        &[
            "new",
            "service",
            "mini",
            "--template",
            "tiny",
            "--template-dir",
            dir,
            "--set",
            "greeting=hello",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(app.join("services/mini/.env")).unwrap(),
        "NAME=mini\n"
    );
    assert_eq!(
        std::fs::read_to_string(app.join("services/mini/src/raw.txt")).unwrap(),
        "{{ not rendered }}\n"
    );
    let manifest = std::fs::read_to_string(app.join("dronectl.yaml")).unwrap();
    assert!(
        manifest.contains("port: 7000") && manifest.contains("GREETING: \"hello\""),
        "{manifest}"
    );

    // A template with a syntax error fails cleanly.
    std::fs::write(templates.join("files/broken.tera"), "{% if %}").unwrap();
    let before = snapshot_tree(&app);
    let out = run(
        &app,
        &[
            "new",
            "service",
            "mini2",
            "--template",
            "tiny",
            "--template-dir",
            dir,
        ],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("broken.tera"), "{}", stderr(&out));
    assert_eq!(snapshot_tree(&app), before);
}

#[test]
fn flags_come_from_environment_variables() {
    let (_tmp, app) = new_app("shop");
    let out = dronectl()
        .current_dir(app.parent().unwrap())
        .env("DRONECTL_DIR", &app)
        .env("DRONECTL_OUTPUT", "json")
        .env("DRONECTL_TEMPLATE", "rust-worker")
        .env("DRONECTL_DRY_RUN", "true")
        .args(["new", "service", "jobs"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    assert_eq!(summary["result"]["template"], "rust-worker");
    assert_eq!(summary["result"]["dry_run"], true);
    assert!(!Path::new(&app.join("services/jobs")).exists());
}
