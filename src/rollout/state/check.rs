//! Validation of what the state store reads back: state files and ConfigMaps are untrusted
//! input, so every document is checked for contradictions before the engine acts on it.

use std::path::Path;

use super::*;

/// A document of the state store that is validated when read back: state files and
/// ConfigMaps are untrusted input (a bad edit, a disk error, another tool).
pub(crate) trait Checked: serde::de::DeserializeOwned {
    /// The contradictions in `self` as read for `service`, if any.
    fn check(&self, service: &str) -> Result<(), String>;

    /// What to do when the file at `path` is damaged.
    fn file_recovery(path: &Path, service: &str) -> String;

    /// Parses and checks `bytes` read from `place` (a file or a ConfigMap key).
    fn parse(
        bytes: &[u8],
        service: &str,
        place: &str,
        recovery: String,
    ) -> Result<Self, DamagedState> {
        let damaged = |problem: String| DamagedState {
            place: place.to_string(),
            problem,
            recovery: recovery.clone(),
        };
        let value: Self =
            serde_json::from_slice(bytes).map_err(|e| damaged(format!("not valid state: {e}")))?;
        value.check(service).map_err(damaged)?;
        Ok(value)
    }
}

fn move_away(path: &Path) -> String {
    format!("`mv {0} {0}.damaged`", path.display())
}

impl Checked for RolloutState {
    fn check(&self, service: &str) -> Result<(), String> {
        self.validate(service)
    }

    fn file_recovery(path: &Path, service: &str) -> String {
        format!(
            "move it away ({}): dronectl then forgets the rollout in progress (what runs stays as it is) and the next `dronectl deploy {service}` starts afresh",
            move_away(path)
        )
    }
}

impl Checked for ServiceRecord {
    fn check(&self, _service: &str) -> Result<(), String> {
        self.validate()
    }

    fn file_recovery(path: &Path, service: &str) -> String {
        format!(
            "move it away ({}): dronectl then forgets `{service}`'s stable revision and history, and the next deploy is treated as its first",
            move_away(path)
        )
    }
}

impl Checked for Request {
    fn check(&self, _service: &str) -> Result<(), String> {
        Ok(())
    }

    fn file_recovery(path: &Path, _service: &str) -> String {
        format!(
            "delete it (`rm {}`) and post the request again",
            path.display()
        )
    }
}

/// A revision is consistent when its id is the hash of its content (so an edited image or
/// environment cannot pass for the revision that was deployed).
fn check_revision(revision: &Revision, what: &str) -> Result<(), String> {
    let expected = Revision::new(
        &revision.image,
        &revision.version,
        revision.replicas,
        revision.env.clone(),
    )
    .with_secrets(revision.secrets.clone());
    if revision.id != expected.id {
        return Err(format!(
            "{what} revision `{}` does not match its content (image `{}`)",
            revision.id.escape_debug(),
            revision.image.escape_debug()
        ));
    }
    if revision.image.is_empty() {
        return Err(format!("{what} revision `{}` has no image", revision.id));
    }
    // Secret versions are names and random ids (or `rv:<resourceVersion>`), never values.
    for (name, version) in &revision.secrets {
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let version_ok = !version.is_empty()
            && version.len() <= 64
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-');
        if !name_ok || !version_ok {
            return Err(format!(
                "{what} revision `{}` has a malformed secret version",
                revision.id
            ));
        }
    }
    Ok(())
}

impl RolloutState {
    /// Checks a rollout read back for `service`: a known format, weights 0–100 (the stable
    /// revision has `100 - weight`), a step within the plan, analyses the plan defines,
    /// consistent revisions and a phase that agrees with the traffic.
    pub fn validate(&self, service: &str) -> Result<(), String> {
        if self.format != STATE_FORMAT {
            return Err(format!(
                "format {} is not one this dronectl reads (format {STATE_FORMAT}); was it written by another version?",
                self.format
            ));
        }
        if self.service != service {
            return Err(format!(
                "it holds the rollout of `{}`, not of `{service}`",
                self.service.escape_debug()
            ));
        }
        if self.number == 0 {
            return Err("rollout number 0 (numbers start at 1)".into());
        }
        if self.weight > 100 {
            return Err(format!(
                "the candidate has {}% of the traffic (at most 100%)",
                self.weight
            ));
        }
        for (i, step) in self.plan.steps.iter().enumerate() {
            match step {
                PlanStep::Weight(w) if *w > 100 => {
                    return Err(format!("step {} sets weight {w}% (at most 100%)", i + 1))
                }
                PlanStep::Mirror(p) if *p > 100 => {
                    return Err(format!("step {} mirrors {p}% (at most 100%)", i + 1))
                }
                PlanStep::Match(m) => {
                    if let Err(e) = check_match(m) {
                        return Err(format!("step {}: {e}", i + 1));
                    }
                }
                PlanStep::Analysis(a) if !self.plan.analyses.contains_key(a) => {
                    return Err(format!(
                        "step {} runs analysis `{}`, which the plan does not define",
                        i + 1,
                        a.escape_debug()
                    ))
                }
                _ => {}
            }
        }
        if self.step > self.plan.steps.len() {
            return Err(format!(
                "the current step is {} of a plan with {} steps",
                self.step + 1,
                self.plan.steps.len()
            ));
        }
        if let Some(run) = &self.analysis {
            if !self.plan.analyses.contains_key(&run.name) {
                return Err(format!(
                    "analysis `{}` runs, but the plan does not define it",
                    run.name.escape_debug()
                ));
            }
        }
        check_revision(&self.candidate, "the candidate")?;
        if let Some(stable) = &self.stable {
            check_revision(stable, "the stable")?;
            if stable.id == self.candidate.id {
                return Err(format!(
                    "the candidate and the stable revision are the same ({})",
                    stable.id
                ));
            }
        }
        if let Some(progress) = self.rolling {
            let Some(stable) = &self.stable else {
                return Err("a rolling update without a stable revision".into());
            };
            if progress.candidate > self.candidate.replicas.max(1)
                || progress.stable > stable.replicas
            {
                return Err(format!(
                    "the rolling update has {} new and {} old replicas (of {} and {})",
                    progress.candidate,
                    progress.stable,
                    self.candidate.replicas.max(1),
                    stable.replicas
                ));
            }
        }
        match &self.phase {
            Phase::Completed if self.weight != 100 => Err(format!(
                "completed, but the candidate has {}% of the traffic, not 100%",
                self.weight
            )),
            Phase::Aborted { .. } | Phase::Failed { .. } if self.weight != 0 => Err(format!(
                "rolled back, but the candidate still has {}% of the traffic",
                self.weight
            )),
            phase if phase.is_terminal() && self.finished_ms.is_none() => {
                Err("finished, without a finish time".into())
            }
            _ => Ok(()),
        }
    }
}

impl ServiceRecord {
    /// Checks a record read back: consistent revisions, rollout numbers each once, known
    /// outcomes, and a stable revision that a completed rollout deployed.
    pub fn validate(&self) -> Result<(), String> {
        let mut numbers = std::collections::BTreeSet::new();
        for entry in &self.history {
            if !numbers.insert(entry.number) || entry.number == 0 {
                return Err(format!(
                    "the history lists rollout number {} more than once (or as 0)",
                    entry.number
                ));
            }
            let ends = [Outcome::Completed, Outcome::Aborted, Outcome::Failed];
            if !ends.iter().any(|o| *o == entry.outcome.as_str()) {
                return Err(format!(
                    "rollout {} has the unknown outcome `{}`",
                    entry.number,
                    entry.outcome.escape_debug()
                ));
            }
            check_revision(&entry.revision, &format!("rollout {}'s", entry.number))?;
        }
        for retired in &self.retired {
            check_revision(&retired.revision, "a retired")?;
        }
        if let Some(stable) = &self.stable {
            check_revision(stable, "the stable")?;
            let deployed = self
                .history
                .iter()
                .any(|h| h.outcome == Outcome::Completed.as_str() && h.revision.id == stable.id);
            // Old entries are dropped, so a long history may have lost it.
            if !deployed && self.history.len() < HISTORY_KEEP {
                return Err(format!(
                    "the stable revision {} is not one any completed rollout in the history deployed",
                    stable.label().escape_debug()
                ));
            }
        }
        Ok(())
    }
}

/// A stored match step: conditions the router would accept.
fn check_match(m: &crate::rollout::platform::TrafficMatch) -> Result<(), String> {
    use crate::rollout::platform::{BadCondition, MatchValue, RefusedCondition};
    if m.headers.is_empty() && m.cookies.is_empty() {
        return Err("a match without conditions".into());
    }
    if let Some(refused) = m.refused_conditions().into_iter().next() {
        let RefusedCondition {
            kind, name, value, ..
        } = refused;
        return Err(match (refused.problem, value) {
            (BadCondition::Name, _) => format!("invalid {kind} name `{}`", name.escape_debug()),
            (BadCondition::Value, MatchValue::Exact(v) | MatchValue::Regex(v)) => {
                format!("invalid {kind} value `{}`", v.escape_debug())
            }
            (BadCondition::Regex(e), _) => {
                format!("{kind} `{}`: invalid regex: {e}", name.escape_debug())
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::StrategyKind;
    use crate::rollout::state::fixtures::*;

    #[tokio::test]
    async fn valid_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.save(&state()).await.unwrap();
        store.save_record("api", &record()).await.unwrap();
        assert_eq!(store.load("api").await.unwrap(), Some(state()));
        assert_eq!(store.load_record("api").await.unwrap(), record());
    }

    #[tokio::test]
    async fn damaged_state_is_refused_naming_the_file_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let path = dir.path().join("api.rollout.json");
        let cases: Vec<(Damage<RolloutState>, &str)> = vec![
            ((|s| s.weight = 4_294_967_246), "4294967246% of the traffic"),
            ((|s| s.weight = 101), "101%"),
            ((|s| s.format = 9), "format 9"),
            ((|s| s.step = 7), "step is 8 of a plan with 4 steps"),
            ((|s| s.plan.steps[0] = PlanStep::Weight(250)), "weight 250%"),
            (
                (|s| s.plan.steps[1] = PlanStep::Analysis("nope".into())),
                "analysis `nope`",
            ),
            ((|s| s.service = "web".into()), "not of `api`"),
            (
                (|s| s.candidate.image = "evil/x:1".into()),
                "does not match its content",
            ),
            (
                (|s| s.candidate.id = "../../x".into()),
                "does not match its content",
            ),
            ((|s| s.stable = Some(s.candidate.clone())), "the same"),
            (
                (|s| {
                    s.phase = Phase::Completed;
                    s.finished_ms = Some(2);
                }),
                "not 100%",
            ),
            (
                (|s| {
                    s.plan.kind = StrategyKind::Rolling;
                    s.rolling = Some(RollingProgress {
                        candidate: 9,
                        stable: 0,
                    });
                }),
                "9 new",
            ),
        ];
        for (damage, expected) in cases {
            let mut bad = state();
            damage(&mut bad);
            std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let err = store.load("api").await.unwrap_err();
            let text = err.to_string();
            assert!(err.is::<DamagedState>(), "{text}");
            assert!(text.contains(expected), "expected {expected:?} in {text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(
                text.contains(&format!("mv {0} {0}.damaged", path.display())),
                "{text}"
            );
        }
        std::fs::write(&path, b"{\"format\": 1, \"servi").unwrap();
        let text = store.load("api").await.unwrap_err().to_string();
        assert!(
            text.contains("not valid state") && text.contains("api.rollout.json"),
            "{text}"
        );
    }

    #[test]
    fn secret_versions_are_part_of_the_revision_and_checked() {
        let plain = revision("api:1");
        let with = plain
            .clone()
            .with_secrets(std::collections::BTreeMap::from([(
                "DB_PASSWORD".to_string(),
                "0".repeat(32),
            )]));
        assert_ne!(plain.id, with.id);
        assert_eq!(check_revision(&with, "stable"), Ok(()));
        // Without secrets the id is what it always was (recorded revisions stay valid).
        assert_eq!(
            plain.id,
            Revision::new("api:1", "1.0.0", 2, Default::default()).id
        );
        let mut swapped = with.clone();
        swapped.secrets.insert("DB_PASSWORD".into(), "1".repeat(32));
        assert!(check_revision(&swapped, "stable").is_err());
        let mut odd = plain.clone();
        odd.secrets.insert("A".into(), "hunter 2".into());
        odd = odd.clone().with_secrets(odd.secrets.clone());
        assert!(check_revision(&odd, "stable")
            .unwrap_err()
            .contains("malformed secret version"));
    }

    #[tokio::test]
    async fn damaged_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let path = dir.path().join("api.record.json");
        let cases: Vec<(Damage<ServiceRecord>, &str)> = vec![
            (
                (|r| r.stable = Some(revision("app/api:9"))),
                "not one any completed rollout",
            ),
            ((|r| r.history.push(r.history[0].clone())), "more than once"),
            ((|r| r.history[0].outcome = "won".into()), "unknown outcome"),
            (
                (|r| {
                    r.history[0]
                        .revision
                        .env
                        .insert("K".into(), "v".into())
                        .map_or((), drop)
                }),
                "does not match",
            ),
        ];
        for (damage, expected) in cases {
            let mut bad = record();
            damage(&mut bad);
            std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let text = store.load_record("api").await.unwrap_err().to_string();
            assert!(
                text.contains(expected) && text.contains("api.record.json"),
                "expected {expected:?} in {text}"
            );
            assert!(text.contains("forgets `api`'s stable revision"), "{text}");
        }
    }
}
