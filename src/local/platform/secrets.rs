//! The secrets of a replica: their values from the local store, and the tar archive that
//! puts them at `/run/secrets/<NAME>` owned by the image's user before the container starts.

use anyhow::Context as _;

use super::LocalPlatform;
use crate::rollout::Revision;

impl LocalPlatform {
    /// The values of the secrets `revision` runs with, from the store (the current value of
    /// each: an older revision brought back by `undo` gets the value set last).
    pub(super) async fn secret_files(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<Vec<(String, crate::secrets::SecretValue)>> {
        if revision.secrets.is_empty() {
            return Ok(Vec::new());
        }
        let store = self
            .secrets
            .as_ref()
            .context("no secret store for the local target")?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for name in revision.secrets.keys() {
            match store.get(service, name)? {
                Some(v) => out.push((name.clone(), v)),
                None => missing.push(crate::secrets::Missing {
                    service: service.to_string(),
                    name: name.clone(),
                    env: self.env.clone(),
                    detail: None,
                }),
            }
        }
        if !missing.is_empty() {
            return Err(crate::secrets::MissingSecrets(missing).into());
        }
        Ok(out)
    }

    /// The numeric `uid:gid` an image runs as (`0:0` for root or a user given by name).
    pub(super) async fn image_user(&self, image: &str) -> (u64, u64, bool) {
        let user = self
            .docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.user)
            .unwrap_or_default();
        parse_user(&user)
    }
}

/// `uid[:gid]` of an image's `USER`: numeric ids, and whether they were numeric (a user
/// named in the image cannot be resolved without its `/etc/passwd`).
fn parse_user(user: &str) -> (u64, u64, bool) {
    if user.is_empty() {
        return (0, 0, true);
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    match (uid.parse(), gid.parse()) {
        (Ok(u), Ok(g)) => (u, g, true),
        (Ok(u), Err(_)) => (u, u, true),
        _ => (0, 0, false),
    }
}

/// A tar archive with one file per secret at `/run/secrets/<NAME>`, owned by the image's
/// user and readable by it only (mode 0400; 0444 when the user is named, not numbered).
pub(super) fn secrets_archive(
    secrets: &[(String, crate::secrets::SecretValue)],
    (uid, gid, numeric): (u64, u64, bool),
) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64, owner: (u64, u64)| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_size(size);
        h
    };
    let dir = crate::secrets::MOUNT_DIR.trim_start_matches('/');
    let mut run = header(tar::EntryType::Directory, 0o755, 0, (0, 0));
    tar.append_data(&mut run, "run", std::io::empty())?;
    let mut h = header(tar::EntryType::Directory, 0o755, 0, (0, 0));
    tar.append_data(&mut h, dir, std::io::empty())?;
    for (name, value) in secrets {
        let bytes = value.expose();
        let mode = if numeric { 0o400 } else { 0o444 };
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            bytes.len() as u64,
            (uid, gid),
        );
        tar.append_data(&mut h, format!("{dir}/{name}"), bytes)?;
    }
    Ok(tar.into_inner()?)
}
