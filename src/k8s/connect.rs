//! Connecting: kubeconfig resolution as kubectl does it, the context check, the
//! [`KubeTarget`] a command acts on, and the namespace check.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::events::Reporter;
use crate::exit::UsageError;
use crate::manifest::{Environment, Manifest};
use crate::rollout::replicas::Bounds;
use crate::rollout::{Engine, Revision, Timing};

use super::*;

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file (else `KUBECONFIG`, else `~/.kube/config`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context (else the environment's pinned one, else the current one).
    pub context: Option<String>,
    /// A namespace (else the environment's, else `default`).
    pub namespace: Option<String>,
    /// Allow a context other than the one the environment pins (`--yes`).
    pub allow_other_context: bool,
}

/// Loads the client configuration the way kubectl does, and checks the context against
/// the one the environment pins. Returns the client and the context name.
pub async fn client_for(
    opts: &ConnectOptions,
    env: &str,
    pinned: Option<&str>,
) -> anyhow::Result<(Client, String)> {
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?,
        ),
        None => match Kubeconfig::from_env()
            .map_err(|e| KubeError::Config(format!("KUBECONFIG: {e}")))?
        {
            Some(k) => Some(k),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".kube/config"))
                .filter(|p| p.exists())
                .map(|p| {
                    Kubeconfig::read_from(&p)
                        .map_err(|e| KubeError::Config(format!("{}: {e}", p.display())))
                })
                .transpose()?,
        },
    };
    let (config, context) = match kubeconfig {
        Some(kc) => {
            let context = opts
                .context
                .clone()
                .or_else(|| {
                    pinned
                        .filter(|p| kc.contexts.iter().any(|c| c.name == *p))
                        .map(str::to_string)
                })
                .or_else(|| kc.current_context.clone())
                .unwrap_or_default();
            check_context(env, pinned, &context, opts.allow_other_context)?;
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            let config = Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?;
            (config, context)
        }
        None => {
            // No kubeconfig at all: that is the problem to report, not the context (which
            // only a kubeconfig has).
            let config = Config::incluster().map_err(|e| {
                let wanted = pinned.map_or(String::new(), |p| {
                    format!("; environment `{env}` expects a kubeconfig with the context `{p}`")
                });
                KubeError::Config(format!(
                    "no kubeconfig found (looked at --kubeconfig / DRONECTL_KUBECONFIG, $KUBECONFIG, ~/.kube/config) and not running inside a cluster ({e}){wanted}"
                ))
            })?;
            let context = "in-cluster".to_string();
            check_context(env, pinned, &context, opts.allow_other_context)?;
            (config, context)
        }
    };
    let mut config = config;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&user_agent()).map_err(|e| KubeError::Config(e.to_string()))?,
    ));
    let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
    Ok((client, context))
}

/// `dronectl/<version> (<os>/<arch>)`, as kubectl sends `kubectl/<version> (<os>/<arch>) …`:
/// audit logs name the client, and the API server takes the part before `/` as the default
/// field manager of every non-apply write.
pub fn user_agent() -> String {
    format!(
        "dronectl/{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn check_context(
    env: &str,
    pinned: Option<&str>,
    context: &str,
    allow: bool,
) -> anyhow::Result<()> {
    match pinned {
        Some(p) if p != context && !allow => Err(UsageError(format!(
            "environment `{env}` pins the kubeconfig context `{p}`, but the context in use is `{context}`; pass --yes to use `{context}` anyway"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Everything needed to act on the app in a Kubernetes environment.
pub struct KubeTarget {
    pub manifest: Arc<Manifest>,
    pub kenv: KubeEnv,
    pub platform: KubePlatform,
    pub store: KubeStore,
    pub context: String,
}

impl KubeTarget {
    /// Connects to a resolved Kubernetes environment's cluster; the target acts on the
    /// environment's effective manifest.
    pub async fn connect(
        environment: &Environment,
        opts: &ConnectOptions,
    ) -> anyhow::Result<KubeTarget> {
        let manifest = environment.manifest.clone();
        let kenv = KubeEnv::new(environment, opts.namespace.as_deref());
        let pinned = environment.kubernetes().and_then(|k| k.context.clone());
        let env = environment.name.as_str();
        // A kubeconfig that cannot be loaded is a configuration error (exit 2).
        let (client, context) = client_for(opts, env, pinned.as_deref()).await?;
        let mut target = Self::with_client(manifest, kenv, client);
        target.context = context;
        Ok(target)
    }

    /// A target over an existing client (tests, embedding).
    pub fn with_client(manifest: Manifest, kenv: KubeEnv, client: Client) -> KubeTarget {
        let manifest = Arc::new(manifest);
        let store = KubeStore::new(client.clone(), &kenv.namespace, &kenv.app);
        let platform = KubePlatform::new(client, kenv.clone(), manifest.clone());
        KubeTarget {
            manifest,
            kenv,
            platform,
            store,
            context: String::new(),
        }
    }

    pub fn engine<'a>(
        &'a self,
        reporter: &'a dyn Reporter,
        timing: Timing,
    ) -> Engine<'a, KubePlatform, KubeStore> {
        let mut engine = Engine::new(&self.platform, &self.store, reporter);
        engine.timing = timing;
        engine
    }

    /// The revision of `service` running `image`, shown as `version`.
    pub fn revision(&self, service: &str, image: &str, version: &str) -> anyhow::Result<Revision> {
        let s = self
            .manifest
            .services
            .get(service)
            .ok_or_else(|| UsageError(format!("no service `{service}` in dronectl.yaml")))?;
        Ok(Revision::new(
            image,
            version,
            s.value.replicas,
            render::service_env(&self.manifest, service),
        )
        .autoscaled(Bounds::of(s.value.autoscale.as_ref())))
    }
}

/// Checks that the namespace exists, creating it with `create` (as `helm --create-namespace`
/// does; returns whether it did). A missing namespace otherwise is a usage error that says
/// how to create it. A client that may not read namespaces goes on (the server will say what
/// it refuses).
pub async fn ensure_namespace(
    target: &KubeTarget,
    create: bool,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let ns = &target.kenv.namespace;
    let api: Api<Namespace> = Api::all(target.platform.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(_)) => Ok(false),
        Ok(None) if create && !dry_run => {
            let object = serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": render::FIELD_MANAGER}},
            });
            api.patch(
                ns,
                &PatchParams::apply(render::FIELD_MANAGER),
                &Patch::Apply(&object),
            )
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot create namespace `{ns}`"))
            })?;
            Ok(true)
        }
        Ok(None) => {
            let how = if create {
                "a server-side dry run cannot show objects in a namespace that does not exist; --create-namespace creates it on a real deploy".to_string()
            } else {
                format!("create it (`kubectl create namespace {ns}`), or pass --create-namespace (DRONECTL_CREATE_NAMESPACE=true) to let dronectl create it")
            };
            Err(UsageError(format!(
                "namespace `{ns}` does not exist in the cluster (context `{}`): {how}",
                target.context
            ))
            .into())
        }
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read namespace `{ns}`"))),
    }
}
