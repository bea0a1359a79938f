//! Strategies and analyses: steps allowed by each kind, weights, `match` and `mirror` steps,
//! rolling parameters, analysis thresholds and counts, and references to both.

use serde_saphyr::Spanned;

use super::{suggest, Findings};
use crate::manifest::{Manifest, Metric, Step, StrategyKind};

pub(super) fn check_strategies(m: &Manifest, out: &mut Findings) {
    for (name, strategy) in &m.strategies {
        let field = format!("strategies.{name}");
        out.single_line(field.clone(), Some(strategy), name, false);
        let s = &strategy.value;
        match s.kind {
            StrategyKind::Canary => {
                if s.steps.is_empty() {
                    out.error(
                        format!("{field}.steps"),
                        Some(strategy),
                        "a canary needs at least one step",
                    );
                }
                if !s.steps.iter().any(|st| matches!(st.value, Step::Weight(_))) {
                    out.warning(
                        format!("{field}.steps"),
                        Some(strategy),
                        "no `weight` step: the canary never receives traffic before full promotion",
                    );
                }
            }
            StrategyKind::BlueGreen => {
                for (i, step) in s.steps.iter().enumerate() {
                    if let Step::Weight(w) = step.value {
                        if w != 0 && w != 100 {
                            out.error(format!("{field}.steps[{i}]"), Some(step), format!("a blue-green switches all traffic at once: weight must be 0 or 100, not {w}"));
                        }
                    }
                }
            }
            StrategyKind::Ab => {
                if !s.steps.iter().any(|st| matches!(st.value, Step::Match(_))) {
                    out.error(
                        format!("{field}.steps"),
                        Some(strategy),
                        "an A/B strategy needs a `match` step: the match decides who sees the new version",
                    );
                }
                for (i, step) in s.steps.iter().enumerate() {
                    if let Step::Weight(_) = step.value {
                        out.error(format!("{field}.steps[{i}]"), Some(step), "an A/B strategy has no `weight` steps: a match decides, not weight (use `type: canary` to combine them)");
                    }
                }
            }
            StrategyKind::Rolling => {
                if let Some(step) = s.steps.first() {
                    out.error(format!("{field}.steps"), Some(step), "`steps` do not apply to rolling strategies (use max_surge and max_unavailable)");
                }
            }
        }
        if s.kind != StrategyKind::Rolling && (s.max_surge.is_some() || s.max_unavailable.is_some())
        {
            out.error(
                field.clone(),
                Some(strategy),
                format!(
                    "`max_surge`/`max_unavailable` only apply to rolling strategies, not {}",
                    s.kind
                ),
            );
        }
        for key in [&s.max_surge, &s.max_unavailable].into_iter().flatten() {
            if !is_int_or_percent(&key.0) {
                out.error(
                    field.clone(),
                    Some(strategy),
                    format!("`{key}` must be a count (`1`) or a percentage (`25%`)"),
                );
            }
        }
        let mut last_weight = 0;
        for (i, step) in s.steps.iter().enumerate() {
            match &step.value {
                Step::Weight(w) if *w > 100 => out.error(
                    format!("{field}.steps[{i}]"),
                    Some(step),
                    format!("weight {w} is over 100"),
                ),
                Step::Weight(w) if *w < last_weight => {
                    out.warning(
                        format!("{field}.steps[{i}]"),
                        Some(step),
                        format!("weight {w} is lower than the previous weight {last_weight}"),
                    );
                    last_weight = *w;
                }
                Step::Weight(w) => last_weight = *w,
                Step::Analysis(a) => {
                    check_analysis_ref(m, format!("{field}.steps[{i}]"), step, a, out)
                }
                Step::Pause(_) => {}
                Step::Match(ms) => check_match_step(&format!("{field}.steps[{i}]"), step, ms, out),
                Step::Mirror(p) if *p > 100 => out.error(
                    format!("{field}.steps[{i}]"),
                    Some(step),
                    format!("mirror {p} is over 100 (a percentage of requests)"),
                ),
                Step::Mirror(_) => {}
            }
            if matches!(step.value, Step::Match(_) | Step::Mirror(_))
                && !matches!(s.kind, StrategyKind::Canary | StrategyKind::Ab)
            {
                out.error(
                    format!("{field}.steps[{i}]"),
                    Some(step),
                    format!(
                        "`match` and `mirror` steps apply to canary and ab strategies, not {}",
                        s.kind
                    ),
                );
            }
        }
        if s.sticky && !matches!(s.kind, StrategyKind::Canary | StrategyKind::Ab) {
            out.error(
                format!("{field}.sticky"),
                Some(strategy),
                format!(
                    "`sticky` applies to canary and ab strategies, not {}",
                    s.kind
                ),
            );
        }
    }
    for (name, analysis) in &m.analyses {
        let field = format!("analyses.{name}");
        out.single_line(field.clone(), Some(analysis), name, false);
        let a = &analysis.value;
        for (key, value) in [("url", &a.url), ("address", &a.address)] {
            if let Some(value) = value {
                out.single_line(format!("{field}.{key}"), Some(analysis), value, false);
            }
        }
        let needs_threshold = matches!(
            a.metric,
            Metric::ErrorRate
                | Metric::LatencyP50
                | Metric::LatencyP95
                | Metric::LatencyP99
                | Metric::Prometheus
        );
        match (needs_threshold, a.threshold) {
            (true, None) => out.error(
                format!("{field}.threshold"),
                Some(analysis),
                "this metric needs a `threshold`",
            ),
            (_, Some(t)) if !(t.is_finite() && t >= 0.0) => out.error(
                format!("{field}.threshold"),
                Some(analysis),
                "threshold must be a non-negative number",
            ),
            (_, Some(t)) if a.metric == Metric::ErrorRate && t > 1.0 => out.error(
                format!("{field}.threshold"),
                Some(analysis),
                format!("error-rate threshold {t} is a fraction between 0 and 1 (use 0.01 for 1%)"),
            ),
            _ => {}
        }
        if a.metric == Metric::Http && a.url.is_none() {
            out.error(
                format!("{field}.url"),
                Some(analysis),
                "an http analysis needs a `url`",
            );
        }
        if a.metric == Metric::Prometheus && a.query.is_none() {
            out.error(
                format!("{field}.query"),
                Some(analysis),
                "a prometheus analysis needs a `query`",
            );
        }
        if a.count == 0 {
            out.error(
                format!("{field}.count"),
                Some(analysis),
                "count must be at least 1",
            );
        }
        if a.failure_limit == 0 || a.failure_limit > a.count {
            out.error(
                format!("{field}.failure_limit"),
                Some(analysis),
                format!("failure_limit must be between 1 and count ({})", a.count),
            );
        }
        if a.interval.0.is_zero() {
            out.error(
                format!("{field}.interval"),
                Some(analysis),
                "interval must be longer than 0s",
            );
        }
    }
}

/// A `match` step: at least one condition; valid header and cookie names, values, regexes.
fn check_match_step<T>(
    field: &str,
    step: &Spanned<T>,
    ms: &crate::manifest::MatchStep,
    out: &mut Findings,
) {
    if ms.header.is_empty() && ms.cookie.is_empty() {
        out.error(
            field.to_string(),
            Some(step),
            "a `match` step needs a `header` or a `cookie` to match",
        );
    }
    use crate::rollout::platform::{BadCondition, MatchValue, RefusedCondition};
    for refused in crate::rollout::plan::traffic_match_as_written(ms).refused_conditions() {
        let RefusedCondition {
            kind, name, value, ..
        } = refused;
        let (field, message) = match (&refused.problem, value) {
            (BadCondition::Name, _) => (
                format!("{field}.match.{kind}"),
                format!("`{}` is not a valid {kind} name", name.escape_debug()),
            ),
            (BadCondition::Value, MatchValue::Exact(v) | MatchValue::Regex(v)) => (
                format!("{field}.match.{kind}.{name}"),
                format!("`{}` cannot be a {kind} value", v.escape_debug()),
            ),
            (BadCondition::Regex(e), _) => (
                format!("{field}.match.{kind}.{name}.regex"),
                format!("invalid regex: {}", e.lines().last().unwrap_or_default()),
            ),
        };
        out.error(field, Some(step), message);
    }
}

pub(super) fn check_strategy_ref(
    m: &Manifest,
    field: String,
    at: &Spanned<String>,
    out: &mut Findings,
) {
    if !m.strategies.contains_key(&at.value) {
        out.error(
            field,
            Some(at),
            format!(
                "strategy `{}` is not defined under `strategies`{}",
                at.value,
                suggest(&at.value, m.strategies.keys())
            ),
        );
    }
}

fn check_analysis_ref<T>(
    m: &Manifest,
    field: String,
    at: &Spanned<T>,
    name: &str,
    out: &mut Findings,
) {
    if !m.analyses.contains_key(name) {
        out.error(
            field,
            Some(at),
            format!(
                "analysis `{name}` is not defined under `analyses`{}",
                suggest(name, m.analyses.keys())
            ),
        );
    }
}

fn is_int_or_percent(v: &str) -> bool {
    let digits = v.strip_suffix('%').unwrap_or(v);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}
