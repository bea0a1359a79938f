//! The Docker Engine API client: connecting, negotiating the API version, and turning
//! "no engine" and "engine too old" into errors that say what to do.

use std::time::Duration;

use bollard::Docker;

/// The oldest Engine API dronectl works with (Docker 19.03).
pub const MIN_API_VERSION: (usize, usize) = (1, 40);

/// How long one Engine API request may take (image loads and pushes stream for a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// Errors talking to the Docker engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach a Docker engine at {endpoint}: {source}\n  Start Docker (`sudo service docker start`, or Docker Desktop), or point DOCKER_HOST at a running engine, then try again.")]
    NoEngine {
        endpoint: String,
        source: bollard::errors::Error,
    },
    #[error("the Docker engine at {endpoint} speaks Engine API {found}, but dronectl needs {}.{} or newer (Docker 19.03+)\n  Upgrade Docker on this machine, or point DOCKER_HOST at a newer engine.", MIN_API_VERSION.0, MIN_API_VERSION.1)]
    ApiTooOld { endpoint: String, found: String },
    #[error("Docker engine: {0}")]
    Api(#[from] bollard::errors::Error),
}

impl crate::exit::ExitStatus for DockerError {
    /// No engine / engine too old: the operation could not run (1); the message says what
    /// to do.
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Failed
    }
}

/// The engine address dronectl uses: `DOCKER_HOST`, else the local socket.
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Connects to the engine named by `DOCKER_HOST` (or the local socket), negotiates the API
/// version down to what the engine speaks, and refuses engines older than
/// [`MIN_API_VERSION`].
pub async fn connect() -> Result<Docker, DockerError> {
    let endpoint = endpoint();
    let docker = Docker::connect_with_defaults()
        .map_err(|source| DockerError::NoEngine {
            endpoint: endpoint.clone(),
            source,
        })?
        .with_timeout(REQUEST_TIMEOUT);
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|source| match source {
            bollard::errors::Error::APIVersionParseError {} => DockerError::ApiTooOld {
                endpoint: endpoint.clone(),
                found: "an unknown version".into(),
            },
            source => DockerError::NoEngine {
                endpoint: endpoint.clone(),
                source,
            },
        })?;
    let version = docker.client_version();
    if (version.major_version, version.minor_version) < MIN_API_VERSION {
        return Err(DockerError::ApiTooOld {
            endpoint,
            found: format!("{}.{}", version.major_version, version.minor_version),
        });
    }
    Ok(docker)
}

/// Whether an API error is the engine's "no such image/container" (404).
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
