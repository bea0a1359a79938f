//! `dronectl logs` on the real Docker engine, with a generated app of two services: every
//! container's lines in one prefixed stream, one request followed across services by its
//! correlation id (`--grep`), `--since`, `-f` (following), JSON events, and the errors
//! (unknown name, app not up).
//!
//! The app runs under a unique name; a Drop guard runs `down --volumes` and removes its
//! images.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A generated app with the services `alpha` and `beta`, and a private state directory.
fn new_app() -> TestApp {
    TestApp::generated("lg", &[&["alpha"], &["beta"]])
}

/// Lines of `text` written by `label` (`label | …` with any padding).
fn lines_of<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.split_once(" | ")
                .is_some_and(|(prefix, _)| prefix.trim_end() == label)
        })
        .collect()
}

fn get(port: u16, path: &str, correlation_id: &str) {
    let response = http(port, "GET", path, &[("x-correlation-id", correlation_id)])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    assert_eq!(response.header("x-correlation-id"), Some(correlation_id));
}

#[test]
fn logs_of_several_services_in_one_stream() {
    let app = new_app();

    // Not up yet: a clear usage error.
    let out = app.run(&["logs"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("is not up") && stderr(&out).contains("dronectl up"),
        "{}",
        stderr(&out)
    );

    let out = app.run(&["-o", "json", "up", "--timeout", "5m"]);
    assert_code(&out, 0);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let entry = summary["result"]["entry_url"].as_str().unwrap().to_string();
    let port: u16 = entry.rsplit(':').next().unwrap().parse().unwrap();

    // Unknown names: exit 2, naming them and the known ones.
    let out = app.run(&["logs", "alpha", "nope"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("`nope`") && err.contains("known: alpha, beta, router"),
        "{err}"
    );

    // One request to each service with the same correlation id, and another request.
    let id = format!("req-{}", app.name);
    let other = format!("other-{}", app.name);
    get(port, "/api/alpha/7", &id);
    get(port, "/api/beta/8", &id);
    get(port, "/api/alpha/9", &other);

    // No names: every container, each line prefixed with its name padded to a common
    // width (`router`, quiet at the default level, is the longest), JSON records rendered.
    let everything = wait_for("both requests in the logs", Duration::from_secs(20), || {
        let out = app.run(&["logs"]);
        assert_code(&out, 0);
        let text = stdout(&out);
        (text.contains(&format!("[{id}]")) && text.contains(&format!("[{other}]"))).then_some(text)
    });
    for label in ["alpha", "beta"] {
        assert!(
            !lines_of(&everything, label).is_empty(),
            "no `{label}` lines:\n{everything}"
        );
    }
    for line in everything.lines() {
        let (prefix, _) = line.split_once(" | ").expect("a prefixed line");
        assert_eq!(prefix.len(), "router".len(), "{line}");
    }
    assert!(
        lines_of(&everything, "alpha")
            .iter()
            .any(|l| l.ends_with(&format!(
                "INFO  looking up item id=7 method=GET path=/api/alpha/7 [{id}]"
            ))),
        "{everything}"
    );
    assert!(
        lines_of(&everything, "beta")
            .iter()
            .any(|l| l.contains("INFO  request completed status=200")
                && l.ends_with(&format!("[{id}]"))),
        "{everything}"
    );

    // One request across services: only its lines, from both services.
    let out = app.run(&["logs", "alpha", "beta", "--grep", &id]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.lines().all(|l| l.contains(&id)), "{text}");
    // Each service logs `looking up item` and `request completed` for it.
    assert_eq!(lines_of(&text, "alpha").len(), 2, "{text}");
    assert_eq!(lines_of(&text, "beta").len(), 2, "{text}");
    assert!(lines_of(&text, "router").is_empty(), "{text}");
    // One service, prefix as wide as its own name.
    let out = app.run(&["logs", "beta", "--grep", &id, "--raw", "--timestamps"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let rest = line.strip_prefix("beta | ").expect(line);
        let (time, raw) = rest.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        let record: serde_json::Value = serde_json::from_str(raw).expect(raw);
        assert_eq!(record["span"]["correlation_id"], id.as_str());
    }

    // -o json: one event per line with the parsed fields, matching the schema.
    let out = app.run(&["-o", "json", "logs", "alpha", "--grep", &id]);
    assert_code(&out, 0);
    assert_events_match_schema(&stdout(&out));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "log")
        .collect();
    assert_eq!(events.len(), 2, "{}", stdout(&out));
    for e in &events {
        assert_eq!(e["service"], "alpha");
        assert_eq!(e["kind"], "service");
        assert_eq!(e["level"], "INFO");
        assert_eq!(e["correlation_id"], id.as_str());
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e["fields"]["span"]["correlation_id"], id.as_str());
    }
    let last: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(last["result"]["lines"], 2);

    // Since a time in the future: nothing.
    let out = app.run(&["logs", "--since", "2099-01-01T00:00:00Z"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "");
    // Since a while ago: the requests are there.
    let out = app.run(&["logs", "alpha", "--since", "10m", "--grep", &other]);
    assert_code(&out, 0);
    assert_eq!(
        lines_of(&stdout(&out), "alpha").len(),
        2,
        "{}",
        stdout(&out)
    );

    // Following: history first, then new lines of both services as they come.
    let followed = format!("follow-{}", app.name);
    let mut child = app
        .cmd(&["logs", "alpha", "beta", "-f", "--grep", &followed])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // It has started following once it is still running after its history.
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "logs -f ended");
    get(port, "/api/alpha/1", &followed);
    get(port, "/api/beta/2", &followed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.len() < 4 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert_eq!(lines_of(&text, "alpha").len(), 2, "{text}");
    assert_eq!(lines_of(&text, "beta").len(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains(&followed)), "{text}");
}
