//! Router metrics on Kubernetes: error rate and latency percentiles become Prometheus
//! queries when the analysis names an `address` (Kubernetes has no dronectl router).

use crate::manifest::Metric;
use crate::rollout::AnalysisPlan;

pub(super) fn prometheus_for(analysis: &AnalysisPlan) -> Option<AnalysisPlan> {
    analysis.address.as_ref()?;
    let selector = r#"service="{{service}}",version="{{version}}""#;
    let query = match analysis.metric {
        Metric::ErrorRate => format!(
            r#"sum(rate(http_requests_total{{{selector},status=~"5.."}}[1m])) / sum(rate(http_requests_total{{{selector}}}[1m]))"#
        ),
        Metric::LatencyP50 | Metric::LatencyP95 | Metric::LatencyP99 => {
            let q = match analysis.metric {
                Metric::LatencyP50 => "0.5",
                Metric::LatencyP95 => "0.95",
                _ => "0.99",
            };
            format!(
                r#"histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{selector}}}[1m])))"#
            )
        }
        _ => return None,
    };
    let mut plan = analysis.clone();
    plan.query = Some(query);
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(metric: Metric, address: Option<&str>) -> AnalysisPlan {
        AnalysisPlan {
            name: "a".into(),
            metric,
            threshold: Some(0.01),
            interval: std::time::Duration::from_secs(10),
            count: 3,
            failure_limit: 1,
            url: None,
            expect_status: None,
            query: None,
            address: address.map(str::to_string),
        }
    }

    #[test]
    fn router_metrics_become_prometheus_queries_when_there_is_an_address() {
        let p =
            prometheus_for(&analysis(Metric::ErrorRate, Some("http://prometheus:9090"))).unwrap();
        let q = p.query.unwrap();
        assert!(
            q.contains("http_requests_total") && q.contains(r#"status=~"5..""#),
            "{q}"
        );
        let p = prometheus_for(&analysis(
            Metric::LatencyP95,
            Some("http://prometheus:9090"),
        ))
        .unwrap();
        assert!(p.query.unwrap().starts_with("histogram_quantile(0.95"));
        assert!(prometheus_for(&analysis(Metric::ErrorRate, None)).is_none());
    }
}
