//! `dronectl new app` and `dronectl new service`: what they write, and that bad input
//! writes nothing and exits 2.

use crate::common;

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

// ---------------------------------------------------------------------------------------
// Templates from --template-dir are untrusted input.

/// Every directory under `root` (and `root`) set to an old modification time, so that
/// creating and removing anything in one of them (a staging directory) shows.
fn age_dirs(root: &Path) {
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for dir in snapshot_tree(root)
        .keys()
        .filter(|p| p.as_os_str().to_string_lossy().ends_with('/'))
        .map(|p| root.join(p))
        .chain([root.to_path_buf()])
    {
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

/// The tree under `root` with each directory's modification time: equal before and after
/// a run only if the run created, removed and changed nothing there.
fn tree_and_times(root: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
    snapshot_tree(root)
        .into_iter()
        .chain([(std::path::PathBuf::new(), Vec::new())])
        .map(|(p, bytes)| {
            let modified = std::fs::symlink_metadata(root.join(&p))
                .unwrap()
                .modified()
                .unwrap();
            (p, bytes, modified)
        })
        .collect()
}

/// A template set in `dir`: `evil-app` (the embedded app template plus `files`) and
/// `evil-service` (a one-file service template plus `files`). `files` maps a path under
/// `files/` to its contents.
fn template_set(dir: &Path, files: &[(&str, &str)]) {
    let app = dir.join("evil-app");
    let repo_app = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/app");
    for (rel, contents) in snapshot_tree(&repo_app) {
        let dest = app.join(&rel);
        if rel.as_os_str().to_string_lossy().ends_with('/') {
            std::fs::create_dir_all(dest).unwrap();
        } else {
            std::fs::write(dest, contents).unwrap();
        }
    }
    let service = dir.join("evil-service");
    std::fs::create_dir_all(service.join("files")).unwrap();
    std::fs::write(
        service.join("template.toml"),
        "description = \"evil\"\nkind = \"service\"\n",
    )
    .unwrap();
    std::fs::write(service.join("manifest.yaml.tera"), "path: {{ path }}\n").unwrap();
    std::fs::write(service.join("files/README.md.tera"), "# {{ name }}\n").unwrap();
    for template in [&app, &service] {
        for (rel, contents) in files {
            let dest = template.join("files").join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(dest, contents).unwrap();
        }
    }
}

/// Runs `new app` (from `root/work/a/b/c`) and `new service` (in an app at
/// `root/work/a/b/c/shop-ok`) with the `evil-*` templates of `root/tpl`, with and without
/// --dry-run, expecting exit 2 with `expected` in the message and nothing written or
/// removed anywhere under `root`.
fn assert_refused_everywhere(root: &Path, extra: &[&str], expected: &[&str]) {
    let cwd = root.join("work/a/b/c");
    let tpl = root.join("tpl");
    let tpl = tpl.to_str().unwrap();
    let mut runs: Vec<(std::path::PathBuf, Vec<&str>)> = Vec::new();
    for dry in [true, false] {
        let mut app = vec!["new", "app", "shop", "--template", "evil-app"];
        let mut service = vec!["new", "service", "ratings", "--template", "evil-service"];
        for args in [&mut app, &mut service] {
            args.extend(["--template-dir", tpl]);
            args.extend(extra);
            if dry {
                args.push("--dry-run");
            }
        }
        runs.push((cwd.clone(), app));
        runs.push((cwd.join("shop-ok"), service));
    }
    for (dir, args) in runs {
        age_dirs(root);
        let before = tree_and_times(root);
        let out = run(&dir, &args);
        assert_code(&out, 2);
        let err = stderr(&out);
        for e in expected {
            assert!(err.contains(e), "{args:?}: expected {e:?} in:\n{err}");
        }
        assert_eq!(
            tree_and_times(root),
            before,
            "{args:?} wrote or removed something"
        );
    }
}

/// A scratch root with `work/a/b/c/shop-ok` (an app) and an empty `tpl/`.
fn scratch() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let cwd = root.path().join("work/a/b/c");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(root.path().join("tpl")).unwrap();
    assert_code(&run(&cwd, &["new", "app", "shop-ok", "--no-git"]), 0);
    root
}

#[test]
fn template_paths_that_leave_the_destination_are_refused() {
    for (path, why) in [
        (
            "dot-./dot-./dot-./escaped.txt",
            "`..` is the parent directory",
        ),
        (
            "src/dot-./dot-./dot-./dot-./escaped.txt.tera",
            "`..` is the parent directory",
        ),
        ("dot-..tera", "`..` is the parent directory"),
        ("dot-/x.txt", "`.` is the directory itself"),
        ("dot-git/hooks/post-checkout", "git's own directory"),
        ("config/.tera", "is empty"),
        ("line\nbreak.txt", "U+000A (a control character)"),
        (
            "readme\u{202e}txt.rs",
            "U+202E (a bidirectional formatting character)",
        ),
    ] {
        let root = scratch();
        template_set(&root.path().join("tpl"), &[(path, "escaped\n")]);
        assert_refused_everywhere(
            root.path(),
            &[],
            &[
                "error: template `evil-",
                why,
                "every path a template writes must stay inside the directory it creates",
            ],
        );
        assert!(
            !root.path().parent().unwrap().join("escaped.txt").exists(),
            "{path}: written above the scratch directory"
        );
    }
}

#[test]
fn template_files_that_collide_are_refused() {
    let root = scratch();
    template_set(
        &root.path().join("tpl"),
        &[("dot-env", "A=1\n"), (".env.tera", "A=2\n")],
    );
    assert_refused_everywhere(root.path(), &[], &["renders to .env, as"]);
}

#[test]
fn links_in_a_template_dir_are_refused_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("id_ed25519");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    for (link, target) in [
        ("key.txt", secret.clone()),
        ("key.txt.tera", secret.clone()),
        ("ssh", outside.path().to_path_buf()),
    ] {
        let root = scratch();
        let tpl = root.path().join("tpl");
        template_set(&tpl, &[]);
        for template in ["evil-app", "evil-service"] {
            std::os::unix::fs::symlink(&target, tpl.join(template).join("files").join(link))
                .unwrap();
        }
        assert_refused_everywhere(
            root.path(),
            &[],
            &[
                &format!("files/{link} is a symbolic link"),
                "links are not followed",
            ],
        );
    }
    // The template itself a link to a directory elsewhere.
    let root = scratch();
    let tpl = root.path().join("tpl");
    template_set(&outside.path().join("real"), &[]);
    for template in ["evil-app", "evil-service"] {
        std::os::unix::fs::symlink(
            outside.path().join("real").join(template),
            tpl.join(template),
        )
        .unwrap();
    }
    assert_refused_everywhere(
        root.path(),
        &[],
        &[&format!("{}/evil-", tpl.display()), "is a symbolic link"],
    );
}

#[test]
fn a_template_dir_given_through_a_link_is_used() {
    let root = scratch();
    template_set(&root.path().join("tpl"), &[("notes.txt", "fine\n")]);
    let alias = root.path().join("alias");
    std::os::unix::fs::symlink(root.path().join("tpl"), &alias).unwrap();
    let app = root.path().join("work/a/b/c/shop-ok");
    let out = run(
        &app,
        &[
            "new",
            "service",
            "ratings",
            "--template",
            "evil-service",
            "--template-dir",
            alias.to_str().unwrap(),
        ],
    );
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(app.join("services/ratings/notes.txt")).unwrap(),
        "fine\n"
    );
}

#[test]
fn templates_cannot_read_the_environment() {
    for (file, text) in [
        (
            "leak.txt.tera",
            "{{ get_env(name=\"DRONECTL_TEST_SECRET\") }}",
        ),
        (
            "src/leak.rs.tera",
            "{% set s = get_env(name=\"DRONECTL_TEST_SECRET\", default=\"\") %}{{ s }}",
        ),
    ] {
        let root = scratch();
        template_set(&root.path().join("tpl"), &[(file, text)]);
        let cwd = root.path().join("work/a/b/c");
        let tpl = root.path().join("tpl");
        for (dir, args) in [
            (
                cwd.clone(),
                vec!["new", "app", "shop", "--template", "evil-app"],
            ),
            (
                cwd.join("shop-ok"),
                vec!["new", "service", "ratings", "--template", "evil-service"],
            ),
        ] {
            age_dirs(root.path());
            let before = tree_and_times(root.path());
            let out = dronectl()
                .current_dir(&dir)
                .env("DRONECTL_TEST_SECRET", "hunter2")
                .args(&args)
                .args(["--template-dir", tpl.to_str().unwrap()])
                .output()
                .unwrap();
            assert_code(&out, 2);
            let err = stderr(&out);
            assert!(
                err.contains(&format!("files/{file}"))
                    && err.contains("template `evil-")
                    && err.contains("`get_env` is not available"),
                "{args:?}: {err}"
            );
            assert!(!err.contains("hunter2") && !stdout(&out).contains("hunter2"));
            assert_eq!(tree_and_times(root.path()), before, "{args:?}");
        }
    }
    // Not in a service's manifest entry, nor in the app's manifest, either.
    let root = scratch();
    let tpl = root.path().join("tpl");
    template_set(&tpl, &[]);
    std::fs::write(
        tpl.join("evil-service/manifest.yaml.tera"),
        "path: {{ path }}\nenv: { HOME_WAS: \"{{ get_env(name='HOME') }}\" }\n",
    )
    .unwrap();
    let app_manifest = tpl.join("evil-app/files/dronectl.yaml.tera");
    let text = std::fs::read_to_string(&app_manifest).unwrap();
    std::fs::write(
        &app_manifest,
        format!("{text}# {{{{ get_env(name='HOME') }}}}\n"),
    )
    .unwrap();
    assert_refused_everywhere(
        root.path(),
        &[],
        &["template `evil-", "`get_env` is not available"],
    );
}

#[test]
fn control_characters_in_set_values_are_refused_naming_the_key() {
    for (value, code) in [
        ("a\u{7f}b", "U+007F (a control character)"),
        ("a\u{1b}[2Jb", "U+001B (a control character)"),
        ("two\nlines", "U+000A (a control character)"),
        ("a\u{85}b", "U+0085 (a control character)"),
        (
            "abc\u{202e}cba",
            "U+202E (a bidirectional formatting character)",
        ),
        (
            "x\u{2066}y",
            "U+2066 (a bidirectional formatting character)",
        ),
    ] {
        let root = scratch();
        template_set(&root.path().join("tpl"), &[]);
        let set = format!("description={value}");
        assert_refused_everywhere(
            root.path(),
            &["--set", "ok=fine", "--set", &set],
            &[
                "error: invalid --set `description`: the value contains ",
                code,
            ],
        );
        // The embedded templates too, where the value lands in Cargo.toml.
        let app = root.path().join("work/a/b/c/shop-ok");
        let before = tree_and_times(root.path());
        let out = run(&app, &["new", "service", "ratings", "--set", &set]);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains(&format!(
                "invalid --set `description`: the value contains {code}"
            )),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("Cargo.toml"), "{}", stderr(&out));
        assert_eq!(tree_and_times(root.path()), before);
    }
}

#[test]
fn dry_run_creates_and_removes_nothing() {
    let root = scratch();
    let cwd = root.path().join("work/a/b/c");
    for (dir, args) in [
        (cwd.clone(), vec!["new", "app", "shop", "--dry-run"]),
        (cwd.clone(), vec!["new", "app", "x/y/shop", "--dry-run"]),
        (
            cwd.join("shop-ok"),
            vec!["new", "service", "ratings", "--dry-run"],
        ),
        (
            cwd.join("shop-ok"),
            vec![
                "new",
                "service",
                "jobs",
                "--template",
                "rust-worker",
                "--dry-run",
            ],
        ),
    ] {
        age_dirs(root.path());
        let before = tree_and_times(root.path());
        let out = run(&dir, &args);
        assert_code(&out, 0);
        assert!(stdout(&out).contains("would create"), "{}", stdout(&out));
        assert_eq!(
            tree_and_times(root.path()),
            before,
            "{args:?} created or removed something"
        );
    }
}

// The shared layer of a template set (`_shared/files/`).

/// Writes `files` (path under `dir`, contents), creating directories.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (rel, contents) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

#[test]
fn a_template_set_shares_files_through_its_shared_layer() {
    let (tmp, app) = new_app("shop");
    let set = tmp.path().join("my-templates");
    write_files(
        &set,
        &[
            (
                "tiny/template.toml",
                "description = \"A tiny one\"\nkind = \"service\"\nshared = true\n",
            ),
            ("tiny/manifest.yaml.tera", "path: {{ path }}\n"),
            ("tiny/files/README.md.tera", "# {{ name }}, its own\n"),
            (
                "plain/template.toml",
                "description = \"No shared layer\"\nkind = \"service\"\n",
            ),
            ("plain/manifest.yaml.tera", "path: {{ path }}\n"),
            ("plain/files/README.md", "plain\n"),
            ("_shared/files/README.md.tera", "# {{ name }}, shared\n"),
            ("_shared/files/src/common.rs.tera", "// {{ crate_name }}\n"),
            ("_shared/files/dot-dockerignore", "target\n"),
            // A template.toml does not make `_shared` a template.
            (
                "_shared/template.toml",
                "description = \"sneaky\"\nkind = \"service\"\n",
            ),
            ("_shared/manifest.yaml.tera", "path: {{ path }}\n"),
        ],
    );
    let dir = set.to_str().unwrap();
    let out = run(&app, &["-o", "json", "templates", "--template-dir", dir]);
    assert_code(&out, 0);
    let summary = json_lines(&out).pop().unwrap();
    let names: Vec<&str> = summary["result"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["plain", "tiny"], "{}", stdout(&out));

    let out = run(
        &app,
        &[
            "new",
            "service",
            "mini-svc",
            "--template",
            "tiny",
            "--template-dir",
            dir,
        ],
    );
    assert_code(&out, 0);
    let service = app.join("services/mini-svc");
    let read = |rel: &str| std::fs::read_to_string(service.join(rel)).unwrap();
    // Used where the template has no file of that path, rendered like its own files...
    assert_eq!(read("src/common.rs"), "// mini_svc\n");
    assert_eq!(read(".dockerignore"), "target\n");
    // ...and overridden where it has one.
    assert_eq!(read("README.md"), "# mini-svc, its own\n");

    // Only for templates that ask for it.
    let out = run(
        &app,
        &[
            "new",
            "service",
            "other",
            "--template",
            "plain",
            "--template-dir",
            dir,
        ],
    );
    assert_code(&out, 0);
    let files: Vec<_> = snapshot_tree(&app.join("services/other"))
        .into_keys()
        .collect();
    assert_eq!(files, [Path::new("README.md")]);

    // `_shared` cannot be chosen.
    let before = snapshot_tree(&app);
    let out = run(
        &app,
        &[
            "new",
            "service",
            "third",
            "--template",
            "_shared",
            "--template-dir",
            dir,
        ],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("unknown template `_shared`; available: plain, tiny"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_tree(&app), before);
}

#[test]
fn the_embedded_shared_layer_is_not_a_template() {
    let (_tmp, app) = new_app("shop");
    let out = run(&app, &["templates"]);
    assert_code(&out, 0);
    assert!(!stdout(&out).contains("_shared"), "{}", stdout(&out));
    let before = snapshot_tree(&app);
    let out = run(&app, &["new", "service", "mini", "--template", "_shared"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("unknown template `_shared`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_tree(&app), before);
}

/// `template_set` with both templates opting into a shared layer holding `files`.
fn shared_template_set(dir: &Path, files: &[(&str, &str)]) {
    template_set(dir, &[]);
    for template in ["evil-app", "evil-service"] {
        let toml = dir.join(template).join("template.toml");
        let mut meta = std::fs::read_to_string(&toml).unwrap();
        meta.push_str("shared = true\n");
        std::fs::write(&toml, meta).unwrap();
    }
    std::fs::create_dir_all(dir.join("_shared/files")).unwrap();
    write_files(&dir.join("_shared/files"), files);
}

#[test]
fn the_shared_layer_is_checked_like_a_template() {
    for (path, contents, expected) in [
        (
            "dot-./dot-./escaped.txt",
            "escaped\n",
            "`..` is the parent directory",
        ),
        ("dot-git/config", "x\n", "git's own directory"),
        (
            "leak.txt.tera",
            "{{ get_env(name=\"HOME\") }}",
            "`get_env` is not available",
        ),
    ] {
        let root = scratch();
        shared_template_set(&root.path().join("tpl"), &[(path, contents)]);
        assert_refused_everywhere(root.path(), &[], &["_shared/files/", expected]);
    }
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("id_ed25519");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::create_dir_all(outside.path().join("files")).unwrap();
    for (link, target) in [
        ("_shared/files/key.txt", secret.clone()),
        ("_shared/files/ssh", outside.path().to_path_buf()),
        ("_shared", outside.path().to_path_buf()),
    ] {
        let root = scratch();
        let tpl = root.path().join("tpl");
        shared_template_set(&tpl, &[]);
        if link == "_shared" {
            std::fs::remove_dir_all(tpl.join("_shared")).unwrap();
        }
        std::os::unix::fs::symlink(&target, tpl.join(link)).unwrap();
        assert_refused_everywhere(
            root.path(),
            &[],
            &[
                &format!("{} is a symbolic link", tpl.join(link).display()),
                "links are not followed",
            ],
        );
    }
    // A template that asks for a layer the set does not have.
    let root = scratch();
    let tpl = root.path().join("tpl");
    shared_template_set(&tpl, &[]);
    std::fs::remove_dir_all(tpl.join("_shared")).unwrap();
    assert_refused_everywhere(
        root.path(),
        &[],
        &["`shared = true` needs the template set's _shared/files/ directory"],
    );
}
