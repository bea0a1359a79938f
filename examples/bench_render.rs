//! Render time for the reference app and a synthetic 200-service app, and the number of
//! API requests a whole-app deploy of the reference app makes against kube-fake.
//!
//!     cargo run --release --example bench_render     (or without --release for a debug build)

use std::path::Path;
use std::time::{Duration, Instant};

use dronectl::k8s::{self, render, DeployOptions, Images, KubeEnv, KubeTarget, RollingParams};
use dronectl::manifest::{self, LoadedManifest, Manifest, StrategyKind};

const ROLLING: RollingParams = RollingParams {
    max_surge: 1,
    max_unavailable: 0,
};

fn time_render(m: &Manifest, env: &str) -> (Duration, usize, usize) {
    let kenv = KubeEnv::from_manifest(m, env, None).unwrap();
    let images = Images {
        tag: Some("1.0.0-abc1234".into()),
        ..Default::default()
    };
    let mut best = Duration::MAX;
    let (mut objects, mut bytes) = (0, 0);
    for _ in 0..5 {
        let start = Instant::now();
        let revisions = images.revisions(&kenv, m, &[]).unwrap();
        let rendered = render::render_app(&kenv, m, &[], &revisions, ROLLING);
        let yaml = render::to_yaml(&rendered).unwrap();
        best = best.min(start.elapsed());
        objects = rendered.len();
        bytes = yaml.len();
    }
    (best, objects, bytes)
}

fn synthetic(n: usize) -> Manifest {
    let mut text = String::from("app: synthetic\nservices:\n");
    for i in 0..n {
        let deps: Vec<String> = (1..=3)
            .filter(|d| i >= *d)
            .map(|d| format!("svc{}", i - d))
            .chain(["redis".to_string()])
            .collect();
        text.push_str(&format!(
            "  svc{i}:\n    path: services/svc{i}\n    port: 8080\n    replicas: 2\n    resources: {{ requests: {{ cpu: 50m, memory: 32Mi }}, limits: {{ cpu: 500m, memory: 128Mi }} }}\n    env: {{ LEVEL: \"{i}\" }}\n    routes: [/api/svc{i}]\n    depends_on: [{}]\n",
            deps.join(", ")
        ));
    }
    text.push_str("infrastructure:\n  redis: { image: redis:7, port: 6379, volume: /data }\nenvironments:\n  k8s: { target: kubernetes, namespace: synth, registry: registry.example.com }\n");
    manifest::parse(Path::new("synthetic.yaml"), &text).unwrap()
}

fn main() {
    let reference = LoadedManifest::read_valid(Path::new("tests/fixtures/kube-app"))
        .unwrap()
        .manifest;
    let (t, objects, bytes) = time_render(&reference, "staging");
    println!(
        "render reference app ({} services): {:.2} ms, {objects} objects, {bytes} bytes of YAML",
        reference.services.len(),
        t.as_secs_f64() * 1000.0
    );
    let big = synthetic(200);
    let (t, objects, bytes) = time_render(&big, "k8s");
    println!(
        "render synthetic app (200 services): {:.2} ms, {objects} objects, {bytes} bytes of YAML",
        t.as_secs_f64() * 1000.0
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cluster = kube_fake::FakeCluster::start().await;
        cluster.set_tick(Duration::from_millis(20));
        let kenv = KubeEnv::from_manifest(&reference, "staging", Some("default")).unwrap();
        let target = KubeTarget::with_client(reference.clone(), kenv, cluster.kube_client());
        let opts = DeployOptions {
            services: vec![],
            images: Images { tag: Some("1.0.0".into()), ..Default::default() },
            kind: Some(StrategyKind::Rolling),
            strategy: None,
            timing: dronectl::rollout::Timing { poll: Duration::from_millis(100), ..Default::default() },
            timeout: Some(Duration::from_secs(120)),
            dry_run: None,
            create_namespace: false,
        };
        let reporter = dronectl::events::Collect::default();
        cluster.clear_requests();
        let start = Instant::now();
        let outcome = k8s::deploy(&target, &opts, &reporter).await.unwrap();
        let elapsed = start.elapsed();
        let requests = cluster.requests();
        let mut by_verb = std::collections::BTreeMap::<String, usize>::new();
        for r in &requests {
            *by_verb.entry(r.verb.clone()).or_default() += 1;
        }
        println!(
            "deploy reference app to kube-fake: {} services + {} infrastructure in {:.1} s, {} API requests {by_verb:?}",
            outcome.services.len(),
            outcome.infrastructure.len(),
            elapsed.as_secs_f64(),
            requests.len()
        );
        cluster.clear_requests();
        let again = k8s::deploy(&target, &opts, &reporter).await.unwrap();
        println!(
            "deploy again (nothing changed, {} unchanged): {} API requests",
            again.services.iter().filter(|s| s.outcome == "unchanged").count(),
            cluster.request_count()
        );
    });
}
