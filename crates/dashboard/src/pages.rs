//! The HTML pages (askama templates in `templates/`) and the fragments
//! the pages' scripts fetch to refresh themselves.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use rbk_coordinator::state::{now_ms, query};

use crate::error::DashboardError;
use crate::app::App;
use crate::session::{Role, Session};
use crate::views::{BuildFilter, BuildRow, BuildView, build_rows, build_view};

/// Renders a template, or says which page failed.
pub fn render<T: Template>(page: &'static str, t: &T) -> Result<Html<String>, DashboardError> {
    t.render().map(Html).map_err(|e| DashboardError::Render { page, message: e.to_string() })
}

/// What every page's frame shows: who is signed in, which page is open.
pub struct Frame {
    pub who: String,
    pub operator: bool,
    pub current: &'static str,
}

impl Frame {
    pub fn of(s: &Session, current: &'static str) -> Self {
        match &s.role {
            Role::Tenant(ns) => Self { who: format!("tenant {ns}"), operator: false, current },
            Role::Operator => Self { who: "operator".into(), operator: true, current },
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: String,
}

pub async fn login_form() -> Result<Html<String>, DashboardError> {
    render("login", &LoginPage { error: String::new() })
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: the token for a session cookie; back to the form with
/// the reason when it is refused.
pub async fn login(State(app): State<App>, Form(form): Form<LoginForm>) -> Result<Response, DashboardError> {
    match app.sessions.sign_in(&form.token) {
        Ok((cookie, session)) => {
            let to = if session.role == Role::Operator { "/workers" } else { "/builds" };
            Ok(([(header::SET_COOKIE, crate::session::set_cookie(&cookie, app.options.secure_cookies))], Redirect::to(to)).into_response())
        }
        Err(reason) => {
            let page = render("login", &LoginPage { error: format!("Sign-in refused: {reason}.") })?;
            Ok((axum::http::StatusCode::UNAUTHORIZED, page).into_response())
        }
    }
}

pub async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    app.sessions.sign_out(&headers);
    ([(header::SET_COOKIE, crate::session::clear_cookie(app.options.secure_cookies))], Redirect::to("/login")).into_response()
}

#[derive(Template)]
#[template(path = "builds.html")]
struct BuildsPage {
    frame: Frame,
    filter: BuildFilter,
    rows: Vec<BuildRow>,
    statuses: Vec<(&'static str, bool)>,
}

#[derive(Template)]
#[template(path = "build_rows.html")]
struct BuildRows {
    rows: Vec<BuildRow>,
}

/// The status filter's choices, the chosen one marked.
fn statuses(filter: &BuildFilter) -> Vec<(&'static str, bool)> {
    ["running", "succeeded", "failed", "cancelled"].into_iter().map(|s| (s, filter.status == s)).collect()
}

fn rows_for(app: &App, ns: &str, filter: &BuildFilter) -> Vec<BuildRow> {
    let history = app.coordinator.scheduler.events().history();
    query(&*app.coordinator.state, |m| build_rows(m, history, ns, filter, now_ms()))
}

/// `GET /builds`: the tenant's builds, newest first.
pub async fn builds(State(app): State<App>, headers: HeaderMap, Query(filter): Query<BuildFilter>) -> Result<Html<String>, DashboardError> {
    let s = app.sessions.check(&headers)?;
    let rows = rows_for(&app, s.tenant()?, &filter);
    render("builds", &BuildsPage { frame: Frame::of(&s, "builds"), statuses: statuses(&filter), filter, rows })
}

/// `GET /builds/rows`: the table's rows alone (the page polls it).
pub async fn build_rows_fragment(State(app): State<App>, headers: HeaderMap, Query(filter): Query<BuildFilter>) -> Result<Html<String>, DashboardError> {
    let s = app.sessions.check(&headers)?;
    render("build rows", &BuildRows { rows: rows_for(&app, s.tenant()?, &filter) })
}

/// The whole builds page for `namespace` rendered once (the benchmark of
/// `rbk-bench dashboard` measures this).
pub fn render_builds_page(m: &rbk_coordinator::state::StateMachine, history: &rbk_coordinator::build_history::BuildHistory, namespace: &str) -> Result<String, DashboardError> {
    let filter = BuildFilter::default();
    let rows = build_rows(m, history, namespace, &filter, now_ms());
    let frame = Frame { who: format!("tenant {namespace}"), operator: false, current: "builds" };
    Ok(render("builds", &BuildsPage { frame, statuses: statuses(&filter), filter, rows })?.0)
}

#[derive(Template)]
#[template(path = "build.html")]
struct BuildPage {
    frame: Frame,
    build: BuildView,
    data: String,
}

/// The tenant's build, or "not found" (another tenant's too).
pub fn tenant_build(app: &App, ns: &str, id: &str) -> Result<BuildView, DashboardError> {
    let history = app.coordinator.scheduler.events().history();
    query(&*app.coordinator.state, |m| build_view(m, history, ns, id)).ok_or_else(|| DashboardError::NotFound(format!("build {id} not found")))
}

/// `GET /builds/{id}`: one build's timeline and logs.
pub async fn build(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Html<String>, DashboardError> {
    let s = app.sessions.check(&headers)?;
    let build = tenant_build(&app, s.tenant()?, &id)?;
    let data = crate::html::embed_json(&build);
    render("build", &BuildPage { frame: Frame::of(&s, "builds"), build, data })
}

/// One worker as the Workers page shows it.
pub struct WorkerRow {
    pub id: String,
    pub platform: String,
    pub labels: String,
    pub busy: usize,
    pub max_parallel: u32,
    pub running: Vec<String>,
    pub last_seen: String,
    pub draining: bool,
    pub layers_held: usize,
    pub snapshots_held: usize,
    pub tenants: String,
    /// Its disk against its limits: operators only (`None` for a tenant,
    /// or before the worker said).
    pub disk: Option<DiskRow>,
}

/// A worker's disk use as the Workers page shows it.
pub struct DiskRow {
    pub used: String,
    pub limit: String,
    /// `used` as a share of `limit`, 0..=100.
    pub percent: u64,
    pub layers: String,
    pub layer_limit: String,
    pub layer_percent: u64,
    pub caches: String,
    pub blobs: String,
}

impl DiskRow {
    fn of(d: &rbk_coordinator::model::DiskUse) -> Self {
        let percent = |used: u64, limit: u64| if limit == 0 { 0 } else { (used.saturating_mul(100) / limit).min(100) };
        use crate::views::bytes;
        DiskRow {
            used: bytes(d.used_bytes),
            limit: bytes(d.limit_bytes),
            percent: percent(d.used_bytes, d.limit_bytes),
            layers: bytes(d.layer_bytes),
            layer_limit: bytes(d.layer_limit_bytes),
            layer_percent: percent(d.layer_bytes, d.layer_limit_bytes),
            caches: bytes(d.cache_bytes),
            blobs: bytes(d.blob_bytes),
        }
    }
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    frame: Frame,
    workers: Vec<WorkerRow>,
}

/// `GET /workers`: the connected workers; a tenant sees those that serve
/// it and only its own running steps, the operator all of them.
pub async fn workers(State(app): State<App>, headers: HeaderMap) -> Result<Html<String>, DashboardError> {
    let s = app.sessions.check(&headers)?;
    let tenant = match &s.role {
        Role::Tenant(ns) => Some(ns.clone()),
        Role::Operator => None,
    };
    let workers = app
        .coordinator
        .scheduler
        .workers()
        .await
        .into_iter()
        .filter(|w| tenant.as_ref().is_none_or(|t| w.tenants.contains(t)))
        .map(|w| {
            let running: Vec<String> = w
                .running
                .iter()
                .filter(|r| tenant.as_ref().is_none_or(|t| &r.namespace == t))
                .map(|r| format!("{} ({})", r.name, r.build_ids.join(", ")))
                .collect();
            WorkerRow {
                busy: w.running.len(),
                id: w.id,
                platform: if w.platform.is_empty() { "any".into() } else { w.platform },
                labels: w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                max_parallel: w.max_parallel,
                running,
                last_seen: format!("{} ago", crate::views::duration(w.last_seen_ago_ms)),
                draining: w.draining,
                layers_held: w.layers_held,
                snapshots_held: w.snapshots_held,
                tenants: if tenant.is_some() { String::new() } else { w.tenants.iter().cloned().collect::<Vec<_>>().join(", ") },
                disk: if tenant.is_some() { None } else { w.disk.as_ref().map(DiskRow::of) },
            }
        })
        .collect();
    render("workers", &WorkersPage { frame: Frame::of(&s, "workers"), workers })
}

pub async fn index() -> Redirect {
    Redirect::to("/builds")
}

pub async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], include_str!("../static/app.js"))
}

pub async fn app_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], include_str!("../static/app.css"))
}
