//! Deploying to the local Docker engine: one service, or every service of an artifacts
//! file (a CI pipeline's hand-off), each built first unless told which image to run.

use std::path::Path;

use crate::exit::{ExitCode, UsageError};
use crate::local::LocalTarget;
use crate::rollout::ops::{self, DriveReport};
use crate::rollout::Plan;

use super::{image_version, DeployReport, DeployReporter, DeployRequest, Deployed, ImageSource};

pub(super) async fn deploy(
    request: &DeployRequest,
    target: &LocalTarget,
    dir: &Path,
    reporter: &dyn DeployReporter,
) -> anyhow::Result<DeployReport> {
    let services: Vec<String> = match (&request.services[..], &request.images) {
        ([], ImageSource::Artifacts(file)) => super::artifacts(file)?
            .into_iter()
            .map(|a| a.service)
            .collect(),
        ([], _) => anyhow::bail!(UsageError(
            "name the service to deploy, or pass --artifacts FILE to deploy every service it lists (`dronectl up` brings up the whole app)".into()
        )),
        (named, _) => named.to_vec(),
    };
    if matches!(request.images, ImageSource::Image(_)) && services.len() != 1 {
        anyhow::bail!(UsageError("--image needs exactly one service".into()));
    }
    let mut reports = Vec::new();
    for service in &services {
        let report = deploy_service(target, service, request, dir, reporter).await?;
        let done = report.exit_code() == ExitCode::Success;
        reports.push(report);
        if !done {
            break; // the rest stay as they are; the pipeline fails here
        }
    }
    let code = request
        .wait
        .code(reports.last().map_or(ExitCode::Success, |r| r.exit_code()));
    let deployed = if reports.len() == 1 && !request.services.is_empty() {
        Deployed::Service(Box::new(reports.remove(0)))
    } else {
        Deployed::Services(reports)
    };
    Ok(DeployReport { code, deployed })
}

/// One service's rollout on the local target.
async fn deploy_service(
    target: &LocalTarget,
    service: &str,
    request: &DeployRequest,
    dir: &Path,
    reporter: &dyn DeployReporter,
) -> anyhow::Result<DriveReport> {
    let m = &target.manifest.manifest;
    if !m.services.contains_key(service) {
        anyhow::bail!(UsageError(format!(
            "no service `{service}` in dronectl.yaml"
        )));
    }
    let (image, version) = match &request.images {
        ImageSource::Image(image) => (image.clone(), image_version(image)),
        ImageSource::Artifacts(file) => {
            let a = super::artifacts(file)?
                .into_iter()
                .find(|a| a.service == service)
                .ok_or_else(|| {
                    UsageError(format!("{} has no image for `{service}`", file.display()))
                })?;
            (a.reference(), a.tag.clone())
        }
        ImageSource::Build | ImageSource::Tag(_) => {
            let options = crate::build::BuildOptions {
                app_dir: dir.to_path_buf(),
                services: vec![service.to_string()],
                env: request.env.clone(),
                ..Default::default()
            };
            let outcome = crate::build::build(&options, reporter).await?;
            let built = outcome
                .images
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("the build produced no image"))?;
            (format!("{}:{}", built.image, built.tag), built.tag)
        }
    };
    let revision = target.revision(service, &image, &version).await?;
    let plan = Plan::select(
        m,
        service,
        target.strategy.as_deref(),
        request.strategy.name.as_deref(),
        request.strategy.kind,
        revision.replicas,
    )?;
    let engine = target.engine(reporter, request.wait.timing);
    let report = ops::deploy(&engine, service, revision, plan, request.wait.timeout).await?;
    request.wait.retire(&engine, &report).await?;
    Ok(report)
}
