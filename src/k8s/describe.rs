//! API errors as a person reads them.

/// An API error as a person reads it: the server's message, its reason and HTTP code, and the
/// object it names — instead of kube's `ApiError: … (Status { … })` dump of the whole struct.
pub fn describe_status(s: &kube::core::Status) -> String {
    // kube-rs's own reason when the body was not a Status (e.g. the mux's plain-text 404).
    if s.reason == "Failed to parse error data" {
        let what = if s.code == 404 {
            ": this API is not served by the cluster (not installed?)"
        } else {
            ""
        };
        return format!(
            "the server answered HTTP {} `{}`, not an API response{what}",
            s.code,
            s.message.trim()
        );
    }
    let mut extra = vec![];
    if !s.reason.is_empty() {
        extra.push(format!("reason {}", s.reason));
    }
    extra.push(format!("HTTP {}", s.code));
    if let Some(d) = s.details.as_ref().filter(|d| !d.name.is_empty()) {
        let resource = if d.group.is_empty() {
            d.kind.clone()
        } else {
            format!("{}.{}", d.kind, d.group)
        };
        extra.push(format!("object {resource} {}", d.name));
    }
    format!("{} ({})", s.message, extra.join(", "))
}

/// [`describe_status`] for a kube error; other errors as they display.
pub fn describe_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => describe_status(s),
        other => other.to_string(),
    }
}

/// A readable text for one cause of an error chain when it is a kube API error (for the
/// printer, which shows every cause on its own line).
pub fn api_error_text(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    match cause.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => Some(describe_status(s)),
        _ => None,
    }
}

/// An error chain on one line, kube API errors described by [`describe_status`].
pub fn describe_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| api_error_text(c).unwrap_or_else(|| c.to_string()))
        .collect::<Vec<_>>()
        .join(": ")
}
