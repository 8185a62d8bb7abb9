//! The Caches page: the tenant's cache-mount heads, its usage against its
//! budgets, and pruning. Listing and pruning go through the code
//! `rbk cache ls|prune` uses (`rbk_coordinator::cache_prune`), scoped to
//! the session's tenant; the prune form carries the session's CSRF token.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, Redirect};
use rbk_coordinator::cache_prune::{PruneFilter, list, prune};
use rbk_coordinator::state::{GenerationSize, now_ms, query};

use crate::error::DashboardError;
use crate::pages::{Frame, render};
use crate::app::App;
use crate::charts::{Bar, bar_chart};
use crate::views::{bytes, utc};

/// One head (a cache id's slot) as the page shows it.
pub struct CacheRow {
    pub id: String,
    /// The id as one path segment (`/` and the rest percent-encoded).
    pub href: String,
    pub slot: u32,
    pub generation: u64,
    pub size: String,
    pub updated: String,
    pub snapshot: String,
    /// Kept generations (the merge bases), oldest first.
    pub generations: Vec<(u64, String)>,
    /// The sizes of its last generations as an SVG bar chart.
    pub sizes_chart: String,
}

/// The chart of a head's last generations' sizes.
fn sizes_chart(id: &str, sizes: &[GenerationSize], single: bool) -> String {
    let bars: Vec<Bar> = sizes
        .iter()
        .map(|g| Bar {
            label: if single { g.generation.to_string() } else { String::new() },
            segments: vec![("size", g.bytes)],
            tooltip: format!("generation {}: {} (committed {})", g.generation, bytes(g.bytes), utc(g.at_ms)),
        })
        .collect();
    let title = format!("Sizes of the last {} generations of cache {id}", sizes.len());
    if single { bar_chart(&title, "gen-sizes", &bars, 480, 120) } else { bar_chart(&title, "gen-sizes", &bars, 160, 28) }
}

/// The chart of the tenant's (or one cache's) hits and misses over time.
fn hit_miss_chart(buckets: &[crate::cache_stats::Bucket], of: &str) -> String {
    let bars: Vec<Bar> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| Bar {
            label: if i % 3 == 0 { utc(b.start_ms)[11..16].to_owned() } else { String::new() },
            segments: vec![("hit", b.hits), ("miss", b.misses)],
            tooltip: format!("from {}: {} hit(s), {} miss(es)", utc(b.start_ms), b.hits, b.misses),
        })
        .collect();
    let (hits, misses) = buckets.iter().fold((0, 0), |a, b| (a.0 + b.hits, a.1 + b.misses));
    bar_chart(&format!("Action cache of {of} over time: {hits} hits, {misses} misses"), "hit-miss", &bars, 480, 120)
}

#[derive(Template)]
#[template(path = "caches.html")]
struct CachesPage {
    frame: Frame,
    rows: Vec<CacheRow>,
    heads_used: String,
    heads_budget: String,
    /// Used share of the heads budget, 0..=100 (0 without a budget).
    heads_percent: u64,
    actions: u64,
    actions_used: String,
    actions_budget: String,
    csrf: String,
    notice: String,
    /// One cache's page (`/caches/{id}`) rather than all.
    single: Option<String>,
    /// Hits and misses over time (of the steps mounting `single`'s cache).
    hit_miss: String,
    hits: u64,
    misses: u64,
}

#[derive(serde::Deserialize, Default)]
pub struct Notice {
    #[serde(default)]
    pruned: Option<usize>,
    #[serde(default)]
    id: String,
}

fn page(app: &App, headers: &HeaderMap, only: Option<String>, notice: String) -> Result<Html<String>, DashboardError> {
    let s = app.sessions.check(headers)?;
    let ns = s.tenant()?;
    let listing = list(&*app.coordinator.state, app.coordinator.eviction(), ns);
    let rows: Vec<CacheRow> = listing
        .heads
        .into_iter()
        .filter(|(k, _)| only.as_ref().is_none_or(|id| &k.cache_id == id))
        .map(|(k, h)| CacheRow {
            href: format!("/caches/{}", path_segment(&k.cache_id)),
            sizes_chart: sizes_chart(&k.cache_id, &h.sizes, only.is_some()),
            id: k.cache_id,
            slot: k.slot,
            generation: h.generation,
            size: bytes(h.total_bytes),
            updated: utc(h.updated_ms),
            snapshot: h.snapshot.to_string(),
            generations: h.history.iter().map(|(g, d)| (*g, d.to_string())).collect(),
        })
        .collect();
    if let Some(id) = &only
        && rows.is_empty()
    {
        return Err(DashboardError::NotFound(format!("cache {id} not found")));
    }
    let buckets = query(&*app.coordinator.state, |m| crate::cache_stats::hit_miss(m, ns, only.as_deref(), now_ms()));
    let (hits, misses) = buckets.iter().fold((0, 0), |a, b| (a.0 + b.hits, a.1 + b.misses));
    let hit_miss = hit_miss_chart(&buckets, only.as_deref().map_or("your steps", |_| "the steps mounting this cache"));
    let budget = |b: Option<u64>| b.map_or_else(|| "no budget".to_owned(), bytes);
    let percent = listing.budget.heads_bytes.filter(|b| *b > 0).map_or(0, |b| (listing.usage.heads_bytes.saturating_mul(100) / b).min(100));
    render(
        "caches",
        &CachesPage {
            frame: Frame::of(&s, "caches"),
            rows,
            heads_used: bytes(listing.usage.heads_bytes),
            heads_budget: budget(listing.budget.heads_bytes),
            heads_percent: percent,
            actions: listing.usage.actions,
            actions_used: bytes(listing.usage.actions_bytes),
            actions_budget: budget(listing.budget.actions_bytes),
            csrf: s.csrf.clone(),
            notice,
            single: only,
            hit_miss,
            hits,
            misses,
        },
    )
}

/// `GET /caches`: every head of the tenant.
pub async fn caches(State(app): State<App>, headers: HeaderMap, Query(n): Query<Notice>) -> Result<Html<String>, DashboardError> {
    let notice = match n.pruned {
        Some(0) => format!("Nothing pruned: {} is in use by a running step, or already gone.", n.id),
        Some(k) => format!("Pruned {k} head(s) of {}.", n.id),
        None => String::new(),
    };
    page(&app, &headers, None, notice)
}

/// `GET /caches/{id}`: one cache id of the tenant (404 for another's).
pub async fn cache(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Html<String>, DashboardError> {
    page(&app, &headers, Some(id), String::new())
}

#[derive(serde::Deserialize)]
pub struct PruneForm {
    csrf: String,
    id: String,
}

/// `POST /caches/prune`: forgets the tenant's cache `id` (every slot not
/// in use), as `rbk cache prune --id ID` does.
pub async fn prune_cache(State(app): State<App>, headers: HeaderMap, Form(form): Form<PruneForm>) -> Result<Redirect, DashboardError> {
    let s = app.sessions.check(&headers)?;
    if !s.csrf_matches(&form.csrf) {
        return Err(DashboardError::Forbidden("the form's CSRF token does not match this session: reload the page and try again".into()));
    }
    let ns = s.tenant()?;
    if form.id.is_empty() {
        return Err(DashboardError::BadRequest("prune: the form names no cache id".into()));
    }
    let filter = PruneFilter { ids: vec![form.id.clone()], unused_for_ms: 0 };
    let dropped = prune(&*app.coordinator.state, ns, &filter, now_ms()).await.map_err(|e| DashboardError::Unavailable(e.to_string()))?;
    tracing::info!(tenant = %ns, cache = %form.id, heads = dropped.len(), "dashboard: cache pruned");
    Ok(Redirect::to(&format!("/caches?pruned={}&id={}", dropped.len(), path_segment(&form.id))))
}

/// `s` percent-encoded but for unreserved characters: one URL path
/// segment or query value (cache ids contain `/`).
pub fn path_segment(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
