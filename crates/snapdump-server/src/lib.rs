//! # snapdump-server: dumps over an authenticated HTTP API
//!
//! `snapdump serve` runs this: the routes of dotnet-monitor's `/dump` family, on tokio and
//! axum, over the [`snapdump`] engine. Its users keep their scripts:
//!
//! | route | does |
//! |---|---|
//! | `GET /processes` | the processes that can be dumped (`isDefault` marks the only one) |
//! | `GET /process?pid=&uid=&name=` | one process |
//! | `GET /dump?pid=&uid=&name=&type=&format=&egressProvider=&tags=` | 200 with the dump streamed, or 202 and an upload to an egress provider |
//! | `GET /operations?tags=`, `GET/DELETE /operations/{id}` | what dumps are doing; cancel one |
//! | `GET /collectionrules`, `GET /collectionrules/{name}` | the config's collection rules ([`rules`]) |
//! | `GET /info`, `GET /metrics`, `GET /openapi.json` | about the server |
//! | `GET /livez`, `GET /readyz` | health, without a key |
//!
//! Every other route needs `Authorization: Bearer <key>` ([`auth`]); errors are RFC 7807
//! problems ([`problem`]); each dump runs on one blocking thread (ptrace requests must all
//! come from the thread that attached), its bytes flowing through a small channel into the
//! response body or a multipart upload ([`dump`], [`egress`]), so memory stays flat whatever the
//! dump's size. More dumps than the limit at once get 429.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot`; [`server`] binds the listeners (TLS through rustls), prints
//! what the operator needs and shuts down gracefully.
//!
//! Collection rules ([`rules`]) run `snapdump watch`'s triggers from the config for as long as
//! the server runs, each dump going to an egress provider as an operation of its own.
//!
//! `uid` selects a .NET process by its runtime instance cookie ([`uid`]).
//!
//! `type=Triage` is a redacted Mini ([`snapdump::DumpRequest::redact`]): no command-line
//! arguments but argv[0], no environment.

pub mod auth;
pub mod config;
pub mod dump;
pub mod egress;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod problem;
pub mod routes;
pub mod rules;
pub mod server;
pub mod uid;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use snapdump::snapshot::guard::GuardianCommand;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::egress::EgressProvider;
use crate::metrics::Metrics;
use crate::operations::Operations;
use crate::problem::Problem;
use crate::rules::CollectionRules;
use crate::uid::RuntimeIds;

/// What every handler shares: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub auth: Arc<Auth>,
    pub operations: Arc<Operations>,
    pub egress: Arc<BTreeMap<String, Arc<EgressProvider>>>,
    /// One permit per dump allowed at once.
    pub dump_permits: Arc<Semaphore>,
    pub max_concurrent_dumps: usize,
    pub metrics: Arc<Metrics>,
    /// The config's collection rules (none by default; [`AppState::with_rules`]).
    pub rules: Arc<CollectionRules>,
    /// The guardian that reaps a snapshot's clone inside the target if the server is killed
    /// mid-dump (`snapdump serve` gives `snapdump __snapshot-guard`; see
    /// [`snapdump::snapshot::guard`]). Passed to every dump the server takes. `None`: no
    /// guardian, and a SIGKILLed server may leave the clone's zombie in the target until the
    /// target exits.
    pub snapshot_guardian: Option<GuardianCommand>,
    /// .NET runtime instance cookies, for `uid`.
    pub runtime_ids: Arc<RuntimeIds>,
}

impl AppState {
    /// A state with `auth`, the given egress providers and a limit of concurrent dumps
    /// (at least 1).
    pub fn new(auth: Auth, egress: Vec<EgressProvider>, max_concurrent_dumps: usize) -> AppState {
        let max_concurrent_dumps = max_concurrent_dumps.max(1);
        AppState {
            auth: Arc::new(auth),
            operations: Arc::new(Operations::default()),
            egress: Arc::new(
                egress
                    .into_iter()
                    .map(|p| (p.name.clone(), Arc::new(p)))
                    .collect(),
            ),
            dump_permits: Arc::new(Semaphore::new(max_concurrent_dumps)),
            max_concurrent_dumps,
            metrics: Arc::new(Metrics::default()),
            rules: Arc::default(),
            snapshot_guardian: None,
            runtime_ids: Arc::default(),
        }
    }

    /// The same state with these collection rules (started by [`server::Server::run`], or by
    /// [`CollectionRules::start`]).
    pub fn with_rules(mut self, rules: Vec<rules::Rule>) -> AppState {
        self.rules = Arc::new(CollectionRules::new(rules));
        self
    }

    /// The same state with a snapshot guardian.
    pub fn with_snapshot_guardian(mut self, guardian: Option<GuardianCommand>) -> AppState {
        self.snapshot_guardian = guardian;
        self
    }

    /// Dumps under way now.
    pub fn dumps_in_progress(&self) -> usize {
        self.max_concurrent_dumps - self.dump_permits.available_permits()
    }
}

/// The whole API. `/livez` and `/readyz` answer without a key; everything else needs one.
pub fn app(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/processes", get(routes::get_processes))
        .route("/process", get(routes::get_process))
        .route("/dump", get(dump::get_dump))
        .route("/operations", get(routes::get_operations))
        .route(
            "/operations/{id}",
            get(routes::get_operation).delete(routes::delete_operation),
        )
        .route("/collectionrules", get(routes::get_collection_rules))
        .route("/collectionrules/{name}", get(routes::get_collection_rule))
        .route("/info", get(routes::get_info))
        .route("/metrics", get(routes::get_metrics))
        .route("/openapi.json", get(openapi::get_openapi))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .merge(authenticated)
        .route("/livez", get(routes::get_livez))
        .route("/readyz", get(routes::get_readyz))
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found(request: Request) -> Problem {
    Problem::not_found(
        "no_such_route",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

/// One log line per request: method, path, status, time. Never headers (they hold keys).
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await.into_response();
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}
